"""``radshare-hub keyring export``: the consortium keyring file sites and operators trust."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["app", "export"]

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command("export")
def export(
    out: Path = typer.Option(..., help="new JSON file (never overwritten)"),
    config: Path | None = typer.Option(None, help="hub config YAML (for root and site_keys_dir)"),
    root: Path | None = typer.Option(None, help="the hub's root; default hub-data"),
) -> None:
    """Write every registered site key, and the hub's own key (id ``hub``), to one file.

    Hand the file out with each site's TLS material; sites and operators pass it as
    --keyring, and every signature is verified against it, never against a key that
    comes with a bundle. Example:

    \b
      radshare-hub keyring export --out consortium-keyring.json --root hub-data
    """
    from hub.config import load_hub_config
    from hub.trust import HubKeyring, export_keyring

    cfg = load_hub_config(config, root=root)
    keyring = export_keyring(HubKeyring.at_root(cfg.root, cfg.site_keys_folder), out)
    for site, fingerprint in keyring.fingerprints().items():
        typer.echo(f"  {site}: {fingerprint}")
    typer.echo(f"keyring of {len(keyring.site_ids)} key(s) written to {out}")
