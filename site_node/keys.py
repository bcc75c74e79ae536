"""The site's Ed25519 signing key: made at the site, private key never leaves it.

``radshare-site keygen --site a --out keys`` writes ``keys/site-a.ed25519``
(mode 0600) and ``keys/site-a.ed25519.pub``; the site hands the ``.pub`` file
to the consortium operator, who registers it at the hub
(``radshare-hub register-site a --public-key site-a.ed25519.pub``). The hub
then accepts only manifests of site ``a`` signed by this key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.artifacts.signing import (
    generate_signing_key,
    key_id,
    load_private_key,
    write_private_key,
    write_public_key,
)
from shared.errors import ConfigError
from shared.site_ids import check_site_id

__all__ = ["SiteKeyPaths", "generate_site_key", "load_site_signing_key", "site_key_paths"]


@dataclass(frozen=True)
class SiteKeyPaths:
    """Where a site's key pair lives, and the key's id (sha256 of the raw public key)."""

    private_key: Path
    public_key: Path
    key_id: str = ""


def site_key_paths(folder: Path, site_id: str) -> SiteKeyPaths:
    """``<folder>/site-<id>.ed25519`` and ``<folder>/site-<id>.ed25519.pub``.

    ConfigError if ``site_id`` breaks the site-id rule (``shared.site_ids``).
    """
    check_site_id(site_id, where="--site")
    private = Path(folder) / f"site-{site_id}.ed25519"
    return SiteKeyPaths(private, private.with_name(private.name + ".pub"))


def generate_site_key(folder: Path, site_id: str) -> SiteKeyPaths:
    """Make a new key pair for ``site_id`` in ``folder``; never overwrites an existing key."""
    paths = site_key_paths(folder, site_id)
    for path in (paths.private_key, paths.public_key):
        if path.exists():
            raise ConfigError(f"{path}: already exists; a site key is never overwritten")
    key = generate_signing_key()
    write_private_key(paths.private_key, key)
    write_public_key(paths.public_key, key.public_key())
    return SiteKeyPaths(paths.private_key, paths.public_key, key_id(key.public_key()))


def load_site_signing_key(path: Path) -> Ed25519PrivateKey:
    """The site's private signing key; ConfigError if missing, unreadable or world-readable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no signing key (make one with `radshare-site keygen`)")
    if path.stat().st_mode & 0o077:
        raise ConfigError(
            f"{path}: private key is readable by others "
            f"(mode {path.stat().st_mode & 0o777:o}); chmod 600"
        )
    return load_private_key(path)
