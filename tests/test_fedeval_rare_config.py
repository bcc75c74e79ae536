"""The hub's ``evaluate`` run config asks the sites for Han et al. Fig. 4B variants.

``evaluation_contents`` turns run-config keys into the requests sent to the sites; each
request is read back with the site's own parser (``site_node.flower.evaluate_task``).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers_pool import make_archive

from hub.flower.evaluate_server import evaluation_contents
from shared.artifacts.classifier import ClassifierCard, ClassifierClass, write_classifier_bundle
from shared.artifacts.signing import public_key_pem
from shared.errors import ConfigError
from shared.networks.labeller import Labeller, LabellerConfig
from site_node.flower.evaluate_task import parse_request

CLASSES = ("Effusion", "No Finding")


@pytest.fixture(scope="module")
def run_config(tmp_path_factory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("rare-config")
    cfg = LabellerConfig(
        resolution_px=32, class_names=CLASSES, init_features=8, growth_rate=4,
        block_config=(1, 1, 1, 1),
    )  # fmt: skip
    card = ClassifierCard(
        labeller_config=cfg, classes=[ClassifierClass(name=n) for n in CLASSES], trained_on={}
    )
    key = Ed25519PrivateKey.generate()
    write_classifier_bundle(base / "clf", Labeller(cfg), card, key)
    (base / "hub.pub").write_bytes(public_key_pem(key.public_key()))
    archive = make_archive(base / "arch", ["Effusion", "No Finding"] * 6, site_id="x")
    return {
        "classifiers": f"pooled={base / 'clf'}",
        "hub-public-key": str(base / "hub.pub"),
        "real-baseline": False,
        "rare-label": "Effusion",
        "rare-keep-fraction": 0.1,
        "rare-enrich-archive": str(archive),
        "rare-enrich-images": 4,
        "seed": 7,
    }


@pytest.mark.parametrize(("given", "expected"), [(None, "patients"), ("images", "images")])
def test_rare_keep_unit_reaches_the_sites(run_config, given, expected):
    config = dict(run_config) if given is None else {**run_config, "rare-keep-unit": given}
    contents = evaluation_contents(config)
    assert set(contents) == {"pooled", "rare:none", "rare:oversample", "rare:synthetic"}
    # The published classifier is named by registry id and weights sha256, never sent.
    pooled = parse_request(contents["pooled"])
    assert pooled.classifier_id is not None and pooled.weights_sha256 is not None
    assert not contents["pooled"].array_records
    for strategy in ("none", "oversample", "synthetic"):
        rare = parse_request(contents[f"rare:{strategy}"]).rare_class
        assert rare is not None
        assert (rare.label, rare.strategy, rare.unit) == ("Effusion", strategy, expected)
        assert (rare.keep_fraction, rare.seed) == (0.1, 7)


def test_unknown_rare_keep_unit_is_refused_naming_the_key(run_config):
    with pytest.raises(ConfigError, match=r"rare-keep-unit='people'"):
        evaluation_contents({**run_config, "rare-keep-unit": "people"})
