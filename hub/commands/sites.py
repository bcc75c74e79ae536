"""``radshare-hub sites``: every site's signing key, certificates and state."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

__all__ = ["sites"]


def sites(
    config: Path | None = typer.Option(None, help="hub config YAML (site_keys_dir, tls_dir, crl)"),
    root: Path | None = typer.Option(None, help="registry folder; default hub-data"),
    tls_dir: Path | None = typer.Option(None, help="the hub's TLS folder; default <root>/tls"),
    site_keys_dir: Path | None = typer.Option(
        None, help="registered <site>.pub keys; default <root>/site_keys"
    ),
    ca_dir: Path | None = typer.Option(
        None, help="the CA folder (its issued/ ledger), read besides the TLS folder"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List sites: key fingerprint, certificates (serial, not-after) and state.

    Example:

    \b
      radshare-hub sites --root hub-data

    States: active, revoked, cert expired, no cert, key missing (see hub.sites).
    """
    from hub.config import load_hub_config
    from hub.sites import site_statuses

    cfg = load_hub_config(config, root=root, tls_dir=tls_dir, site_keys_dir=site_keys_dir)
    folders = [cfg.tls_folder, *([ca_dir] if ca_dir else [])]
    ca_crt = cfg.tls_folder / "ca.crt"
    if ca_dir is not None and not ca_crt.is_file():
        ca_crt = ca_dir / "ca.crt"
    statuses = site_statuses(cfg.site_keys_folder, folders, cfg.crl_path, ca_crt)
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in statuses], indent=2))
        return
    typer.echo(f"{'SITE':<16} {'STATE':<22} {'KEY':<18} {'CERT SERIAL':<40} {'NOT AFTER':<11} CERT")
    for status in statuses:
        key = f"{status.key_id[:16]}…" if status.key_id else "-"
        rows = status.certificates or (None,)
        for i, cert in enumerate(rows):
            head = f"{status.site_id:<16} {status.state:<22} {key:<18}" if i == 0 else " " * 58
            if cert is None:
                typer.echo(f"{head} {'-':<40} {'-':<11} -")
            else:
                state = f"revoked {cert.revoked_at[:10]}" if cert.revoked_at else cert.state
                typer.echo(f"{head} {cert.serial_hex:<40} {cert.not_after[:10]:<11} {state}")
    if not statuses:
        typer.echo(f"no sites: no keys in {cfg.site_keys_folder}, no site certificates")
