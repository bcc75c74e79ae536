"""Bundle folders on disk, whatever their kind: write signed bundles, verify them.

A bundle is a folder holding ``manifest.json`` (signed, see ``signing``) and
exactly the files its manifest lists; a pulled bundle may also hold
``signer.pub``, the site key the hub said it verified with: informative only,
never used to verify (keys come from the consortium: ``shared.artifacts.keyring``).
Tensors travel only as safetensors, whose header this module parses itself
before any library touches the file: a pickle, a zip (``torch.save``) or a malformed header is an
``UnsafeArtifactError``, and nothing is ever unpickled.

Each kind's module (``shared.artifacts.generator``, ``.labeller``,
``.classifier``) adds its manifest model, its tensor check and its loader;
``shared.artifacts.kinds`` is the table this module looks a kind up in.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared import __version__
from shared.artifacts.keyring import TrustedKey, resolve_signer_key
from shared.artifacts.manifest import MANIFEST_FILE, BundleManifest, parse_manifest
from shared.artifacts.signing import (
    SIGNATURE_FIELD,
    artifact_id_of,
    parse_json_object,
    sign_body,
    verify_body,
)
from shared.errors import ArtifactError, IntegrityError, UnsafeArtifactError
from shared.fileio import sha256_bytes, sha256_file

__all__ = [
    "SIGNER_KEY_FILE",
    "SignedManifest",
    "TensorCheck",
    "TensorInfo",
    "check_bundle_file",
    "check_state_dict",
    "check_tensors",
    "inspect_safetensors",
    "read_bundle",
    "read_verified",
    "state_dict_spec",
    "write_bundle",
]

#: The signer's public key, written beside a bundle pulled from the hub.
SIGNER_KEY_FILE = "signer.pub"

_MAX_HEADER_BYTES = 100 * 2**20
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as a safetensors header describes it."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SignedManifest:
    """A manifest as read from JSON: the raw object (what was signed) and its validated model."""

    raw: dict[str, Any]
    model: BundleManifest

    @property
    def artifact_id(self) -> str:
        """Content-hash id: sha256 of the canonical body (covers every file's sha256)."""
        return artifact_id_of(self.raw)

    def to_json_bytes(self) -> bytes:
        """The manifest.json bytes (sorted keys, indented, trailing newline)."""
        return (json.dumps(self.raw, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str = MANIFEST_FILE) -> SignedManifest:
        """Parse and validate manifest JSON bytes (the signature is not checked here)."""
        raw = parse_json_object(data, where=where)
        return cls(raw=raw, model=parse_manifest(raw, where=where))

    def verify_signature(self, public_key: Ed25519PublicKey, *, where: str = MANIFEST_FILE) -> None:
        """SignatureError unless the signature verifies with ``public_key``."""
        verify_body(self.raw, public_key, where=where)


def _unsafe_hint(prefix: bytes) -> str:
    if prefix[:1] == b"\x80":
        return " (it starts like a pickle)"
    if prefix[:2] == b"PK":
        return " (it is a zip archive, e.g. torch.save)"
    return ""


def _tensor_info(name: str, entry: Any, where: str) -> tuple[TensorInfo, int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise UnsafeArtifactError(f"{where}: tensor {name!r} has a malformed header entry")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPE_BYTES:
        raise UnsafeArtifactError(f"{where}: tensor {name!r} has unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise UnsafeArtifactError(f"{where}: tensor {name!r} has a bad shape {shape!r}")
    if not (
        isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
    ):
        raise UnsafeArtifactError(f"{where}: tensor {name!r} has bad data_offsets {offsets!r}")
    numel = 1
    for dim in shape:
        numel *= dim
    begin, end = offsets
    if end - begin != numel * _DTYPE_BYTES[dtype]:
        raise UnsafeArtifactError(
            f"{where}: tensor {name!r} spans {end - begin} bytes, not {shape}"
        )
    return TensorInfo(dtype, tuple(shape)), begin, end


def inspect_safetensors(handle: BinaryIO, size_bytes: int, *, where: str) -> dict[str, TensorInfo]:
    """Parse and check a safetensors header; UnsafeArtifactError for anything else.

    Reads only the header from ``handle`` (positioned at the file's start). Checks
    the header length, the JSON, every dtype/shape/offset, and that the tensors
    tile the data section exactly (no hidden bytes).
    """
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise UnsafeArtifactError(f"{where}: {size_bytes} bytes is too short for safetensors")
    header_len = int.from_bytes(prefix, "little")
    if header_len > min(size_bytes - 8, _MAX_HEADER_BYTES):
        raise UnsafeArtifactError(f"{where}: not a safetensors file{_unsafe_hint(prefix)}")
    header_bytes = handle.read(header_len)
    if not header_bytes.startswith(b"{"):
        raise UnsafeArtifactError(f"{where}: not a safetensors file{_unsafe_hint(prefix)}")
    try:
        header = parse_json_object(header_bytes, where=where)
    except ArtifactError as error:
        raise UnsafeArtifactError(f"not a safetensors file: {error}") from error
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise UnsafeArtifactError(f"{where}: __metadata__ must map strings to strings")
    tensors, spans = {}, []
    for name, entry in header.items():
        tensors[name], begin, end = _tensor_info(name, entry, where)
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise UnsafeArtifactError(f"{where}: tensor data has a gap or overlap at byte {begin}")
        position = end
    if position != size_bytes - 8 - header_len:
        raise UnsafeArtifactError(
            f"{where}: tensors cover {position} bytes but the data section has "
            f"{size_bytes - 8 - header_len}"
        )
    return tensors


#: ``check(model, file_name, tensors)``: ArtifactError unless the tensors are the kind's.
TensorCheck = Callable[[BundleManifest, str, Mapping[str, TensorInfo]], None]


def state_dict_spec(build: Callable[[], Any]) -> dict[str, TensorInfo]:
    """Every tensor of ``build().state_dict()``, the module built on the meta device (no memory)."""
    import torch

    dtypes = {
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
    }
    with torch.device("meta"):
        module = build()
    return {
        name: TensorInfo(dtypes.get(t.dtype, str(t.dtype)), tuple(t.shape))
        for name, t in module.state_dict().items()
    }


_PRIVATE_HINTS = ("discriminator", "optim", "critic", "D.", "data", "image", "exp_avg", "real")


def check_state_dict(
    expected: Mapping[str, TensorInfo], tensors: Mapping[str, TensorInfo], *, where: str, what: str
) -> None:
    """ArtifactError unless ``tensors`` are exactly ``expected`` (``what``: e.g. "G_ema's").

    An extra tensor that looks like a discriminator, optimiser or data is named as such.
    """
    extra = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if extra:
        private = [k for k in extra if any(h.lower() in k.lower() for h in _PRIVATE_HINTS)]
        kind = "discriminator/optimiser/data-like " if private else ""
        raise ArtifactError(
            f"{where}: {len(extra)} {kind}tensor(s) that are not {what}: {(private or extra)[:5]}"
        )
    if missing:
        raise ArtifactError(f"{where}: missing {what} tensor(s) {missing[:5]}")
    for name, spec in expected.items():
        if tensors[name] != spec:
            raise ArtifactError(f"{where}: tensor {name!r} is {tensors[name]}, expected {spec}")


def check_tensors(model: BundleManifest, file_name: str, tensors: Mapping[str, TensorInfo]) -> None:
    """Run the tensor check of ``model.kind`` (``shared.artifacts.kinds``)."""
    # kinds imports every kind module, and they import this one: look the table up on use.
    from shared.artifacts.kinds import KINDS

    KINDS[model.kind].check_tensors(model, file_name, tensors)


def check_bundle_file(
    model: BundleManifest, name: str, handle: BinaryIO, size_bytes: int, *, where: str
) -> None:
    """Check one bundle file's content by type: safetensors header + tensors, or strict JSON.

    ``handle`` is positioned at the file's start. Any other type is an UnsafeArtifactError.
    """
    if name.endswith(".safetensors"):
        check_tensors(model, where, inspect_safetensors(handle, size_bytes, where=where))
    elif name.endswith(".json"):
        parse_json_object(handle.read(), where=where)
    else:
        raise UnsafeArtifactError(f"{where}: only .safetensors and .json files may be in a bundle")


def _file_entries(files: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    entries = {}
    for name, path in files.items():
        sha256, size = sha256_file(path)
        entries[name] = {"sha256": sha256, "size_bytes": size}
    return entries


def write_bundle(
    out_dir: Path,
    fields: Mapping[str, Any],
    files: Mapping[str, Path],
    private_key: Ed25519PrivateKey,
) -> SignedManifest:
    """Write a new signed bundle folder atomically; ``out_dir`` must not exist.

    ``fields`` are the manifest's fields except ``files`` and ``signature``
    (``created`` and ``radshare_version`` default to now and this version);
    ``files`` maps bundle file names to the files to copy in. The manifest is
    validated with its kind's model, safetensors files are inspected and
    tensor-checked, then everything lands in ``out_dir`` by one rename.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ArtifactError(f"{out_dir}: already exists; a bundle is never overwritten")
    body = {"created": datetime.now(UTC).isoformat(), "radshare_version": __version__, **fields}
    body["files"] = _file_entries(files)
    body.pop(SIGNATURE_FIELD, None)
    model = parse_manifest(body, where=f"{out_dir}/{MANIFEST_FILE}")
    body = model.model_dump(mode="json", exclude={SIGNATURE_FIELD})
    signed = SignedManifest(
        raw={**body, SIGNATURE_FIELD: sign_body(body, private_key).model_dump()}, model=model
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        for name, source in files.items():
            shutil.copyfile(source, tmp / name)
        _verify_files(tmp, signed)
        (tmp / MANIFEST_FILE).write_bytes(signed.to_json_bytes())
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return signed


def _check_file(path: Path, name: str, model: BundleManifest) -> bytes:
    """Read one bundle file; check size, sha256 and (for safetensors) header and tensors."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; the manifest lists {name!r}")
    data = path.read_bytes()
    entry = model.files[name]
    digest = sha256_bytes(data)
    if len(data) != entry.size_bytes or digest != entry.sha256:
        raise IntegrityError(
            f"{path}: sha256 {digest[:16]}… ({len(data)} bytes) does not "
            f"match the manifest's {entry.sha256[:16]}… ({entry.size_bytes} bytes)"
        )
    check_bundle_file(model, name, io.BytesIO(data), len(data), where=str(path))
    return data


def _verify_files(bundle_dir: Path, signed: SignedManifest) -> dict[str, bytes]:
    allowed = {MANIFEST_FILE, SIGNER_KEY_FILE, *signed.model.files}
    unexpected = sorted(p.name for p in bundle_dir.iterdir() if p.name not in allowed)
    if unexpected:
        raise ArtifactError(f"{bundle_dir}: files not listed in the manifest: {unexpected[:5]}")
    return {name: _check_file(bundle_dir / name, name, signed.model) for name in signed.model.files}


def read_verified(bundle_dir: Path, trusted: TrustedKey) -> tuple[SignedManifest, dict[str, bytes]]:
    """``read_bundle``, also returning every listed file's bytes as verified (load from these)."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path}: missing; not a bundle folder")
    signed = SignedManifest.from_json(manifest_path.read_bytes(), where=str(manifest_path))
    key = resolve_signer_key(trusted, signed.model.site_id)
    signed.verify_signature(key, where=f"{manifest_path} (site {signed.model.site_id!r})")
    return signed, _verify_files(bundle_dir, signed)


def read_bundle(bundle_dir: Path, trusted: TrustedKey) -> SignedManifest:
    """Verify a bundle folder: manifest model, signature, every file's sha256 and tensors.

    ``trusted`` is a keyring (``ConsortiumKeyring``, the hub's keyring), in which
    the signer is looked up by the manifest's ``site_id``, or one explicit key
    (object, PEM file or PEM bytes). A ``signer.pub`` inside the folder is never
    used. Raises ArtifactError, IntegrityError, SignatureError (also for a site
    the keyring does not know) or UnsafeArtifactError.
    """
    return read_verified(bundle_dir, trusted)[0]
