"""Feature extractors: FID Inception equals pytorch-fid / torch-fidelity; cache; default rule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.errors import ConfigError
from shared.metrics import features as feats
from shared.metrics.frechet import (
    frechet_distance,
    frechet_distance_from_features,
    frechet_distance_matrix,
)
from shared.metrics.inception import FIDInceptionV3, load_fid_inception

FIXTURES = Path(__file__).parent / "fixtures" / "quality"


def _reference_module():
    spec = importlib.util.spec_from_file_location(
        "inception_reference", FIXTURES / "inception_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    """pytorch-fid's keys with seeded random values (the real file cannot be fetched here)."""
    spec = json.loads((FIXTURES / "inception_reference.json").read_text())
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(_reference_module().random_state_dict(spec), path)
    return path


def test_inception_keys_and_shapes_are_pytorch_fids():
    spec = json.loads((FIXTURES / "inception_reference.json").read_text())
    ours = {
        k: list(v.shape)
        for k, v in FIDInceptionV3().state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert ours == spec


@pytest.mark.parametrize(
    ("resize", "reference_key"),
    [("pytorch-fid", "pytorch_fid"), ("torch-fidelity", "torch_fidelity")],
)
def test_inception_features_equal_the_libraries_own(inception_weights, resize, reference_key):
    reference = np.load(FIXTURES / "inception_reference.npz", allow_pickle=False)
    extractor = feats.make_extractor("inception", weights_path=inception_weights, resize=resize)
    ours = extractor(reference["images"])
    np.testing.assert_allclose(ours, reference[reference_key], rtol=1e-5, atol=1e-4)
    # The two libraries differ by far more than that tolerance: the test can tell them apart.
    assert np.abs(reference["pytorch_fid"] - reference["torch_fidelity"]).max() > 1e-2


def test_inception_rejects_a_file_with_other_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match="not FID Inception weights"):
        load_fid_inception(path)
    with pytest.raises(ConfigError, match="no file"):
        load_fid_inception(tmp_path / "absent.pth")


def test_make_extractor_names_the_valid_choices():
    with pytest.raises(ConfigError, match="did you mean 'inception'"):
        feats.make_extractor("inceptoin")


def test_random_conv_is_seeded_and_deterministic():
    images = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    a, b = feats.RandomConvExtractor(seed=0)(images), feats.RandomConvExtractor(seed=0)(images)
    c = feats.RandomConvExtractor(seed=1)(images)
    assert a.shape == (5, 256) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def _tiny_labeller():
    from shared.networks.labeller import Labeller, LabellerConfig

    torch.manual_seed(0)
    cfg = LabellerConfig(
        resolution_px=32, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1)
    )
    return Labeller(cfg).eval()


def test_labeller_extractor_is_the_labellers_embed_on_network_images():
    labeller = _tiny_labeller()
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    ours = feats.make_extractor("labeller", labeller=labeller, input_px=32)(images)
    with torch.no_grad():
        expected = labeller.embed(torch.from_numpy(images).float().unsqueeze(1) / 127.5 - 1).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


def test_default_extractor_rule(inception_weights):
    labeller = _tiny_labeller()
    assert feats.default_extractor(inception_weights, labeller).name == "inception"
    assert feats.default_extractor(None, labeller, 32).name == "labeller"
    assert feats.default_extractor(None, None).name == "random-conv"


def test_feature_cache_hits_per_image_set(tmp_path):
    calls = []

    class Counting(feats.RandomConvExtractor):
        def __call__(self, images_u8):
            calls.append(len(images_u8))
            return super().__call__(images_u8)

    extractor = Counting(seed=0)
    images = np.random.default_rng(2).integers(0, 256, (6, 32, 32), dtype=np.uint8)
    first = feats.extract_features(extractor, images, batch_size=4, cache_dir=tmp_path)
    second = feats.extract_features(extractor, images, batch_size=4, cache_dir=tmp_path)
    assert calls == [4, 2]
    np.testing.assert_array_equal(first, second)
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    feats.extract_features(extractor, changed, cache_dir=tmp_path)
    assert calls == [4, 2, 6]
    (cached,) = [
        p for p in tmp_path.glob("*.npy") if np.array_equal(np.load(p, allow_pickle=False), first)
    ]
    assert cached.suffix == ".npy"


def test_to_uint8_matches_the_contract():
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0]).view(1, 1, 1, 5)
    np.testing.assert_array_equal(feats.to_uint8(x)[0, 0], [0, 64, 128, 255, 255])


def test_frechet_closed_form_scaled_full_covariance():
    # S2 = a S1 commutes with S1: Tr (S1 S2)^1/2 = sqrt(a) Tr S1,
    # so FD = |dmu|^2 + (1 - sqrt a)^2 Tr S1.
    rng = np.random.default_rng(3)
    root = rng.normal(size=(6, 6))
    sigma1, a = root @ root.T + 0.1 * np.eye(6), 2.5
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + (1 - np.sqrt(a)) ** 2 * np.trace(sigma1)
    assert frechet_distance(mu1, sigma1, mu2, a * sigma1) == pytest.approx(expected, rel=1e-9)
    matrix = frechet_distance_matrix([(mu1, sigma1), (mu2, a * sigma1)])
    assert matrix[0, 1] == pytest.approx(expected, rel=1e-9)


def test_frechet_of_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(4)
    a = rng.normal(0.0, 1.0, (20_000, 4))
    b = rng.normal(0.5, 2.0, (20_000, 4))
    expected = 4 * 0.5**2 + 4 * (1 - 2) ** 2  # diagonal: |dmu|^2 + sum (sqrt(1) - sqrt(4))^2
    assert frechet_distance_from_features(a, b) == pytest.approx(expected, rel=0.03)


def test_frechet_matrix_equals_pairwise_sqrtm():
    rng = np.random.default_rng(5)
    sets = [rng.normal(i * 0.3, 1 + 0.2 * i, (300, 8)) @ rng.normal(size=(8, 8)) for i in range(4)]
    from shared.metrics.frechet import feature_statistics

    matrix = frechet_distance_matrix([feature_statistics(s) for s in sets])
    for i in range(4):
        assert matrix[i, i] == 0.0
        for j in range(i + 1, 4):
            assert matrix[i, j] == pytest.approx(
                frechet_distance_from_features(sets[i], sets[j]), rel=1e-7
            )
