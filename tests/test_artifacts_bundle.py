"""Bundle format: manifests, Ed25519 signatures, the safetensors gate, rebuilding G."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from shared.artifacts.bundle import SignedManifest, TensorInfo, inspect_safetensors, read_bundle
from shared.artifacts.generator import (
    GENERATOR_FILE,
    GeneratorManifest,
    load_generator,
    write_generator_bundle,
)
from shared.artifacts.keyring import ConsortiumKeyring
from shared.artifacts.manifest import parse_manifest
from shared.artifacts.signing import (
    artifact_id_of,
    canonical_json,
    generate_signing_key,
    parse_json_object,
    public_key_pem,
    sign_body,
)
from shared.errors import ArtifactError, IntegrityError, SignatureError, UnsafeArtifactError
from shared.networks.generator import Generator, GeneratorConfig

CFG = GeneratorConfig(resolution_px=16, z_dim=32, fmap_base=64, fmap_max=32)


def manifest_fields(site_id: str = "a", cfg: GeneratorConfig = CFG) -> dict:
    return {
        "site_id": site_id,
        "generator_config": cfg.model_dump(),
        "resolution_px": cfg.resolution_px,
        "z_dim": cfg.z_dim,
        "training": {
            "kimg": 1.5,
            "phases": [{"kind": "stabilise", "resolution_px": 4, "kimg": 1.5}],
        },
        "data": {"num_images": 12, "counts_per_label": {"No Finding": 9, "Effusion": 3}},
    }


class Marker:
    """Unpickling this creates ``path``: the proof that something was unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def key():
    return generate_signing_key()


@pytest.fixture
def bundle(tmp_path, key):
    torch.manual_seed(0)
    G = Generator(CFG)
    signed = write_generator_bundle(tmp_path / "bundle", G.state_dict(), manifest_fields(), key)
    return tmp_path / "bundle", signed, G


def resign(bundle_dir: Path, key, **changes) -> None:
    """Rewrite the manifest with ``changes`` and a valid signature by ``key``."""
    raw = parse_json_object((bundle_dir / "manifest.json").read_bytes(), where="test")
    raw.update(changes)
    raw["signature"] = sign_body(raw, key).model_dump()
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))


