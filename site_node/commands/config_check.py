"""``radshare-site config``: check the site's config file and show what each verb takes from it."""

from __future__ import annotations

from shared.cli_config import config_check_verb

__all__ = ["config_check"]

config_check = config_check_verb("radshare-site", "RADSHARE_SITE_CONFIG", "/etc/radshare/site.yaml")
