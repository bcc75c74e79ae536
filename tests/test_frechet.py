import numpy as np
import pytest

from shared.metrics.frechet import frechet_distance, frechet_distance_from_features


def test_frechet_closed_form_diagonal_gaussians():
    # For commuting (diagonal) covariances FD = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_of_identical_samples_is_zero():
    feats = np.random.default_rng(1).normal(size=(200, 8))
    assert frechet_distance_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
