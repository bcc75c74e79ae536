"""Ed25519 site keys, canonical JSON and manifest signatures (no torch, no pickle).

A manifest is signed over its *canonical body*: the manifest's JSON object
without its ``signature`` field, serialised with sorted keys, compact
separators, ASCII escapes and no NaN/Infinity. The canonical body is computed
from the JSON as received, not from a re-dumped model, so a manifest written
by an older radshare still verifies after a model gains a defaulted field.
The artifact id is the sha256 of the same canonical body: it covers every
file's sha256, so it is a content hash of the whole bundle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ArtifactError, ConfigError, SignatureError

__all__ = [
    "SIGNATURE_FIELD",
    "Signature",
    "artifact_id_of",
    "canonical_json",
    "generate_signing_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_json_object",
    "public_key_pem",
    "sign_body",
    "verify_body",
    "write_private_key",
    "write_public_key",
]

#: The manifest field that holds the signature (excluded from the canonical body).
SIGNATURE_FIELD = "signature"


class Signature(BaseModel):
    """An Ed25519 signature over a canonical manifest body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the raw public key")
    value: str = Field(min_length=1, description="base64 of the 64-byte signature")


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` canonically: sorted keys, compact, ASCII, finite numbers only."""
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except ValueError as error:
        raise ArtifactError(f"cannot serialise canonically: {error}") from error
    return text.encode("ascii")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ArtifactError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ArtifactError(f"non-finite JSON number {name}")


def parse_json_object(data: bytes | str, *, where: str) -> dict[str, Any]:
    """Parse a JSON object strictly (no duplicate keys, no NaN); errors name ``where``."""
    try:
        obj = json.loads(
            data, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except ArtifactError as error:
        raise ArtifactError(f"{where}: {error}") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{where}: not valid JSON: {error}") from error
    except RecursionError:  # json recurses per level: deep nesting is bad input, not a crash
        raise ArtifactError(f"{where}: JSON nested too deeply to read") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _body(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in manifest.items() if key != SIGNATURE_FIELD}


def artifact_id_of(manifest: Mapping[str, Any]) -> str:
    """The content-hash id of a manifest: sha256 of its canonical body (signature excluded)."""
    return hashlib.sha256(canonical_json(_body(manifest))).hexdigest()


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 site signing key."""
    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte public key: names a key in manifests and logs."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` atomically to a path that must not exist yet."""
    if path.exists():
        raise ConfigError(f"{path}: already exists; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.link(tmp, path)  # fails if path appeared meanwhile: never overwrite
    finally:
        os.unlink(tmp)


def write_private_key(path: Path, private_key: Ed25519PrivateKey) -> None:
    """Write an unencrypted PKCS#8 PEM private key with mode 0600 (never overwrites)."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(Path(path), pem, 0o600)


def write_public_key(path: Path, public_key: Ed25519PublicKey) -> None:
    """Write the public key as PEM (never overwrites)."""
    _write_new(Path(path), public_key_pem(public_key), 0o644)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM); ConfigError naming the file otherwise."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{path}: cannot read an Ed25519 private key: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(source: Path | bytes, *, where: str | None = None) -> Ed25519PublicKey:
    """Read an Ed25519 public key from a PEM file or PEM bytes."""
    label = where or (str(source) if isinstance(source, Path) else "public key")
    try:
        pem = source.read_bytes() if isinstance(source, Path) else source
        key = serialization.load_pem_public_key(pem)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{label}: cannot read an Ed25519 public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{label}: expected an Ed25519 public key, got {type(key).__name__}")
    return key


def sign_body(manifest: Mapping[str, Any], private_key: Ed25519PrivateKey) -> Signature:
    """Sign the canonical body of ``manifest`` (its signature field, if any, is ignored)."""
    value = private_key.sign(canonical_json(_body(manifest)))
    return Signature(
        key_id=key_id(private_key.public_key()), value=base64.b64encode(value).decode()
    )


def verify_body(
    manifest: Mapping[str, Any], public_key: Ed25519PublicKey, *, where: str = "manifest"
) -> Signature:
    """Check ``manifest['signature']`` against ``public_key``; SignatureError otherwise."""
    raw = manifest.get(SIGNATURE_FIELD)
    if raw is None:
        raise SignatureError(f"{where}: field 'signature' is missing")
    try:
        signature = Signature.model_validate(raw)
        value = base64.b64decode(signature.value, validate=True)
    except (ValueError, TypeError) as error:
        raise SignatureError(f"{where}: field 'signature' is malformed: {error}") from error
    expected = key_id(public_key)
    if signature.key_id != expected:
        raise SignatureError(
            f"{where}: signature.key_id {signature.key_id[:16]}… is not the registered key "
            f"{expected[:16]}…"
        )
    try:
        public_key.verify(value, canonical_json(_body(manifest)))
    except InvalidSignature as error:
        raise SignatureError(f"{where}: Ed25519 signature does not verify") from error
    return signature
