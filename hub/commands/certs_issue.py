"""``radshare-hub certs issue``: one identity's key and certificate, from the CA folder alone."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["issue"]


def issue(
    identity: str = typer.Option(
        ...,
        "--identity",
        "-i",
        help="site:<id> (or site-<id>), operator[:<name>], auditor[:<name>]",
    ),
    ca_dir: Path = typer.Option(
        Path("hub-data/tls"), help="folder with the consortium CA's ca.crt and ca.key"
    ),
    out: Path | None = typer.Option(
        None, help="folder for <identity>.crt/.key (+ ca.crt); default: --ca-dir"
    ),
    renew: bool = typer.Option(False, help="replace an existing certificate and key in --out"),
    days: int = typer.Option(825, min=1, max=3650, help="validity in days"),
) -> None:
    """Issue (or renew) one identity's certificate with only ca.crt + ca.key.

    Example:

    \b
      radshare-hub certs issue -i site:c --ca-dir /media/ca-usb --out /tmp/site-c

    Hand site-c.crt, site-c.key and ca.crt to site c. Renewing (--renew) leaves the
    old certificate valid until it expires; revoke it with `certs revoke --serial`.
    Every certificate issued is kept in <ca-dir>/issued/ (for revoke and `sites`).
    """
    from hub.ca import issue_identity

    crt, issued = issue_identity(ca_dir, identity, out or ca_dir, renew=renew, days=days)
    typer.echo(
        f"wrote {crt} (+ .key): {issued.identity}, serial {issued.serial:x}, "
        f"valid until {issued.not_after.date().isoformat()}"
    )
