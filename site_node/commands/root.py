"""Options of ``radshare-site`` itself: ``--config`` (the site's one config file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shared.cli_config import OptionDefaults, root_options_callback

if TYPE_CHECKING:
    from site_node.config import SiteConfig

__all__ = ["CONFIG_ENV", "root_options"]

CONFIG_ENV = "RADSHARE_SITE_CONFIG"


def _load(path: Path) -> tuple[SiteConfig, OptionDefaults]:
    """The site config at ``path`` and the verb defaults it gives (imported only when used)."""
    from site_node.config import load_site_config, site_option_defaults

    cfg = load_site_config(path)
    return cfg, site_option_defaults(cfg)


root_options = root_options_callback(
    doc="radshare site node: ingest, train, sample, audit and publish inside the hospital.",
    env=CONFIG_ENV,
    config_help="site config YAML, e.g. /etc/radshare/site.yaml: the defaults of every verb "
    f"(also ${CONFIG_ENV})",
    load=_load,
)
