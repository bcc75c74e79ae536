"""``radshare-hub pull``: download a published bundle, verified, into a new folder."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["pull"]


def pull(
    artifact_id: str = typer.Argument(..., help="artifact id, or a unique prefix of 8+ hex digits"),
    out: Path | None = typer.Option(None, help="new bundle folder (default pulled/<id12>)"),
    hub: str = typer.Option("127.0.0.1:50051", help="hub address host:port"),
    tls_dir: Path = typer.Option(
        Path("hub-data/tls"), help="folder with ca.crt and <identity>.crt/.key"
    ),
    identity: str = typer.Option("operator", help="whose certificate to use (operators pull)"),
) -> None:
    """Pull a bundle (hashes and signature verified); example:

    radshare-hub pull 3f9a1c07 --out generators/site-a --tls-dir certs
    """
    from shared.hub_client import ClientTLS, HubClient

    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        folder = client.pull(artifact_id, out or Path("pulled") / artifact_id[:12])
    typer.echo(f"pulled {artifact_id} into {folder}")
