"""Bundle folders on disk: write signed bundles, verify them, rebuild a generator.

A bundle is a folder holding ``manifest.json`` (signed, see ``signing``) and
exactly the files its manifest lists; a pulled bundle may also hold
``signer.pub``, the site key the hub verified it with. Tensors travel only as
safetensors, whose header this module parses itself before any library
touches the file: a pickle, a zip (``torch.save``) or a malformed header is an
``UnsafeArtifactError``, and nothing is ever unpickled.

Layout of a generator bundle::

    <bundle>/manifest.json            GeneratorManifest + Ed25519 signature
    <bundle>/generator.safetensors    G_ema's state dict, nothing else
"""

from __future__ import annotations

import hashlib
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
from shared.artifacts.manifest import (
    MANIFEST_FILE,
    ArtifactKind,
    BundleManifest,
    GeneratorManifest,
    parse_manifest,
)
from shared.artifacts.signing import (
    SIGNATURE_FIELD,
    artifact_id_of,
    load_public_key,
    parse_json_object,
    sign_body,
    verify_body,
)
from shared.errors import ArtifactError, IntegrityError, SignatureError, UnsafeArtifactError

__all__ = [
    "GENERATOR_FILE",
    "SIGNER_KEY_FILE",
    "SignedManifest",
    "TensorInfo",
    "check_bundle_file",
    "check_generator_tensors",
    "check_tensors",
    "generator_tensor_spec",
    "inspect_safetensors",
    "load_generator",
    "read_bundle",
    "register_tensor_check",
    "sha256_file",
    "write_bundle",
    "write_generator_bundle",
]

#: The weights file of a generator bundle.
GENERATOR_FILE = "generator.safetensors"

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


