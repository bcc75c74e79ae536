"""``radshare-hub health``: are the hub's registry (mTLS) and SuperLink serving?"""

from __future__ import annotations

from pathlib import Path

import typer

from hub.commands.options import HUB, TLS_DIR

__all__ = ["health"]

REGISTRY_SERVICE = "radshare.hub.v1.RadshareHub"


def health(
    hub: str = HUB,
    tls_dir: Path = TLS_DIR,
    identity: str = typer.Option("operator", help="whose certificate to use"),
    superlink_health: str | None = typer.Option(
        None, help="the SuperLink's --health-server-address too, e.g. 127.0.0.1:9098"
    ),
) -> None:
    """Print each service's gRPC health; exit 0 only when all are SERVING.

    The registry answers the standard gRPC health service over mTLS (the container's
    HEALTHCHECK runs this verb); the SuperLink answers on its plain loopback health port.
    Example:

    \b
      radshare-hub --config /etc/radshare/hub.yaml health --superlink-health 127.0.0.1:9098
    """
    from shared.health import check_health
    from shared.hub_client import ClientTLS

    credentials = ClientTLS.from_dir(tls_dir, identity).credentials()
    states = {f"registry {hub}": check_health(hub, credentials, REGISTRY_SERVICE)}
    if superlink_health:
        states[f"superlink {superlink_health}"] = check_health(superlink_health)
    for name, status in states.items():
        typer.echo(f"{name}: {status}")
    raise typer.Exit(0 if all(s == "SERVING" for s in states.values()) else 1)
