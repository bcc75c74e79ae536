"""``radshare-site config``: check the site's config file and show what each verb takes from it."""

from __future__ import annotations

from shared.cli_config import config_check_verb
from site_node.commands.root import CONFIG_ENV

__all__ = ["config_check"]

config_check = config_check_verb("radshare-site", CONFIG_ENV, "/etc/radshare/site.yaml")
