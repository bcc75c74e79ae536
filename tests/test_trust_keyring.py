"""Keys come from the consortium, never from the bundle (issue 12, items 2 and 8).

The attack: take a published bundle, change its weights, fix the manifest's sha256,
re-sign it with the attacker's own key and put the matching public key in
``signer.pub``. Every consumer verifies against the consortium keyring, looked up by
the manifest's site id, so each one refuses it and names the site. A malicious hub
that sends ``../`` or absolute file names gets nothing written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_registry_grpc import TINY, make_bundle, make_consortium

import hub.registry.handlers as handlers
from hub.cli import app as hub_app
from hub.registry.keyring import DirectoryKeyring
from hub.registry.server import start_server
from hub.synthesis.pipeline import SynthesisOptions, prepare_synthesis
from shared.artifacts.bundle import read_bundle
from shared.artifacts.classifier import ClassifierCard, ClassifierClass, write_classifier_bundle
from shared.artifacts.keyring import ConsortiumKeyring
from shared.artifacts.labeller import load_labeller_export
from shared.artifacts.records import ArchiveChunk, ArchiveHeader, FileChunk, ManifestReply
from shared.artifacts.signing import (
    generate_signing_key,
    load_private_key,
    public_key_pem,
    sign_body,
    write_private_key,
)
from shared.cli_main import run_cli
from shared.errors import ArtifactError, ConfigError, IntegrityError, SignatureError
from shared.networks.generator import Generator
from shared.networks.labeller import Labeller, LabellerConfig

pytestmark = pytest.mark.integration

SMALL_LABELLER = LabellerConfig(
    resolution_px=32,
    class_names=("Effusion", "No Finding"),
    init_features=8,
    growth_rate=4,
    block_config=(1, 1, 1, 1),
)


def _cli(args: list, capsys) -> tuple[int, str]:
    """Run ``radshare-hub`` as its console script does: exit code and stderr."""
    code = run_cli(hub_app, [str(a) for a in args], prog="radshare-hub")
    return code, capsys.readouterr().err


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes): compared before and after."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def resign_tampered(bundle: Path, weights_file: str) -> bytes:
    """The attack: new weights, manifest sha256 fixed, re-signed, signer.pub replaced.

    Returns the attacker's public key PEM (now in ``signer.pub``).
    """
    weights = bundle / weights_file
    tensors = load_file(str(weights))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1.0  # the backdoor
    save_file(tensors, str(weights), metadata={"format": "pt"})
    data = weights.read_bytes()
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["files"][weights_file] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
    }
    attacker = generate_signing_key()
    body = {k: v for k, v in raw.items() if k != "signature"}
    raw["signature"] = sign_body(body, attacker).model_dump()
    (bundle / "manifest.json").write_text(json.dumps(raw, sort_keys=True, indent=2) + "\n")
    pem = public_key_pem(attacker.public_key())
    (bundle / "signer.pub").write_bytes(pem)
    return pem


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("consortium"))


@pytest.fixture
def keyring_file(consortium, tmp_path, capsys) -> Path:
    """The consortium keyring as ``radshare-hub keyring export`` writes it."""
    root = tmp_path / "hub-root"
    shutil.copytree(consortium.base / "site_keys", root / "site_keys")
    hub_key = generate_signing_key()
    write_private_key(root / "hub_signing.key", hub_key)
    out = tmp_path / "consortium-keyring.json"
    code, err = _cli(["keyring", "export", "--out", out, "--root", root], capsys)
    assert code == 0, err
    return out


@pytest.fixture
def tampered(consortium, tmp_path) -> tuple[Path, bytes]:
    bundle = make_bundle(tmp_path / "bundle", "a", consortium.keys["a"])
    read_bundle(bundle, consortium.keys["a"].public_key())  # genuine before the attack
    return bundle, resign_tampered(bundle, "generator.safetensors")


def test_keyring_export_round_trip(consortium, keyring_file, tmp_path, capsys):
    keyring = ConsortiumKeyring.load(keyring_file)
    assert keyring.site_ids == sorted([*consortium.keys, "hub"])
    for site in consortium.keys:
        assert keyring.public_key_pem(site) == public_key_pem(consortium.keys[site].public_key())
    hub_key = load_private_key(tmp_path / "hub-root" / "hub_signing.key")
    assert keyring.public_key_pem("hub") == public_key_pem(hub_key.public_key())
    assert b"PRIVATE" not in keyring_file.read_bytes()  # the public halves only
    before = keyring_file.read_bytes()
    code, err = _cli(
        ["keyring", "export", "--out", keyring_file, "--root", tmp_path / "hub-root"], capsys
    )
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    assert keyring_file.read_bytes() == before  # never overwritten


def test_a_bad_keyring_file_names_file_and_field(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"schema_version": 1, "keys": {"a": "not a key"}}))
    with pytest.raises(ConfigError, match=r"k\.json: field 'keys'.*site 'a'"):
        ConsortiumKeyring.load(path)


def test_resigned_bundle_with_its_own_signer_pub_is_refused_on_read(tampered, keyring_file):
    bundle, attacker_pem = tampered
    assert (bundle / "signer.pub").read_bytes() == attacker_pem  # self-consistent forgery
    with pytest.raises(SignatureError, match=r"site 'a'"):
        read_bundle(bundle, ConsortiumKeyring.load(keyring_file))


def test_a_site_missing_from_the_keyring_is_refused(consortium, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", "a", consortium.keys["a"])
    only_b = tmp_path / "only-b.json"
    ConsortiumKeyring({"b": public_key_pem(consortium.keys["b"].public_key())}).write(only_b)
    with pytest.raises(
        SignatureError, match=rf"site 'a' is not in the consortium keyring {only_b}"
    ):
        read_bundle(bundle, ConsortiumKeyring.load(only_b))


def test_synthesize_refuses_the_resigned_bundle(tampered, keyring_file, tmp_path):
    bundle, _ = tampered
    options = SynthesisOptions(
        generator=str(bundle),
        labeller=str(tmp_path / "unused"),
        out_dir=tmp_path / "archive",
        num_images=4,
        trusted=ConsortiumKeyring.load(keyring_file),
    )
    with pytest.raises(SignatureError, match=r"site 'a'"):
        prepare_synthesis(options)
    assert not (tmp_path / "archive").exists()


def test_the_audit_servers_loader_refuses_the_resigned_bundle(tampered, keyring_file):
    from hub.flower.audit_server import audit_main

    bundle, _ = tampered
    run_config = {"generator-bundle": str(bundle), "keyring": str(keyring_file)}
    with pytest.raises(SignatureError, match=r"site 'a'"):
        audit_main(None, run_config)  # type: ignore[arg-type]  # refused before the grid


def test_the_evaluate_servers_loader_refuses_a_resigned_classifier(tmp_path):
    from hub.flower.evaluate_server import evaluation_contents

    hub_key = generate_signing_key()
    keyring = tmp_path / "keyring.json"
    ConsortiumKeyring({"hub": public_key_pem(hub_key.public_key())}).write(keyring)
    card = ClassifierCard(
        labeller_config=SMALL_LABELLER,
        classes=[ClassifierClass(name=n) for n in SMALL_LABELLER.class_names],
        trained_on={"archive": "test"},
    )
    bundle = tmp_path / "classifier"
    write_classifier_bundle(bundle, Labeller(SMALL_LABELLER), card, hub_key)
    run_config = {"classifiers": f"pooled={bundle}", "keyring": str(keyring)}
    assert set(evaluation_contents(run_config)) == {"pooled"}  # genuine: accepted
    resign_tampered(bundle, "classifier.safetensors")
    with pytest.raises(SignatureError, match=r"site 'hub'"):
        evaluation_contents(run_config)


def test_unsigned_exports_need_the_explicit_flag(tmp_path):
    from hub.synthesis.sources import resolve_generator

    export = tmp_path / "export"
    export.mkdir()
    save_file(Generator(TINY).state_dict(), str(export / "g_ema.safetensors"))
    (export / "generator.json").write_text(json.dumps({"generator_config": TINY.model_dump()}))
    with pytest.raises(ArtifactError, match="unsigned training export; pass --trust-local-export"):
        resolve_generator(str(export))
    assert resolve_generator(str(export), trust_local_export=True).config == TINY
    with pytest.raises(ArtifactError, match="--trust-local-export"):
        load_labeller_export(export, trust_local_export=False)


# A hub whose replies are forged: the servers are real, their handlers are replaced.


@pytest.fixture
def hub(consortium, tmp_path):
    server = start_server(consortium.hub_config(tmp_path / "root"))
    yield server
    server.stop(grace_s=None)


def _published(consortium, hub, tmp_path) -> str:
    bundle = make_bundle(tmp_path / "published", "a", consortium.keys["a"], seed=3)
    with consortium.client(hub.port, "site:a") as site:
        return site.publish_bundle(bundle).artifact.artifact_id


def test_pull_from_a_hub_serving_a_resigned_bundle_is_refused(
    consortium, hub, keyring_file, tmp_path, monkeypatch, capsys
):
    artifact_id = _published(consortium, hub, tmp_path)
    forged_dir = tmp_path / "forged"
    make_bundle(forged_dir, "a", consortium.keys["a"], seed=3)
    attacker_pem = resign_tampered(forged_dir, "generator.safetensors")
    real_get_manifest = handlers.get_manifest

    def forged_manifest(*args, **kwargs) -> ManifestReply:
        reply = real_get_manifest(*args, **kwargs)
        return ManifestReply(
            reply.artifact, (forged_dir / "manifest.json").read_bytes(), attacker_pem
        )

    monkeypatch.setattr(handlers, "get_manifest", forged_manifest)
    before = _tree(tmp_path / "root")
    out = tmp_path / "pulls" / "g"
    args = ["pull", artifact_id[:12], "--out", str(out), "--hub", f"127.0.0.1:{hub.port}"]
    args += ["--tls-dir", str(consortium.tls), "--keyring", str(keyring_file)]
    code, err = _cli(args, capsys)
    assert code == 2 and "site 'a'" in err and "Traceback" not in err, err
    assert not (tmp_path / "pulls").exists()  # refused before anything is written
    assert _tree(tmp_path / "root") == before
    monkeypatch.setattr(handlers, "get_manifest", real_get_manifest)  # the honest hub
    assert _cli(args, capsys)[0] == 0 and (out / "manifest.json").is_file()


@pytest.mark.parametrize("name", ["../evil", "/tmp/abs-evil", "sub/evil", ""])
def test_pull_refuses_file_names_outside_the_bundle(
    consortium, hub, keyring_file, tmp_path, monkeypatch, name
):
    artifact_id = _published(consortium, hub, tmp_path)
    real_get_artifact = handlers.get_artifact

    def evil_chunks(*args, **kwargs):
        real_chunks = list(real_get_artifact(*args, **kwargs))
        yield FileChunk(name, 0, b"overwrite me")
        yield from real_chunks

    monkeypatch.setattr(handlers, "get_artifact", evil_chunks)
    work = tmp_path / "work"
    work.mkdir()
    with consortium.client(hub.port, "operator") as operator, pytest.raises(IntegrityError):
        operator.pull(artifact_id, work / "pulled", trusted=ConsortiumKeyring.load(keyring_file))
    assert list(work.iterdir()) == []  # no folder, no temporary folder
    assert not (tmp_path / "evil").exists() and not Path("/tmp/abs-evil").exists()


@pytest.mark.parametrize(
    "path", ["../evil", "/tmp/abs-archive-evil", "a/../../evil", "a\\..\\evil", "a//b", ""]
)
def test_archive_pull_refuses_paths_outside_the_archive(
    consortium, hub, tmp_path, monkeypatch, path
):
    archive_id = "ab" * 32

    def evil_archive(*args, **kwargs):
        header = ArchiveHeader(archive_id, "pool_manifest.json", 10, "", 0)
        return header, iter([ArchiveChunk(path, 0, b"overwrite!")])

    monkeypatch.setattr(handlers, "pull_archive", evil_archive)
    work = tmp_path / "work"
    work.mkdir()
    with (
        consortium.client(hub.port, "operator", retries=0) as operator,
        pytest.raises(IntegrityError, match="unsafe file name"),
    ):
        operator.pull_archive(archive_id[:12], work / "archive")
    partial = work / "archive.partial"
    assert sorted(p.name for p in partial.iterdir()) == [".archive_id"]  # nothing from the hub
    assert sorted(p.name for p in work.iterdir()) == ["archive.partial"]
    assert not (tmp_path / "evil").exists() and not Path("/tmp/abs-archive-evil").exists()


def test_tensor_changes_alone_still_fail_the_hash(consortium, tmp_path):
    """Control: without re-signing, the old sha256 check catches the changed weights."""
    bundle = make_bundle(tmp_path / "bundle", "a", consortium.keys["a"])
    weights = bundle / "generator.safetensors"
    tensors = load_file(str(weights))
    tensors = {k: v + 1.0 if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(IntegrityError):
        read_bundle(bundle, DirectoryKeyring(consortium.base / "site_keys"))
