"""``radshare-site health``: is this site's Flower SuperNode up? (its local gRPC health port)."""

from __future__ import annotations

import typer

__all__ = ["health"]


def health(
    address: str = typer.Option(
        "127.0.0.1:9095",
        "--address",
        help="the SuperNode's --health-server-address (plain gRPC, loopback only)",
    ),
) -> None:
    """Print SERVING (exit 0) or the SuperNode's other state (exit 1).

    The SuperNode unit starts its health service on 127.0.0.1:9095
    (deployment/systemd/radshare-supernode@.service). Example:

    \b
      radshare-site health --address 127.0.0.1:9095
    """
    from shared.health import check_health

    status = check_health(address)
    typer.echo(f"supernode {address}: {status}")
    raise typer.Exit(0 if status == "SERVING" else 1)
