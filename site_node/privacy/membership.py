"""Membership inference against a published generator, run at the site: GAN-Leaks and Monte-Carlo.

The attacker holds only the generator (what the hub publishes) and a candidate image
``x``; it draws ``S`` samples ``g_1..g_S`` and asks how well the generator reproduces
``x``. Members (images of the train split) should be reproduced better than
non-members (other patients, the holdout split) if the generator memorised them.

* **gan-leaks** (Chen et al. 2020, full black-box): ``score(x) = -min_j ‖x - g_j‖₂``.
* **gan-leaks-calibrated**: ``score(x) = min_r ‖x - r‖₂ - min_j ‖x - g_j‖₂``, the
  distance to real reference images (a third split, patients neither in train nor
  in the holdout) removing how easy ``x`` is to approximate at all — the role of
  Chen et al.'s reference model, with real non-members as the reference.
* **monte-carlo** (Hilprecht et al. 2019): ``score(x) = #{j : ‖x - g_j‖₂ <= r} / S``
  with ``r`` the median over all queries of their nearest-sample distance.

Distances are Euclidean on images box-averaged to ``distance_px`` and scaled to
[0, 1]. Each attack is summarised by its ROC AUC and its TPR at ``target_fpr``
(members positive), with percentile bootstrap CIs over queries
(``shared.stats.bootstrap_ci``). Only :class:`~shared.artifacts.membership.MembershipSummary`
(numbers) may leave the site.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from shared.artifacts.membership import AttackResult, MembershipSettings, MembershipSummary
from shared.errors import AuditError
from shared.stats import bootstrap_ci, roc_auc, roc_curve
from site_node.audit.memorisation import ImageCache, Sampler, images_to_uint8

__all__ = [
    "METHODS",
    "attack_result",
    "attack_scores",
    "nearest_distances",
    "query_rows",
    "run_membership_audit",
    "to_features",
    "tpr_at_fpr",
]

log = logging.getLogger("radshare.site.privacy")

METHODS = ("gan-leaks-calibrated", "gan-leaks", "monte-carlo")


def to_features(images_uint8: np.ndarray, distance_px: int) -> torch.Tensor:
    """uint8 ``[N, R, R]`` → float32 ``[N, distance_px²]`` in [0, 1], box-averaged if ``R`` is larger."""
    x = torch.as_tensor(np.ascontiguousarray(images_uint8), dtype=torch.float32)[:, None] / 255.0
    factor = max(1, x.shape[-1] // distance_px)
    return (F.avg_pool2d(x, factor) if factor > 1 else x).flatten(1)


def nearest_distances(
    queries: torch.Tensor, candidates: torch.Tensor, *, chunk_size: int = 4096
) -> torch.Tensor:
    """Each query's Euclidean distance to its nearest candidate, ``[Q]`` (candidates chunked)."""
    best = torch.full((queries.shape[0],), float("inf"), dtype=torch.float64)
    for start in range(0, candidates.shape[0], chunk_size):
        chunk = torch.cdist(queries.double(), candidates[start : start + chunk_size].double())
        best = torch.minimum(best, chunk.min(dim=1).values)
    return best


def _count_within(
    queries: torch.Tensor, candidates: torch.Tensor, radius: float, *, chunk_size: int = 4096
) -> torch.Tensor:
    """How many candidates lie within ``radius`` of each query, ``[Q]``."""
    counts = torch.zeros(queries.shape[0], dtype=torch.float64)
    for start in range(0, candidates.shape[0], chunk_size):
        chunk = torch.cdist(queries.double(), candidates[start : start + chunk_size].double())
        counts += (chunk <= radius).sum(dim=1)
    return counts


def attack_scores(
    queries: torch.Tensor, samples: torch.Tensor, reference: torch.Tensor
) -> dict[str, np.ndarray]:
    """Every attack's member-likeness score per query (higher: more likely a member)."""
    to_samples = nearest_distances(queries, samples)
    to_reference = nearest_distances(queries, reference)
    radius = float(to_samples.median())
    within = _count_within(queries, samples, radius) / samples.shape[0]
    return {
        "gan-leaks-calibrated": (to_reference - to_samples).numpy(),
        "gan-leaks": (-to_samples).numpy(),
        "monte-carlo": within.numpy(),
    }


