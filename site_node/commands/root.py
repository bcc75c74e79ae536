"""Options of ``radshare-site`` itself: ``--config`` (the site's one config file)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["CONFIG_ENV", "root_options"]

CONFIG_ENV = "RADSHARE_SITE_CONFIG"


def root_options(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        envvar=CONFIG_ENV,
        help="site config YAML, e.g. /etc/radshare/site.yaml: the defaults of every verb "
        f"(also ${CONFIG_ENV})",
    ),
) -> None:
    """radshare site node: ingest, train, sample, audit and publish inside the hospital."""
    if config is None:
        return
    from shared.cli_config import default_map_for
    from site_node.config import load_site_config, site_option_defaults

    cfg = load_site_config(config)
    ctx.obj = {"config_path": config, "config": cfg}
    ctx.default_map = default_map_for(ctx.command, *site_option_defaults(cfg))
