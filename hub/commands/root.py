"""Options of ``radshare-hub`` itself: ``--config`` (the hub's one config file)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["CONFIG_ENV", "root_options"]

CONFIG_ENV = "RADSHARE_HUB_CONFIG"


def root_options(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        envvar=CONFIG_ENV,
        help="hub config YAML, e.g. /etc/radshare/hub.yaml: the defaults of every verb "
        f"(registry root, TLS folder, address; also ${CONFIG_ENV})",
    ),
) -> None:
    """radshare hub: serve the registry, synthesize archives, pool, train and evaluate."""
    if config is None:
        return
    from hub.config import hub_option_defaults, load_hub_config
    from shared.cli_config import default_map_for

    cfg = load_hub_config(config)
    ctx.obj = {"config_path": config, "config": cfg}
    ctx.default_map = default_map_for(ctx.command, *hub_option_defaults(cfg, config))
