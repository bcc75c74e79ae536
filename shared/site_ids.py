"""The one site-id rule: what ``keygen``, ``certs``, ``register-site`` and every model accept.

A site id is 1 to 63 characters: lower-case letters, digits, ``-`` and ``_``, starting
with a letter or a digit (``a``, ``site-b``, ``charite_2``). It names files
(``site-<id>.ed25519``, ``site-<id>.crt``), certificate identities (``site:<id>``) and
keyring entries, so nothing that could walk a path (``..``, ``/``), hide in a
terminal (spaces, control characters) or differ only in case may pass.
"""

from __future__ import annotations

import re

from shared.errors import ConfigError

__all__ = ["SITE_ID_PATTERN", "SITE_ID_RULE", "check_site_id", "is_site_id"]

SITE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SITE_ID_RULE = "1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit"
_SITE_ID = re.compile(SITE_ID_PATTERN)


def is_site_id(value: str) -> bool:
    """Whether ``value`` follows the site-id rule (``fullmatch``: no trailing newline)."""
    return _SITE_ID.fullmatch(value) is not None


def check_site_id(value: str, *, where: str = "site id") -> str:
    """``value`` if it is a valid site id; ConfigError naming ``where``, the value and the rule."""
    if not is_site_id(value):
        raise ConfigError(f"{where}: {value!r} is not a valid site id ({SITE_ID_RULE})")
    return value
