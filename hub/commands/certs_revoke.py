"""``radshare-hub certs revoke``: put certificates on the consortium's CRL (CA folder alone)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

__all__ = ["revoke"]


def revoke(
    identity: list[str] = typer.Option(
        [], "--identity", "-i", help="revoke every unexpired certificate of it; repeatable"
    ),
    serial: list[str] = typer.Option([], help="revoke this serial (hex, as `sites` prints it)"),
    ca_dir: Path = typer.Option(
        Path("hub-data/tls"), help="folder with ca.crt, ca.key and issued/ (the CA's ledger)"
    ),
    tls_dir: Path | None = typer.Option(
        None, help="the hub's TLS folder: also searched for certificates (issued/, *.crt)"
    ),
    crl: Path | None = typer.Option(
        None, help="CRL to extend and write; default <ca-dir>/crl.pem (the hub's default)"
    ),
    reason: str = typer.Option(
        "unspecified",
        help="unspecified, key_compromise, affiliation_changed, superseded, cessation_of_operation",
    ),
) -> None:
    """Revoke certificates: the hub refuses them on their next call, no restart.

    Example:

    \b
      radshare-hub certs revoke --identity site:a --ca-dir /media/ca-usb --reason key_compromise

    The CRL is signed with ca.key; if --ca-dir is not the hub's TLS folder, copy
    crl.pem there (or point the hub's crl_file at it). List serials with `radshare-hub sites`.
    """
    from hub.ca import (
        RevocationReason,
        issued_certificates,
        normalise_identity,
        parse_serial,
    )
    from hub.ca import revoke as revoke_serials
    from shared.errors import ConfigError

    try:
        why = RevocationReason(reason)
    except ValueError:
        valid = ", ".join(r.value for r in RevocationReason)
        raise ConfigError(f"--reason {reason!r}: expected one of {valid}") from None
    serials = [parse_serial(s) for s in serial]
    now = dt.datetime.now(dt.UTC)
    folders = [ca_dir, *([tls_dir] if tls_dir else [])]
    issued = [c for folder in folders for c in issued_certificates(folder)]
    for name in identity:
        wanted = normalise_identity(name)
        mine = [c.serial for c in issued if c.identity == wanted and not c.expired(now)]
        if not mine:
            raise ConfigError(
                f"--identity {name!r}: no unexpired certificate of {wanted!r} in "
                f"{' or '.join(map(str, folders))} (issued/, *.crt); give --serial"
            )
        serials += mine
    if not serials:
        raise ConfigError("nothing to revoke: give --identity or --serial")
    path, added = revoke_serials(ca_dir, serials, crl_path=crl, reason=why, now=now)
    for number in added:
        typer.echo(f"revoked serial {number:x}")
    skipped = len(set(serials)) - len(added)
    typer.echo(f"wrote {path} ({len(added)} added, {skipped} already revoked)")
    if tls_dir is not None and path.resolve() != (tls_dir / "crl.pem").resolve():
        typer.echo(f"copy it to the hub: cp {path} {tls_dir / 'crl.pem'} (read on change)")
