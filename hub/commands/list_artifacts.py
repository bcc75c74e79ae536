"""``radshare-hub list``: published generators (or other artifacts) at a hub."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["list_artifacts"]


def list_artifacts(
    kind: str = typer.Option("generator", help="generator | labeller | classifier | all"),
    site: str | None = typer.Option(None, help="only this site's artifacts"),
    hub: str = typer.Option("127.0.0.1:50051", help="hub address host:port"),
    tls_dir: Path = typer.Option(
        Path("hub-data/tls"), help="folder with ca.crt and <identity>.crt/.key"
    ),
    identity: str = typer.Option("operator", help="whose certificate to use (operator / auditor)"),
) -> None:
    """List what the hub holds; example:

    radshare-hub list --kind generator --site a --tls-dir certs --identity operator
    """
    from shared.artifacts.records import ArtifactKind
    from shared.errors import ConfigError
    from shared.hub_client import ClientTLS, HubClient

    valid = [k.value for k in ArtifactKind]
    if kind != "all" and kind not in valid:
        raise ConfigError(f"--kind: {kind!r} is not one of {[*valid, 'all']}")
    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        found = client.list(None if kind == "all" else ArtifactKind(kind), site)
    for s in found:
        typer.echo(
            f"{s.artifact_id}  {s.kind:<10}  site {s.site_id:<8}  "
            f"{s.size_bytes:>12} B  {s.published_at}"
        )
    typer.echo(f"{len(found)} artifact(s)")
