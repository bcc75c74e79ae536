"""Pooled classifier training at the hub: Lightning run folder, checkpoints, signed bundle."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_pool import make_archive

from hub.pooling.archive import read_archive
from hub.pooling.pool import PoolOptions, plan_pool
from hub.pooling.train import ClassifierTrainOptions, train_classifier
from hub.pooling.writer import write_pooled_archive
from shared.artifacts.bundle import read_bundle
from shared.artifacts.classifier import load_classifier_bundle
from shared.artifacts.signing import load_private_key
from shared.errors import ArtifactError, ConfigError

A = ["Effusion", "No Finding", "Cardiomegaly|Effusion", "No Finding", "Pneumonia", "Effusion"] * 6
B = ["Pneumonia", "No Finding", "Pneumonia"] * 8


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    base = tmp_path_factory.mktemp("pool")
    sources = [
        read_archive(make_archive(base / "a", A, site_id="a", seed=1)),
        read_archive(make_archive(base / "b", B, site_id="b", seed=2)),
    ]
    return write_pooled_archive(
        plan_pool(sources, PoolOptions()), sources, PoolOptions(), base / "store"
    )


def _options(pooled, out, key, **extra):
    values = dict(
        archive_dir=pooled.folder,
        out_dir=out,
        hub_key=key,
        resolution_px=32,
        init_features=8,
        growth_rate=4,
        block_config=(1, 1, 1, 1),
        max_epochs=2,
        batch_size=16,
    )
    return ClassifierTrainOptions(**{**values, **extra})


def test_train_writes_a_verifiable_bundle(pooled, tmp_path):
    key = tmp_path / "hub.key"
    result = train_classifier(_options(pooled, tmp_path / "run", key))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((tmp_path / "run" / "options.json").read_text())["max_epochs"] == 2
    public = load_private_key(key).public_key()
    signed = read_bundle(result.bundle_dir, public)
    assert signed.model.kind.value == "classifier"
    net, card, _ = load_classifier_bundle(result.bundle_dir, public)
    assert net.cfg.class_names == ("Cardiomegaly", "Effusion", "Pneumonia", "No Finding")
    assert card.trained_on["masks"]["b"] == ["Pneumonia", "No Finding"]
    assert card.trained_on["sites"] == ["a", "b"]
    for name, param in result.classifier.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], param)
    # A finished run is never overwritten.
    with pytest.raises(ConfigError, match="finished"):
        train_classifier(_options(pooled, tmp_path / "run", key))


def test_bundle_with_foreign_tensors_is_refused(pooled, tmp_path):
    key = tmp_path / "hub.key"
    result = train_classifier(_options(pooled, tmp_path / "run2", key, max_epochs=1))
    from safetensors.torch import load_file, save_file

    weights = result.bundle_dir / "classifier.safetensors"
    state = load_file(str(weights))
    state["discriminator.weight"] = torch.zeros(3)
    save_file(state, str(weights))
    with pytest.raises(ArtifactError):
        read_bundle(result.bundle_dir, load_private_key(key).public_key())
