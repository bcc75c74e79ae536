"""``radshare-hub config``: check the hub's config file and show what each verb takes from it."""

from __future__ import annotations

from hub.commands.root import CONFIG_ENV
from shared.cli_config import config_check_verb

__all__ = ["config_check"]

config_check = config_check_verb("radshare-hub", CONFIG_ENV, "/etc/radshare/hub.yaml")
