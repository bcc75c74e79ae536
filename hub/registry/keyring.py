"""The sites' registered Ed25519 public keys, against which the hub verifies manifests.

Registration: an operator runs ``radshare-hub register-site <id> --public-key
site.pub`` with the public key the site made with ``radshare-site keygen``
(handed over out of band, e.g. with the site's certificate request). The key
lands in ``<site_keys_dir>/<id>.pub``; it is read on every publish, so no
restart is needed. Replacing a different key needs ``--replace``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from shared.artifacts.signing import key_id, load_public_key, public_key_pem
from shared.errors import ConfigError, SignatureError
from shared.fileio import atomic_write_bytes
from shared.site_ids import SITE_ID_PATTERN

__all__ = ["DirectoryKeyring", "Keyring", "StaticKeyring"]

_SITE = re.compile(SITE_ID_PATTERN)  # the one site-id rule


class Keyring(Protocol):
    """Where the hub finds a site's public key."""

    def public_key_pem(self, site_id: str) -> bytes:
        """The PEM public key registered for ``site_id``; SignatureError if none."""
        ...


class StaticKeyring:
    """A fixed mapping site id → PEM (tests, embedded use)."""

    def __init__(self, keys: dict[str, bytes]):
        self._keys = dict(keys)

    def public_key_pem(self, site_id: str) -> bytes:
        try:
            return self._keys[site_id]
        except KeyError:
            raise SignatureError(f"no signing key registered for site {site_id!r}") from None


class DirectoryKeyring:
    """Keys as ``<folder>/<site_id>.pub`` PEM files."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _path(self, site_id: str) -> Path:
        if not _SITE.match(site_id):
            raise ConfigError(f"site id {site_id!r} is not valid (lower-case letters, digits, - _)")
        return self.folder / f"{site_id}.pub"

    def public_key_pem(self, site_id: str) -> bytes:
        path = self._path(site_id)
        if not path.is_file():
            raise SignatureError(
                f"no signing key registered for site {site_id!r} ({path} is missing; "
                "an operator registers it with "
                f"`radshare-hub register-site {site_id} --public-key …`)"
            )
        return path.read_bytes()

    def register(self, site_id: str, pem: bytes, *, replace: bool = False) -> str:
        """Store ``pem`` as the key of ``site_id``; returns its key id. Atomic write."""
        fingerprint = key_id(load_public_key(pem, where=f"public key of site {site_id!r}"))
        path = self._path(site_id)
        if path.is_file() and not replace:
            current = key_id(load_public_key(path))
            if current == fingerprint:
                return fingerprint
            raise ConfigError(
                f"{path}: site {site_id!r} already has key {current[:16]}…; pass replace=True "
                f"(--replace) to register {fingerprint[:16]}…"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, public_key_pem(load_public_key(pem)), mode=0o644)
        return fingerprint
