"""Membership inference: distances and TPR against brute force; a memoriser, a non-memoriser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_cache import build_site_cache

from shared.artifacts.membership import MembershipSettings, MembershipSummary
from site_node.data.cache import SiteCache
from site_node.privacy.membership import (
    METHODS,
    attack_scores,
    nearest_distances,
    patient_groups,
    run_membership_audit,
    to_features,
    tpr_at_fpr,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache(site_a: Path, tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_site_cache(site_a, tmp_path_factory.mktemp("mia-cache"), resolutions_px=(16,))


def test_nearest_distances_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    queries, candidates = rng.random((7, 20)), rng.random((300, 20))
    expected = [min(np.linalg.norm(q - c) for c in candidates) for q in queries]
    got = nearest_distances(torch.as_tensor(queries), torch.as_tensor(candidates), chunk_size=64)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_scores_follow_their_formulas() -> None:
    rng = np.random.default_rng(1)
    q, s, r = (torch.as_tensor(rng.random(shape)) for shape in ((5, 8), (40, 8), (30, 8)))
    scores = attack_scores(q, s, r)
    d_s = np.array([np.linalg.norm(s.numpy() - x, axis=1).min() for x in q.numpy()])
    d_r = np.array([np.linalg.norm(r.numpy() - x, axis=1).min() for x in q.numpy()])
    radius = np.median(d_s)
    within = np.array([(np.linalg.norm(s.numpy() - x, axis=1) <= radius).mean() for x in q.numpy()])
    np.testing.assert_allclose(scores["gan-leaks"], -d_s, rtol=1e-12)
    np.testing.assert_allclose(scores["gan-leaks-calibrated"], d_r - d_s, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(scores["monte-carlo"], within, rtol=1e-12)


def test_tpr_at_fpr_matches_a_threshold_sweep() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    score = rng.normal(size=400) + 0.8 * y
    best = 0.0
    for threshold in np.unique(score):
        flagged = score >= threshold
        if flagged[y == 0].mean() <= 0.05:
            best = max(best, flagged[y == 1].mean())
    assert tpr_at_fpr(y, score, 0.05) == pytest.approx(best, abs=1e-12)


def test_patient_groups_hold_each_patients_positions() -> None:
    patients = np.array([7, 3, 7, 9, 3, 7])
    groups = patient_groups(patients)
    assert sorted(map(tuple, groups)) == [(0, 2, 5), (1, 4), (3,)]


def test_box_averaged_features() -> None:
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    expected = images.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4)).reshape(2, 4) / 255.0
    np.testing.assert_allclose(to_features(images, 2).numpy(), expected, rtol=1e-6)


def test_a_memoriser_is_caught_and_a_non_memoriser_is_not(cache: SiteCache) -> None:
    reals = cache.images(16)
    train_rows, val_rows = cache.indices("train"), cache.indices("val")
    settings = MembershipSettings(num_samples=1500, max_queries=200, num_resamples=300)

    def memoriser(n: int, seed: int) -> np.ndarray:  # copies of training images
        return reals[np.random.default_rng(seed).choice(train_rows, n)]

    def non_memoriser(n: int, seed: int) -> np.ndarray:  # blends of reference patients only
        rng = np.random.default_rng(seed)
        a, b = reals[rng.choice(val_rows, n)], reals[rng.choice(val_rows, n)]
        return ((a.astype(np.float64) + b) / 2).round().astype(np.uint8)

    caught = run_membership_audit(memoriser, cache, settings)
    missed = run_membership_audit(non_memoriser, cache, settings)
    assert isinstance(caught, MembershipSummary) and list(caught.attacks) == list(METHODS)
    for method in ("gan-leaks-calibrated", "gan-leaks"):
        result = caught.attacks[method]
        assert 0.9 <= result.roc_auc <= 1.0 and result.roc_auc_ci95[0] >= 0.85
        assert result.tpr_at_target_fpr >= 0.5
    for result in missed.attacks.values():  # ~30 holdout patients: the patient bootstrap CI is wide
        assert result.roc_auc_ci95[0] <= 0.5 <= result.roc_auc_ci95[1]
        assert result.roc_auc_ci95[1] - result.roc_auc_ci95[0] <= 0.35
        assert abs(result.roc_auc - 0.5) <= 0.15
        assert result.tpr_at_target_fpr <= 0.15
    assert caught.num_members == 200 and caught.num_nonmembers == min(
        200, cache.indices("test").size
    )


def test_summary_travels_in_an_audit_reply(cache: SiteCache) -> None:
    """Inside an AuditSummary, the membership results survive the Flower reply's flat records."""
    from shared.artifacts.audit import AuditSettings, to_local_audit_summary
    from shared.audit_records import summary_from_records, summary_to_records
    from site_node.audit.memorisation import run_memorisation_audit

    reals = cache.images(16)

    def sample(n: int, seed: int) -> np.ndarray:
        return reals[np.random.default_rng(seed).choice(cache.indices("val"), n)]

    audit_settings = AuditSettings(num_samples=30, num_permutations=99, reference_samples=20)
    membership = run_membership_audit(
        sample, cache, MembershipSettings(num_samples=200, num_resamples=20)
    )
    summary = run_memorisation_audit(sample, cache, audit_settings).summary
    summary = summary.model_copy(update={"membership": membership})
    site, back = summary_from_records(summary_to_records(summary, "a"))
    assert site == "a" and back == summary
    assert (
        back.membership is not None
        and back.membership.primary == membership.attacks["gan-leaks-calibrated"]
    )
    metrics = to_local_audit_summary(back).metrics
    assert metrics["membership_auc"] == membership.attacks["gan-leaks-calibrated"].roc_auc
