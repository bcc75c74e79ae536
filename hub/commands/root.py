"""Options of ``radshare-hub`` itself: ``--config`` (the hub's one config file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shared.cli_config import OptionDefaults, root_options_callback

if TYPE_CHECKING:
    from hub.config import HubConfig

__all__ = ["CONFIG_ENV", "root_options"]

CONFIG_ENV = "RADSHARE_HUB_CONFIG"


def _load(path: Path) -> tuple[HubConfig, OptionDefaults]:
    """The hub config at ``path`` and the verb defaults it gives (imported only when used)."""
    from hub.config import hub_option_defaults, load_hub_config

    cfg = load_hub_config(path)
    return cfg, hub_option_defaults(cfg, path)


root_options = root_options_callback(
    doc="radshare hub: serve the registry, synthesize archives, pool, train and evaluate.",
    env=CONFIG_ENV,
    config_help="hub config YAML, e.g. /etc/radshare/hub.yaml: the defaults of every verb "
    f"(registry root, TLS folder, address; also ${CONFIG_ENV})",
    load=_load,
)
