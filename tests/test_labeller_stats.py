"""shared.stats against independent references: scipy's Mann–Whitney U, brute force, sklearn."""

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from shared.stats import (
    bootstrap_ci,
    macro_roc_auc,
    per_class_roc_auc,
    roc_auc,
    roc_curve,
    youden_threshold,
)


def _pairwise_auc(y, s):
    # P(score_pos > score_neg) + 0.5 P(tie), by enumerating every pair.
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_mann_whitney_u_over_pairs(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + 0.7 * y, 1)  # rounding creates many ties
    u = mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided").statistic
    expected = u / ((y == 1).sum() * (y == 0).sum())
    assert roc_auc(y, s) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s), abs=1e-12)


def test_roc_auc_extremes_and_undefined():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.zeros(4)) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(4), np.arange(4.0))


def test_roc_curve_trapezoid_area_equals_auc():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)
    fpr, tpr, thresholds = roc_curve(y, s)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)
    assert thresholds[0] == np.inf
    assert np.all(np.diff(thresholds) < 0)
    # Every point is the rate of scores >= its threshold, computed directly.
    for k in range(1, len(thresholds)):
        assert tpr[k] == pytest.approx((s[y == 1] >= thresholds[k]).mean())
        assert fpr[k] == pytest.approx((s[y == 0] >= thresholds[k]).mean())


def test_youden_threshold_maximises_j_by_brute_force():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    s = rng.normal(size=400) + 1.2 * y
    t = youden_threshold(y, s)
    j = [(s[y == 1] >= c).mean() - (s[y == 0] >= c).mean() for c in np.unique(s)]
    j_at_t = (s[y == 1] >= t).mean() - (s[y == 0] >= t).mean()
    assert j_at_t == pytest.approx(max(j), abs=1e-12)


def test_youden_threshold_of_separable_scores_is_lowest_positive():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([-2.0, -1.0, 0.5, 1.5, 3.0])
    assert youden_threshold(y, s) == 1.5


def test_against_sklearn_when_available():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 250)
    s = np.round(rng.normal(size=250) + 0.5 * y, 2)
    assert roc_auc(y, s) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    ref_fpr, ref_tpr, ref_thr = metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thr[1:], ref_thr[1:])
    assert youden_threshold(y, s) == ref_thr[np.argmax(ref_tpr - ref_fpr)]


def test_per_class_and_macro_skip_absent_classes():
    rng = np.random.default_rng(5)
    y = np.stack([rng.integers(0, 2, 50), np.zeros(50, int), np.r_[1, np.zeros(49, int)]], 1)
    s = rng.normal(size=(50, 3))
    aucs = per_class_roc_auc(y, s)
    assert aucs[1] is None and aucs[0] == pytest.approx(roc_auc(y[:, 0], s[:, 0]))
    assert macro_roc_auc(y, s) == pytest.approx((aucs[0] + aucs[2]) / 2)
    assert macro_roc_auc(y, s, min_positives=2) == pytest.approx(aucs[0])
    assert np.isnan(macro_roc_auc(y[:, 1:2], s[:, 1:2]))


def test_bootstrap_ci_matches_a_direct_percentile_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    s = rng.normal(size=120) + y
    ci = bootstrap_ci(y, s, num_resamples=400, seed=9)
    # Independent reference: the same resampling stream, AUC by pair enumeration.
    ref_rng = np.random.default_rng(9)
    values = []
    for _ in range(400):
        rows = ref_rng.integers(0, 120, 120)
        if 0 < y[rows].sum() < 120:
            values.append(_pairwise_auc(y[rows], s[rows]))
    assert ci.num_resamples == len(values)
    assert ci.estimate == pytest.approx(_pairwise_auc(y, s))
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))
    assert ci.low < ci.estimate < ci.high


def test_bootstrap_ci_covers_the_true_auc_at_about_the_nominal_rate():
    # Binormal model, shift d: true AUC = Phi(d / sqrt(2)).
    from scipy.stats import norm

    d, true_auc, covered = 1.0, norm.cdf(1.0 / np.sqrt(2)), 0
    for trial in range(100):
        rng = np.random.default_rng(100 + trial)
        y = np.r_[np.ones(60, int), np.zeros(60, int)]
        s = rng.normal(size=120) + d * y
        ci = bootstrap_ci(y, s, num_resamples=300, seed=trial)
        covered += ci.low <= true_auc <= ci.high
    # Nominal 0.95; 100 trials give a binomial sd of about 0.02 (seeded: 0.93 here).
    assert 0.88 <= covered / 100 <= 0.99
