"""Labeller bundles: signed, verified, rebuilt without unpickling; tampering is refused."""

import json

import pytest
import torch

from shared.artifacts.bundle import read_bundle
from shared.artifacts.keyring import ConsortiumKeyring
from shared.artifacts.labeller import (
    ClassMetrics,
    LabellerCard,
    LabellerManifest,
    load_labeller_bundle,
    write_labeller_bundle,
)
from shared.artifacts.manifest import ArtifactKind
from shared.artifacts.signing import generate_signing_key, public_key_pem
from shared.errors import ArtifactError, IntegrityError, SignatureError
from shared.networks.labeller import Labeller, LabellerConfig

CFG = LabellerConfig(
    resolution_px=32,
    class_names=("Effusion", "No Finding"),
    init_features=8,
    growth_rate=4,
    block_config=(1, 1, 1, 1),
)


def _card():
    return LabellerCard(
        labeller_config=CFG,
        classes=[
            ClassMetrics(
                name="Effusion",
                threshold_logit=0.4,
                val_auc=0.8,
                test_auc=0.75,
                test_auc_ci95=(0.6, 0.88),
                train_positives=9,
            ),
            ClassMetrics(name="No Finding", threshold_logit=-0.1),
        ],
        val_macro_auc=0.7,
    )


def test_bundle_round_trip_keeps_weights_thresholds_and_kind(tmp_path):
    key = generate_signing_key()
    torch.manual_seed(0)
    labeller = Labeller(CFG).eval()
    signed = write_labeller_bundle(tmp_path / "b", labeller, _card(), "site-a", key)
    assert isinstance(signed.model, LabellerManifest)
    assert signed.model.kind == ArtifactKind.LABELLER
    assert set(p.name for p in (tmp_path / "b").iterdir()) == {
        "manifest.json",
        "labeller.safetensors",
    }
    loaded, card, artifact_id = load_labeller_bundle(tmp_path / "b", key.public_key())
    assert artifact_id == signed.artifact_id
    assert card == _card()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x), labeller(x))


def test_tampered_or_unsigned_bundles_are_refused(tmp_path):
    key = generate_signing_key()
    write_labeller_bundle(tmp_path / "b", Labeller(CFG), _card(), "site-a", key)
    with pytest.raises(SignatureError):
        load_labeller_bundle(tmp_path / "b", generate_signing_key().public_key())
    keyring = ConsortiumKeyring({"site-b": public_key_pem(key.public_key())}, source="kr.json")
    with pytest.raises(
        SignatureError, match=r"site 'site-a' is not in the consortium keyring kr\.json"
    ):
        load_labeller_bundle(tmp_path / "b", keyring)
    weights = tmp_path / "b" / "labeller.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(IntegrityError):
        load_labeller_bundle(tmp_path / "b", key.public_key())


def test_manifest_refuses_thresholds_of_other_classes_and_foreign_tensors(tmp_path):
    key = generate_signing_key()
    write_labeller_bundle(tmp_path / "b", Labeller(CFG), _card(), "site-a", key)
    raw = json.loads((tmp_path / "b" / "manifest.json").read_text())
    raw["classes"][0]["name"] = "Mass"
    with pytest.raises(ValueError, match="do not match"):
        LabellerManifest.model_validate(raw)
    other = CFG.model_copy(update={"growth_rate": 8})
    card = _card().model_copy(update={"labeller_config": other})
    with pytest.raises(ArtifactError, match="tensor"):
        # Weights of one architecture under a manifest that describes another.
        write_labeller_bundle(tmp_path / "c", _WrongCfg(Labeller(CFG), other), card, "site-a", key)
    read_bundle(tmp_path / "b", key.public_key())  # the untouched bundle still verifies


class _WrongCfg(torch.nn.Module):
    """A labeller whose .cfg claims another architecture than its weights."""

    def __init__(self, inner, cfg):
        super().__init__()
        self.net = inner.net
        self.cfg = cfg


def test_hub_accepts_a_labeller_bundle_like_a_generator(tmp_path):
    from hub.registry import handlers
    from hub.registry.auth import parse_identity
    from hub.registry.handlers import HubLimits, HubState
    from hub.registry.keyring import StaticKeyring
    from hub.registry.memory_registry import InMemoryRegistry
    from shared.artifacts.records import ArtifactKind as RecordKind
    from shared.artifacts.records import FileChunk, PublishHeader
    from shared.artifacts.signing import public_key_pem

    key = generate_signing_key()
    state = HubState(
        InMemoryRegistry(),
        StaticKeyring({"site-a": public_key_pem(key.public_key())}),
        HubLimits(max_upload_bytes=10**7),
    )
    signed = write_labeller_bundle(tmp_path / "b", Labeller(CFG), _card(), "site-a", key)
    manifest = (tmp_path / "b" / "manifest.json").read_bytes()
    data = (tmp_path / "b" / "labeller.safetensors").read_bytes()

    def items():
        yield PublishHeader(RecordKind.LABELLER, manifest)
        for offset in range(0, len(data), 4096):
            yield FileChunk("labeller.safetensors", offset, data[offset : offset + 4096])

    result = handlers.publish(parse_identity("site:site-a"), items(), state)
    assert result.created and result.artifact.artifact_id == signed.artifact_id
    assert result.artifact.kind == RecordKind.LABELLER
