"""The audit's statistics (site_node.audit.statistics) against exact, independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from shared.artifacts.audit import AuditSettings, NearestSplitTest
from site_node.audit.memorisation import patient_matched_subsets
from site_node.audit.statistics import (
    SplitNeighbours,
    best_ssim_histogram,
    decide,
    nearest_split_test,
    permutation_test,
    quantile_dict,
)


def _exact_permutation_p_value(nearest, train_patients, holdout_patients) -> float:
    """Enumerate every relabelling of the pooled patients (small cases only)."""
    pooled = sorted(set(train_patients) | set(holdout_patients))
    observed = sum(p in set(train_patients) for p in nearest)
    labellings = list(itertools.combinations(pooled, len(set(train_patients))))
    at_least = sum(sum(p in set(group) for p in nearest) >= observed for group in labellings)
    return at_least / len(labellings)


def test_permutation_p_value_matches_exact_enumeration():
    # 10 pooled patients (6 train, 4 holdout); 12 samples, several sharing a nearest patient.
    train_patients = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5])
    holdout_patients = np.array([6, 6, 7, 8, 9])
    nearest = np.array([0, 0, 0, 1, 2, 3, 3, 6, 7, 4, 5, 5])
    in_train = np.isin(nearest, train_patients)
    neighbours = SplitNeighbours(
        np.where(in_train, 0.1, 0.2),
        np.where(in_train, 0.2, 0.1),
        np.where(in_train, nearest, 0),
        np.where(in_train, 6, nearest),
    )
    exact = _exact_permutation_p_value(nearest, train_patients, holdout_patients)
    result = permutation_test(
        neighbours, train_patients, holdout_patients, num_permutations=20000, seed=1
    )
    standard_error = math.sqrt(exact * (1 - exact) / 20000)
    assert result.fraction_train == pytest.approx(10 / 12)
    assert result.null_fraction_train == pytest.approx(0.6, abs=0.01)  # 6 of 10 patients
    assert result.p_value == pytest.approx(exact, abs=4 * standard_error + 1e-4)


def test_binomial_p_value_is_the_upper_tail_of_bin_n_half():
    rng = np.random.default_rng(3)
    d_train, d_holdout = rng.random(40), rng.random(40)
    d_holdout[:3] = d_train[:3]  # three ties are dropped
    patients = np.arange(40)
    neighbours = SplitNeighbours(d_train, d_holdout, patients, patients + 100)
    test = nearest_split_test(
        neighbours,
        neighbours,
        space="ssim",
        distance="1 - SSIM",
        subset_patients=(patients, patients + 100),
        split_patients=(patients, patients + 100),
        num_permutations=99,
        seed=0,
    )
    k, n = int(np.sum(d_train < d_holdout)), 37
    upper_tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
    assert (test.num_train_nearer, test.num_ties, test.num_samples) == (k, 3, 40)
    assert test.fraction_train == pytest.approx(k / n)
    assert test.binomial_p_value == pytest.approx(upper_tail, rel=1e-9)
    assert test.distance_p05_train == pytest.approx(np.percentile(d_train, 5))


def test_histogram_and_quantiles_agree_with_numpy():
    values = np.array([-0.2, 0.0, 0.1, 0.49, 0.5, 0.95, 1.0])
    histogram = best_ssim_histogram(values, 4)
    assert histogram.bin_edges == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert histogram.counts == [3, 1, 1, 2]  # -0.2 clipped into the first bin; 1.0 in the last
    quantiles = quantile_dict(values)
    assert quantiles["0.5"] == pytest.approx(np.median(values))
    assert (quantiles["min"], quantiles["max"]) == (-0.2, 1.0)


def _split_test(p_value: float) -> NearestSplitTest:
    return NearestSplitTest(
        space="ssim", distance="1 - SSIM", num_train_images=10, num_holdout_images=10,
        num_train_patients=5, num_holdout_patients=5, num_samples=10, num_train_nearer=5,
        num_holdout_nearer=5, num_ties=0, fraction_train=0.5, binomial_p_value=0.5,
        split_fraction_train=0.5, split_null_fraction_train=0.5, permutation_p_value=p_value,
        num_permutations=99, distance_p05_train=0.3, distance_p05_holdout=0.3,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("near_copies", "ssim_p", "feature_p", "flags"),
    [
        (0, 0.5, 0.5, (False, False, False)),
        (1, 0.5, 0.5, (True, False, False)),
        (0, 0.02, 0.5, (False, True, False)),  # 0.02 < alpha/2 = 0.025
        (0, 0.03, 0.03, (False, False, False)),
        (0, 0.5, 0.001, (False, False, True)),
    ],
)
def test_verdict_follows_the_stated_rule(near_copies, ssim_p, feature_p, flags):
    verdict = decide(near_copies, _split_test(ssim_p), _split_test(feature_p), AuditSettings())
    assert tuple(verdict.flags.values()) == flags
    assert verdict.passed is not any(flags)
    assert len(verdict.reasons) == sum(flags)


def test_patient_matched_subset_is_whole_patients_and_just_large_enough():
    patients = np.repeat(np.arange(30), np.tile([1, 2, 3], 10))  # 60 rows, 30 patients
    train_rows, holdout_rows = np.flatnonzero(patients < 22), np.flatnonzero(patients >= 22)
    subset, holdout = patient_matched_subsets(train_rows, holdout_rows, patients, seed=4)
    np.testing.assert_array_equal(holdout, holdout_rows)
    kept = np.unique(patients[subset])
    np.testing.assert_array_equal(np.sort(subset), np.flatnonzero(np.isin(patients, kept)))
    assert set(subset) <= set(train_rows)
    # The subset reaches the holdout's image count, and would not without its last patient.
    assert subset.size >= holdout_rows.size
    assert min(subset.size - np.sum(patients == p) for p in kept) < holdout_rows.size
