"""Prevalence bootstrap CIs: a known answer, agreement with row resampling, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hub.quality.prevalence import plot_prevalence, predict_labels, prevalence_ci
from shared.stats import bootstrap_ci


def test_prevalence_ci_matches_the_binomial_normal_approximation():
    # Known answer: for N = 20,000 and p = 0.3 the bootstrap CI is p ± 1.96 sqrt(p (1 - p) / N).
    rng = np.random.default_rng(0)
    labels = np.zeros((20_000, 2))
    labels[rng.permutation(20_000)[:6000], 0] = 1
    ci = prevalence_ci(labels, num_resamples=10_000, seed=1)
    half_width = 1.959964 * np.sqrt(0.3 * 0.7 / 20_000)
    assert ci.estimate[0] == pytest.approx(0.3)
    assert ci.low[0] == pytest.approx(0.3 - half_width, abs=0.1 * half_width)
    assert ci.high[0] == pytest.approx(0.3 + half_width, abs=0.1 * half_width)
    assert (ci.estimate[1], ci.low[1], ci.high[1]) == (
        0.0,
        0.0,
        0.0,
    )  # an absent class has no spread


def test_prevalence_ci_equals_resampling_rows():
    rng = np.random.default_rng(2)
    column = (rng.random(150) < 0.2).astype(float)
    ours = prevalence_ci(column[:, None], num_resamples=10_000, seed=3)
    rows = bootstrap_ci(
        column, column, lambda y, s: float(np.mean(s)), num_resamples=10_000, seed=4
    )
    assert ours.low[0] == pytest.approx(rows.low, abs=0.01)
    assert ours.high[0] == pytest.approx(rows.high, abs=0.01)


class _FixedLogits(torch.nn.Module):
    """Logits = mean pixel value times a per-class gain."""

    def __init__(self, gains):
        super().__init__()
        self.gains = torch.tensor(gains)

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))[:, None] * self.gains


def test_predict_labels_applies_per_class_thresholds():
    images = np.stack([np.full((8, 8), v, np.uint8) for v in (0, 128, 255)])  # means -1, ~0, 1
    labels = predict_labels(_FixedLogits([1.0, -1.0, 1.0]), images, [0.5, 0.5, None])
    np.testing.assert_array_equal(labels, [[0, 1, 0], [0, 0, 1], [1, 0, 1]])


def test_plot_prevalence_has_both_sets():
    ci = prevalence_ci(np.eye(3)[[0, 0, 1, 2]], num_resamples=100)
    fig = plot_prevalence(["A", "B", "C"], ci, ci)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "real (n=4)",
        "synthetic (n=4)",
    ]
