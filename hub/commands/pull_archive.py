"""``radshare-hub pull-archive``: download a pooled archive over gRPC, resumable, checksummed."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.commands.options import HUB, TLS_DIR

__all__ = ["pull_archive"]


def pull_archive(
    archive_id: str = typer.Argument(..., help="archive id, or a unique prefix of 8+ hex digits"),
    out: Path = typer.Option(
        ..., help="new folder; an interrupted pull resumes from <out>.partial"
    ),
    hub: str = HUB,
    tls_dir: Path = TLS_DIR,
    identity: str = typer.Option("operator", help="whose certificate to use (operators only)"),
) -> None:
    """Pull an archive (every file checked against its manifest).

    Example:

    \b
      radshare-hub pull-archive 3f9a1c07 --out archives/pool-1 --tls-dir certs
    """
    from shared.hub_client import ClientTLS, HubClient

    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        folder = client.pull_archive(archive_id, out)
    typer.echo(f"pulled archive {archive_id} into {folder}")
