"""The consortium keyring: which Ed25519 key each site (and the hub) signs with.

A signed artifact is verified against a key the consortium distributed, found
by the manifest's ``site_id``, never against a key that travels with the
artifact (a pulled bundle's ``signer.pub`` is informative only). At the hub the
keys are its keyring folder (``hub.registry.keyring.DirectoryKeyring``); at a
site or on an operator's machine they are one JSON file that the operator
writes with ``radshare-hub keyring export --out consortium-keyring.json`` and
hands out with the TLS material::

    {"schema_version": 1,
     "keys": {"hub":    "-----BEGIN PUBLIC KEY-----\\n...",
              "site-a": "-----BEGIN PUBLIC KEY-----\\n..."}}

``hub`` (:data:`~shared.artifacts.manifest.HUB_SITE_ID`) is the key the hub
signs its own artifacts with (classifier bundles). No torch: the hub client
imports this module.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.artifacts.signing import key_id, load_public_key, parse_json_object, public_key_pem
from shared.errors import ArtifactError, ConfigError, SignatureError
from shared.fileio import atomic_write_text
from shared.validation import field_error

__all__ = [
    "KEYRING_SCHEMA_VERSION",
    "ConsortiumKeyring",
    "KeyringFile",
    "SignerKeys",
    "TrustedKey",
    "keyring_from_pems",
    "resolve_signer_key",
]

KEYRING_SCHEMA_VERSION = 1
_SITE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class SignerKeys(Protocol):
    """Where a verifier finds a signer's public key by site id (hub keyring, consortium file)."""

    def public_key_pem(self, site_id: str) -> bytes:
        """The PEM public key of ``site_id``; SignatureError naming the site if there is none."""
        ...


#: What a verifier may be given: a keyring (looked up by the manifest's site id), or one
#: explicit key (object, PEM file path or PEM bytes) for a signer the caller already pinned.
TrustedKey = SignerKeys | Ed25519PublicKey | Path | bytes


class KeyringFile(BaseModel):
    """The consortium keyring file: site id → PEM public key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = KEYRING_SCHEMA_VERSION
    keys: dict[str, str] = Field(description="site id → Ed25519 public key (PEM)")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != KEYRING_SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported ({KEYRING_SCHEMA_VERSION})")
        return value

    @field_validator("keys")
    @classmethod
    def _valid_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for site_id, pem in value.items():
            if not _SITE_ID.match(site_id):
                raise ValueError(
                    f"site id {site_id!r} is not valid (lower-case letters, digits, - _)"
                )
            try:
                load_public_key(pem.encode(), where=f"key of site {site_id!r}")
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return value


class ConsortiumKeyring:
    """Site id → Ed25519 public key, read from a keyring file (or built from keys)."""

    def __init__(self, keys: dict[str, bytes], *, source: str = "keyring"):
        self._keys = dict(keys)
        self.source = source

    @classmethod
    def load(cls, path: Path | str) -> ConsortiumKeyring:
        """Read and validate a keyring file; ConfigError naming the file and the field."""
        path = Path(path)
        try:
            raw = parse_json_object(path.read_bytes(), where=str(path))
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the consortium keyring: {error}") from error
        except ArtifactError as error:
            raise ConfigError(str(error)) from error
        try:
            model = KeyringFile.model_validate(raw)
        except ValidationError as error:
            raise ConfigError(field_error(error, path, whole="(keyring)")) from None
        return cls({k: v.encode() for k, v in model.keys.items()}, source=str(path))

    @property
    def site_ids(self) -> list[str]:
        """Every site id with a key, sorted."""
        return sorted(self._keys)

    def public_key_pem(self, site_id: str) -> bytes:
        """The PEM key of ``site_id``; SignatureError naming the site and the keyring file."""
        try:
            return self._keys[site_id]
        except KeyError:
            raise SignatureError(
                f"site {site_id!r} is not in the consortium keyring {self.source} "
                f"(it has: {', '.join(self.site_ids) or 'no keys'})"
            ) from None

    def public_key(self, site_id: str) -> Ed25519PublicKey:
        """The key of ``site_id`` as an object (see :meth:`public_key_pem`)."""
        return load_public_key(self.public_key_pem(site_id), where=f"{self.source}: {site_id}")

    def to_file_model(self) -> KeyringFile:
        """The keyring as its file model."""
        return KeyringFile(keys={k: v.decode() for k, v in sorted(self._keys.items())})

    def write(self, path: Path | str) -> None:
        """Write the keyring file atomically (ConfigError if it exists: never overwrite)."""
        path = Path(path)
        if path.exists():
            raise ConfigError(f"{path}: already exists; choose a new file for the keyring")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.to_file_model().model_dump_json(indent=2) + "\n")

    def fingerprints(self) -> dict[str, str]:
        """Site id → key id (sha256 of the raw key), for display."""
        return {site: key_id(self.public_key(site)) for site in self.site_ids}


def resolve_signer_key(trusted: TrustedKey, site_id: str) -> Ed25519PublicKey:
    """The key to verify a manifest of ``site_id`` with: looked up in a keyring, or the one given.

    Raises:
        SignatureError: the keyring has no key for ``site_id``.
        ConfigError: a PEM file or bytes that are not an Ed25519 public key.
    """
    if isinstance(trusted, Ed25519PublicKey):
        return trusted
    if isinstance(trusted, Path | bytes):
        return load_public_key(trusted)
    return load_public_key(trusted.public_key_pem(site_id), where=f"key of site {site_id!r}")


def keyring_from_pems(keys: dict[str, bytes], *, source: str) -> ConsortiumKeyring:
    """A keyring from PEM keys, each checked to be an Ed25519 public key (normalised PEM)."""
    return ConsortiumKeyring(
        {
            site: public_key_pem(load_public_key(pem, where=f"{source}: {site}"))
            for site, pem in keys.items()
        },
        source=source,
    )
