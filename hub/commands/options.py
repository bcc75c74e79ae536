"""Options many ``radshare-hub`` verbs share: the hub's address and the certificates to reach it."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["HUB", "TLS_DIR"]

HUB = typer.Option("127.0.0.1:50051", "--hub", help="hub address host:port")
TLS_DIR = typer.Option(
    Path("hub-data/tls"), "--tls-dir", help="folder with ca.crt and <identity>.crt/.key"
)