def tpr_at_fpr(y_true: np.ndarray, y_score: np.ndarray, target_fpr: float = 0.01) -> float:
    """Highest TPR among ROC points whose FPR is <= ``target_fpr`` (members are positives)."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return float(tpr[fpr <= target_fpr].max())


def attack_result(
    method: str, y_true: np.ndarray, y_score: np.ndarray, settings: MembershipSettings
) -> AttackResult:
    """ROC AUC and TPR at ``settings.target_fpr`` with 95% percentile bootstrap CIs."""

    def tpr(y: np.ndarray, s: np.ndarray) -> float:
        return tpr_at_fpr(y, s, settings.target_fpr)

    common = {"num_resamples": settings.num_resamples, "confidence": 0.95, "seed": settings.seed}
    auc = bootstrap_ci(y_true, y_score, roc_auc, **common)
    low_fpr = bootstrap_ci(y_true, y_score, tpr, **common)
    return AttackResult(
        method=method,
        roc_auc=auc.estimate,
        roc_auc_ci95=(auc.low, auc.high),
        tpr_at_target_fpr=low_fpr.estimate,
        tpr_at_target_fpr_ci95=(low_fpr.low, low_fpr.high),
    )


def query_rows(
    cache: ImageCache, settings: MembershipSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cache rows of members (train), non-members (holdout) and the calibration reference.

    Members and non-members are random subsets of equal size, at most ``max_queries``.

    Raises:
        AuditError: a split is empty, or the holdout and reference splits are the same.
    """
    if settings.holdout_split == settings.reference_split:
        raise AuditError(f"holdout and reference split are both {settings.holdout_split!r}")
    train = np.asarray(cache.indices("train"))
    holdout = np.asarray(cache.indices(settings.holdout_split))
    reference = np.asarray(cache.indices(settings.reference_split))
    sizes = {"train": train.size, settings.holdout_split: holdout.size, settings.reference_split: reference.size}
    if min(sizes.values()) == 0:
        raise AuditError(f"membership audit needs images in every split, got {sizes}")
    rng = np.random.default_rng(settings.seed)
    num_queries = min(settings.max_queries, train.size, holdout.size)
    members = np.sort(rng.choice(train, num_queries, replace=False))
    nonmembers = np.sort(rng.choice(holdout, num_queries, replace=False))
    return members, nonmembers, reference


def run_membership_audit(
    sample: Sampler, cache: ImageCache, settings: MembershipSettings | None = None
) -> MembershipSummary:
    """Attack ``sample``'s generator with every method of :data:`METHODS`; aggregates only.

    ``sample(n, seed)`` returns the generator's images (uint8 ``[n, R, R]`` or float in
    [-1, 1] ``[n, 1, R, R]``); the cache must hold images at ``R`` px.
    """
    settings = settings or MembershipSettings()
    started = time.perf_counter()
    samples = images_to_uint8(sample(settings.num_samples, settings.sample_seed))
    res_px = samples.shape[-1]
    reals = cache.images(res_px)
    members, nonmembers, reference = query_rows(cache, settings)
    queries = np.concatenate([members, nonmembers])
    y_true = np.r_[np.ones(members.size, np.int64), np.zeros(nonmembers.size, np.int64)]

    def features(images: np.ndarray) -> torch.Tensor:
        return to_features(images, min(settings.distance_px, res_px))

    scores = attack_scores(features(reals[queries]), features(samples), features(reals[reference]))
    attacks = [attack_result(method, y_true, scores[method], settings) for method in METHODS]
    summary = MembershipSummary(
        settings=settings,
        resolution_px=res_px,
        num_members=int(members.size),
        num_nonmembers=int(nonmembers.size),
        num_reference=int(reference.size),
        attacks=attacks,
        seconds=time.perf_counter() - started,
    )
    best = summary.attacks[0]
    log.info(
        "membership audit: %s AUC %.3f [%.3f, %.3f], TPR@%g FPR %.3f (%d members, %d non-members)",
        best.method, best.roc_auc, *best.roc_auc_ci95, settings.target_fpr,
        best.tpr_at_target_fpr, members.size, nonmembers.size,
    )  # fmt: skip
    return summary