def test_bundle_round_trip_rebuilds_identical_generator(bundle, key):
    folder, signed, G = bundle
    assert sorted(p.name for p in folder.iterdir()) == ["generator.safetensors", "manifest.json"]
    G2 = load_generator(folder, key.public_key())
    z = torch.randn(5, CFG.z_dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(G2(z), G.eval()(z), rtol=0, atol=0)
    assert read_bundle(folder, key.public_key()).artifact_id == signed.artifact_id


def test_manifest_holds_the_issue_fields(bundle):
    folder, _, _ = bundle
    raw = json.loads((folder / "manifest.json").read_text())
    assert raw["kind"] == "generator" and raw["schema_version"] == 1 and raw["site_id"] == "a"
    assert raw["generator_config"]["z_dim"] == 32 and raw["resolution_px"] == 16
    assert raw["label_space"][-1] == "No Finding" and len(raw["label_space"]) == 15
    assert raw["privacy"] == {"dp": None, "audit": None}
    assert raw["data"]["counts_per_label"] == {"No Finding": 9, "Effusion": 3}
    assert raw["radshare_version"] and raw["created"].endswith(("Z", "+00:00"))
    weights = (folder / GENERATOR_FILE).read_bytes()
    import hashlib

    assert raw["files"][GENERATOR_FILE] == {
        "sha256": hashlib.sha256(weights).hexdigest(),
        "size_bytes": len(weights),
    }
    assert raw["signature"]["algorithm"] == "ed25519"


def test_artifact_id_is_sha256_of_canonical_body_without_signature(bundle):
    folder, signed, _ = bundle
    raw = json.loads((folder / "manifest.json").read_text())
    body = {k: v for k, v in raw.items() if k != "signature"}
    expected = (
        __import__("hashlib")
        .sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        .hexdigest()
    )
    assert signed.artifact_id == expected == artifact_id_of(raw)
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == b'{"a":[1.5,"\\u00e9"],"b":1}'


def test_tampered_manifest_fails_signature(bundle, key):
    folder, _, _ = bundle
    raw = json.loads((folder / "manifest.json").read_text())
    raw["data"]["num_images"] = 13
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(SignatureError, match="does not verify"):
        read_bundle(folder, key.public_key())


def test_signature_by_another_key_is_refused(bundle):
    folder, _, _ = bundle
    with pytest.raises(SignatureError, match="not the registered key"):
        read_bundle(folder, generate_signing_key().public_key())


def test_missing_signature_and_unknown_site_are_refused(bundle, key):
    folder, signed, _ = bundle
    site = signed.model.site_id
    other = ConsortiumKeyring({"zz": public_key_pem(key.public_key())}, source="keys.json")
    with pytest.raises(
        SignatureError, match=f"site {site!r} is not in the consortium keyring keys"
    ):
        read_bundle(folder, other)
    raw = json.loads((folder / "manifest.json").read_text())
    del raw["signature"]
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(SignatureError, match="'signature' is missing"):
        read_bundle(folder, key.public_key())


def test_weights_not_matching_manifest_hash_is_integrity_error(bundle, key):
    folder, _, _ = bundle
    torch.manual_seed(5)
    save_file(Generator(CFG).state_dict(), str(folder / GENERATOR_FILE), metadata={"format": "pt"})
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        read_bundle(folder, key.public_key())


def _disguise(folder: Path, payload: bytes, key) -> None:
    """Replace the weights with ``payload`` and sign a manifest whose hash matches it."""
    import hashlib

    (folder / GENERATOR_FILE).write_bytes(payload)
    entry = {"sha256": hashlib.sha256(payload).hexdigest(), "size_bytes": len(payload)}
    resign(folder, key, files={GENERATOR_FILE: entry})


def test_pickle_disguised_as_safetensors_is_never_unpickled(bundle, key, tmp_path):
    folder, _, _ = bundle
    marker = tmp_path / "unpickled.marker"
    _disguise(folder, pickle.dumps(Marker(marker)), key)
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        load_generator(folder, key.public_key())
    assert not marker.exists()


def test_torch_save_zip_is_refused_unread(bundle, key, tmp_path):
    folder, _, G = bundle
    marker = tmp_path / "unpickled.marker"
    buffer = io.BytesIO()
    torch.save({"state": G.state_dict(), "trap": Marker(marker)}, buffer)
    _disguise(folder, buffer.getvalue(), key)
    with pytest.raises(UnsafeArtifactError, match="zip"):
        read_bundle(folder, key.public_key())
    assert not marker.exists()


def test_extra_discriminator_tensor_is_refused_at_write(tmp_path, key):
    state = dict(Generator(CFG).state_dict())
    state["D.blocks.0.conv0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ArtifactError, match=r"discriminator.*D\.blocks\.0\.conv0\.weight"):
        write_generator_bundle(tmp_path / "b", state, manifest_fields(), key)
    assert not (tmp_path / "b").exists()


def test_optimiser_tensor_in_signed_bundle_is_refused_at_read(bundle, key):
    folder, _, G = bundle
    state = {**G.state_dict(), "optimizer.state.0.exp_avg": torch.zeros(4)}
    save_file(state, str(folder / GENERATOR_FILE))
    import hashlib

    data = (folder / GENERATOR_FILE).read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    resign(folder, key, files={GENERATOR_FILE: entry})
    with pytest.raises(ArtifactError, match=r"optimizer\.state\.0\.exp_avg"):
        read_bundle(folder, key.public_key())


def test_unlisted_file_in_bundle_is_refused(bundle, key):
    folder, _, _ = bundle
    (folder / "D.safetensors").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"not listed.*D\.safetensors"):
        read_bundle(folder, key.public_key())


def test_write_never_overwrites(bundle, key):
    folder, _, G = bundle
    with pytest.raises(ArtifactError, match="already exists"):
        write_generator_bundle(folder, G.state_dict(), manifest_fields(), key)


def test_inspect_safetensors_agrees_with_the_library(tmp_path):
    tensors = {"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.float16), "c": torch.zeros(0)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    data = path.read_bytes()
    ours = inspect_safetensors(io.BytesIO(data), len(data), where="t")
    with safe_open(str(path), framework="pt") as handle:
        theirs = {
            k: TensorInfo(handle.get_slice(k).get_dtype(), tuple(handle.get_slice(k).get_shape()))
            for k in handle.keys()  # noqa: SIM118 (safe_open has no __iter__)
        }
    assert ours == theirs


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80\x04K\x01.", "too short|pickle"),
        (struct.pack("<Q", 10**12) + b"{}", "not a safetensors"),
        (
            _safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12),
            "data section",
        ),
        (
            _safetensors({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
            "spans",
        ),
        (
            _safetensors({"w": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
            "dtype",
        ),
        (_safetensors({"__metadata__": {"x": 1}}), "__metadata__"),
        (
            _safetensors(
                {
                    "w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                    "v": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
                },
                b"\0" * 6,
            ),
            "gap or overlap",
        ),
    ],
)
def test_inspect_safetensors_rejects_malformed_files(payload, message):
    with pytest.raises(UnsafeArtifactError, match=message):
        inspect_safetensors(io.BytesIO(payload), len(payload), where="x")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resolution_px": 32}, "resolution_px"),
        ({"data": {"num_images": 1, "counts_per_label": {"Flu": 1}}}, "data.counts_per_label"),
        ({"patient_ids": ["123"]}, "patient_ids"),
        ({"site_id": "Site A"}, "site_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"created": "2026-01-01T00:00:00"}, "created"),
    ],
)
def test_manifest_validation_names_the_field(change, field):
    body = {
        **manifest_fields(),
        "kind": "generator",
        "created": "2026-01-01T00:00:00+00:00",
        "radshare_version": "0.1.0",
        "files": {GENERATOR_FILE: {"sha256": "0" * 64, "size_bytes": 1}},
        **change,
    }
    with pytest.raises(ArtifactError, match=field):
        parse_manifest(body)


def test_manifest_kinds_dispatch_and_bad_file_names():
    body = {
        **manifest_fields(),
        "kind": "generator",
        "created": "2026-01-01T00:00:00+00:00",
        "radshare_version": "0.1.0",
        "files": {GENERATOR_FILE: {"sha256": "0" * 64, "size_bytes": 1}},
    }
    assert isinstance(parse_manifest(body), GeneratorManifest)
    with pytest.raises(ArtifactError, match="known kinds"):
        parse_manifest({**body, "kind": "archive"})
    with pytest.raises(ArtifactError, match="not allowed"):
        parse_manifest(
            {**body, "files": {"../x.safetensors": {"sha256": "0" * 64, "size_bytes": 1}}}
        )
    with pytest.raises(ArtifactError, match="exactly"):
        parse_manifest({**body, "files": {"g.pkl.json": {"sha256": "0" * 64, "size_bytes": 1}}})


def test_strict_json_refuses_duplicate_keys_and_nan():
    with pytest.raises(ArtifactError, match="duplicate"):
        SignedManifest.from_json(b'{"kind": "generator", "kind": "labeller"}')
    with pytest.raises(ArtifactError, match="NaN"):
        parse_json_object(b'{"x": NaN}', where="m")


def test_copied_bundle_verifies_elsewhere(bundle, key, tmp_path):
    folder, signed, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert read_bundle(copy, key.public_key()).artifact_id == signed.artifact_id
