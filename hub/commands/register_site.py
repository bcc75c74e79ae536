"""``radshare-hub register-site``: register a site's Ed25519 public key (operator, at the hub)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register_site"]


def register_site(
    site: str = typer.Argument(..., help="the site's id"),
    public_key: Path = typer.Option(..., help="the site's .pub file from `radshare-site keygen`"),
    config: Path | None = typer.Option(None, help="hub config YAML (for site_keys_dir)"),
    root: Path | None = typer.Option(None, help="registry folder; default hub-data"),
    replace: bool = typer.Option(False, help="replace a different key already registered"),
) -> None:
    """Trust this key for manifests of site SITE (read on every publish; no restart).

    Example:

    \b
      radshare-hub register-site a --public-key site-a.ed25519.pub
    """
    from hub.config import load_hub_config
    from hub.registry.keyring import DirectoryKeyring
    from shared.site_ids import check_site_id

    check_site_id(site, where="SITE")  # the one site-id rule, before any file is read
    cfg = load_hub_config(config, root=root)
    keyring = DirectoryKeyring(cfg.site_keys_folder)
    fingerprint = keyring.register(site, public_key.read_bytes(), replace=replace)
    typer.echo(f"site {site}: key {fingerprint} registered in {keyring.folder}")