def sha256_file(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(2**20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


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


_TensorCheck = Callable[[BundleManifest, str, Mapping[str, TensorInfo]], None]
_TENSOR_CHECKS: dict[ArtifactKind, _TensorCheck] = {}


def register_tensor_check(kind: ArtifactKind) -> Callable[[_TensorCheck], _TensorCheck]:
    """Register the check of a kind's safetensors files (decorator)."""

    def register(check: _TensorCheck) -> _TensorCheck:
        _TENSOR_CHECKS[kind] = check
        return check

    return register


def check_tensors(model: BundleManifest, file_name: str, tensors: Mapping[str, TensorInfo]) -> None:
    """Run the tensor check registered for ``model.kind`` (none registered: accept)."""
    check = _TENSOR_CHECKS.get(model.kind)
    if check is not None:
        check(model, file_name, tensors)


def generator_tensor_spec(cfg: Any) -> dict[str, TensorInfo]:
    """Every tensor ``Generator(cfg).state_dict()`` holds, built on the meta device (no memory)."""
    import torch

    from shared.networks.generator import Generator

    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    with torch.device("meta"):
        G = Generator(cfg)
    return {
        name: TensorInfo(dtypes.get(t.dtype, str(t.dtype)), tuple(t.shape))
        for name, t in G.state_dict().items()
    }


_PRIVATE_HINTS = ("discriminator", "optim", "critic", "D.", "data", "image", "exp_avg", "real")


def check_generator_tensors(cfg: Any, tensors: Mapping[str, TensorInfo], *, where: str) -> None:
    """ArtifactError unless ``tensors`` are exactly G's state dict (no D, optimiser or data)."""
    expected = generator_tensor_spec(cfg)
    extra = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if extra:
        private = [k for k in extra if any(h.lower() in k.lower() for h in _PRIVATE_HINTS)]
        kind = "discriminator/optimiser/data-like " if private else ""
        raise ArtifactError(
            f"{where}: {len(extra)} {kind}tensor(s) that are not G_ema's: {(private or extra)[:5]}"
        )
    if missing:
        raise ArtifactError(f"{where}: missing G_ema tensor(s) {missing[:5]}")
    for name, spec in expected.items():
        if tensors[name] != spec:
            raise ArtifactError(f"{where}: tensor {name!r} is {tensors[name]}, expected {spec}")


@register_tensor_check(ArtifactKind.GENERATOR)
def _check_generator_bundle(
    model: BundleManifest, file_name: str, tensors: Mapping[str, TensorInfo]
) -> None:
    assert isinstance(model, GeneratorManifest)
    check_generator_tensors(model.generator_config, tensors, where=file_name)


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


def write_generator_bundle(
    out_dir: Path,
    state_dict: Mapping[str, Any],
    fields: Mapping[str, Any],
    private_key: Ed25519PrivateKey,
) -> SignedManifest:
    """Write a generator bundle from G_ema's ``state_dict`` and the manifest ``fields``.

    Refuses (ArtifactError) any tensor that is not in ``Generator(cfg).state_dict()``.
    """
    from safetensors.torch import save_file

    fields = {**fields, "kind": ArtifactKind.GENERATOR.value}
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(
        dir=out_dir.parent if out_dir.parent.exists() else None
    ) as tmp:
        weights = Path(tmp) / GENERATOR_FILE
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(weights), metadata={"format": "pt"})
        return write_bundle(out_dir, fields, {GENERATOR_FILE: weights}, private_key)


def _check_file(path: Path, name: str, model: BundleManifest) -> bytes:
    """Read one bundle file; check size, sha256 and (for safetensors) header and tensors."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; the manifest lists {name!r}")
    data = path.read_bytes()
    entry = model.files[name]
    if len(data) != entry.size_bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(
            f"{path}: sha256 {hashlib.sha256(data).hexdigest()[:16]}… ({len(data)} bytes) does not "
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


def _resolve_key(
    bundle_dir: Path, public_key: Ed25519PublicKey | Path | bytes | None
) -> Ed25519PublicKey:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key
    if public_key is not None:
        return load_public_key(public_key)
    signer = bundle_dir / SIGNER_KEY_FILE
    if not signer.is_file():
        raise SignatureError(
            f"{bundle_dir}: no public key given and no {SIGNER_KEY_FILE}; "
            "cannot verify the signature"
        )
    return load_public_key(signer)


def _read_verified(
    bundle_dir: Path, public_key: Ed25519PublicKey | Path | bytes | None
) -> tuple[SignedManifest, dict[str, bytes]]:
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path}: missing; not a bundle folder")
    signed = SignedManifest.from_json(manifest_path.read_bytes(), where=str(manifest_path))
    signed.verify_signature(_resolve_key(bundle_dir, public_key), where=str(manifest_path))
    return signed, _verify_files(bundle_dir, signed)


def read_bundle(
    bundle_dir: Path, public_key: Ed25519PublicKey | Path | bytes | None = None
) -> SignedManifest:
    """Verify a bundle folder: manifest model, signature, every file's sha256 and tensors.

    ``public_key`` is the signing site's key (object, PEM file or PEM bytes);
    None uses ``signer.pub`` beside the manifest (present in pulled bundles).
    Raises ArtifactError, IntegrityError, SignatureError or UnsafeArtifactError.
    """
    return _read_verified(bundle_dir, public_key)[0]


def load_generator(
    bundle_dir: Path,
    public_key: Ed25519PublicKey | Path | bytes | None = None,
    *,
    device: str = "cpu",
) -> Any:
    """Verify a generator bundle and rebuild G from its manifest's config (no Lightning, no pickle).

    Returns a ``shared.networks.generator.Generator`` in eval mode with
    gradients off. The weights are read once, hashed, header-checked, then
    loaded from those same bytes.
    """
    from safetensors.torch import load as load_safetensors

    from shared.networks.generator import Generator

    signed, data = _read_verified(Path(bundle_dir), public_key)
    if not isinstance(signed.model, GeneratorManifest):
        raise ArtifactError(f"{bundle_dir}: kind {signed.model.kind.value!r} is not a generator")
    G = Generator(signed.model.generator_config)
    G.load_state_dict(load_safetensors(data[GENERATOR_FILE]), strict=True)
    return G.to(device).eval().requires_grad_(False)
