"""``radshare-hub certs``: the consortium CA, the hub's certificate, one per identity."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["certs"]


def certs(
    out: Path = typer.Option(Path("hub-data/tls"), help="folder for ca.*, server.*, <identity>.*"),
    identity: list[str] = typer.Option(
        [], "--identity", "-i", help="site:<id>, operator[:<name>] or auditor[:<name>]; repeatable"
    ),
    server_host: list[str] = typer.Option(
        ["localhost", "127.0.0.1"], help="host names / IPs the hub is reached at; repeatable"
    ),
) -> None:
    """Make (or extend) a consortium's TLS material; existing files are kept; example:

    radshare-hub certs --out hub-data/tls -i site:a -i site:b -i operator -i auditor

    Give each site ca.crt + site-<id>.crt + site-<id>.key; keep ca.key offline.
    """
    from hub.certs import ensure_consortium_certs

    written = ensure_consortium_certs(out, identity, server_hosts=server_host)
    for path in written:
        typer.echo(f"wrote {path}")
    if not written:
        typer.echo(f"{out}: everything asked for already exists")
