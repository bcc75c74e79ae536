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
(members positive) with 95% percentile bootstrap CIs. The bootstrap resamples
whole patients of the members, the non-members and the reference (images of one
patient are not independent; with a few dozen holdout patients, which patients
happen to be members moves the AUC by several hundredths, and an image-level
bootstrap would hide that). Only :class:`~shared.artifacts.membership.MembershipSummary`
(numbers) may leave the site.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.artifacts.audit import AuditSummary
from shared.artifacts.membership import AttackResult, MembershipSettings, MembershipSummary
from shared.errors import AuditError
from shared.stats import roc_auc, roc_curve
from site_node.audit.memorisation import ImageCache, Sampler, images_to_uint8, patient_codes

__all__ = [
    "METHODS",
    "AttackDistances",
    "QuerySets",
    "attack_distances",
    "attack_scores",
    "nearest_distances",
    "patient_groups",
    "query_sets",
    "run_membership_audit",
    "to_features",
    "tpr_at_fpr",
    "with_membership",
]

log = logging.getLogger("radshare.site.privacy")

METHODS = ("gan-leaks-calibrated", "gan-leaks", "monte-carlo")


def to_features(images_uint8: np.ndarray, distance_px: int) -> torch.Tensor:
    """uint8 ``[N, R, R]`` → float64 ``[N, distance_px²]`` in [0, 1], box-averaged from ``R``."""
    x = torch.as_tensor(np.ascontiguousarray(images_uint8), dtype=torch.float64)[:, None] / 255.0
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


@dataclass(frozen=True)
class AttackDistances:
    """What every score is made of: ``[Q]`` nearest-sample distances and within-radius
    fractions, and the ``[Q, R]`` query-to-reference distances."""

    to_samples: np.ndarray
    within_radius: np.ndarray
    to_reference: np.ndarray

    def scores(self, rows: np.ndarray, reference_cols: np.ndarray) -> dict[str, np.ndarray]:
        """Every method's scores of queries ``rows`` against reference images ``reference_cols``."""
        to_reference = self.to_reference[np.ix_(rows, reference_cols)].min(axis=1)
        return {
            "gan-leaks-calibrated": to_reference - self.to_samples[rows],
            "gan-leaks": -self.to_samples[rows],
            "monte-carlo": self.within_radius[rows],
        }


def attack_distances(
    queries: torch.Tensor, samples: torch.Tensor, reference: torch.Tensor
) -> AttackDistances:
    """Distances of every query to the samples and to each reference image."""
    to_samples = nearest_distances(queries, samples)
    radius = float(to_samples.median())
    within = _count_within(queries, samples, radius) / samples.shape[0]
    return AttackDistances(
        to_samples.numpy(),
        within.numpy(),
        torch.cdist(queries.double(), reference.double()).numpy(),
    )


def attack_scores(
    queries: torch.Tensor, samples: torch.Tensor, reference: torch.Tensor
) -> dict[str, np.ndarray]:
    """Every attack's member-likeness score per query (higher: more likely a member)."""
    distances = attack_distances(queries, samples, reference)
    return distances.scores(np.arange(queries.shape[0]), np.arange(reference.shape[0]))


def tpr_at_fpr(y_true: np.ndarray, y_score: np.ndarray, target_fpr: float = 0.01) -> float:
    """Highest TPR among ROC points whose FPR is <= ``target_fpr`` (members are positives)."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return float(tpr[fpr <= target_fpr].max())


def patient_groups(patients: np.ndarray) -> list[np.ndarray]:
    """Positions in ``patients`` grouped by patient code (one array per patient)."""
    codes, inverse = np.unique(patients, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse, minlength=codes.size))[:-1])


@dataclass(frozen=True)
class QuerySets:
    """Cache rows of members, non-members and the reference, and each row's patient code."""

    members: np.ndarray
    nonmembers: np.ndarray
    reference: np.ndarray
    patients: np.ndarray


def query_sets(cache: ImageCache, settings: MembershipSettings) -> QuerySets:
    """Members (train), non-members (holdout), each a random subset of at most ``max_queries``.

    Raises:
        AuditError: a split is empty, or the holdout and reference splits are the same.
    """
    if settings.holdout_split == settings.reference_split:
        raise AuditError(f"holdout and reference split are both {settings.holdout_split!r}")
    splits = ("train", settings.holdout_split, settings.reference_split)
    train, holdout, reference = (np.asarray(cache.indices(s)) for s in splits)
    if min(train.size, holdout.size, reference.size) == 0:
        sizes = dict(zip(splits, (train.size, holdout.size, reference.size), strict=True))
        raise AuditError(f"membership audit needs images in every split, got {sizes}")
    rng = np.random.default_rng(settings.seed)
    return QuerySets(
        members=np.sort(rng.choice(train, min(settings.max_queries, train.size), replace=False)),
        nonmembers=np.sort(
            rng.choice(holdout, min(settings.max_queries, holdout.size), replace=False)
        ),
        reference=np.sort(
            rng.choice(reference, min(settings.max_reference, reference.size), replace=False)
        ),
        patients=patient_codes(cache),
    )


def _bootstrap(
    distances: AttackDistances, sets: QuerySets, y_true: np.ndarray, settings: MembershipSettings
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method, the AUCs and TPRs of ``num_resamples`` patient-level resamples."""
    queries = np.concatenate([sets.members, sets.nonmembers])
    member_groups = patient_groups(sets.patients[sets.members])
    nonmember_groups = [
        g + sets.members.size for g in patient_groups(sets.patients[sets.nonmembers])
    ]
    reference_groups = patient_groups(sets.patients[sets.reference])
    assert queries.size == y_true.size
    rng = np.random.default_rng(settings.seed)

    def resample(groups: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])

    values: dict[str, list[tuple[float, float]]] = {method: [] for method in METHODS}
    for _ in range(settings.num_resamples):
        rows = np.concatenate([resample(member_groups), resample(nonmember_groups)])
        for method, score in distances.scores(rows, resample(reference_groups)).items():
            values[method].append(
                (roc_auc(y_true[rows], score), tpr_at_fpr(y_true[rows], score, settings.target_fpr))
            )
    return {method: tuple(np.asarray(v).T) for method, v in values.items()}  # type: ignore[misc]


def _ci95(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


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
    sets = query_sets(cache, settings)
    queries = np.concatenate([sets.members, sets.nonmembers])
    y_true = np.r_[np.ones(sets.members.size, np.int64), np.zeros(sets.nonmembers.size, np.int64)]

    def features(images: np.ndarray) -> torch.Tensor:
        return to_features(images, min(settings.distance_px, res_px))

    distances = attack_distances(
        features(reals[queries]), features(samples), features(reals[sets.reference])
    )
    scores = distances.scores(np.arange(queries.size), np.arange(sets.reference.size))
    resampled = _bootstrap(distances, sets, y_true, settings)
    attacks = {
        method: AttackResult(
            roc_auc=roc_auc(y_true, scores[method]),
            roc_auc_ci95=_ci95(resampled[method][0]),
            tpr_at_target_fpr=tpr_at_fpr(y_true, scores[method], settings.target_fpr),
            tpr_at_target_fpr_ci95=_ci95(resampled[method][1]),
        )
        for method in METHODS
    }
    summary = MembershipSummary(
        settings=settings, resolution_px=res_px, num_members=int(sets.members.size),
        num_nonmembers=int(sets.nonmembers.size), num_reference=int(sets.reference.size),
        attacks=attacks, seconds=time.perf_counter() - started,
    )  # fmt: skip
    best = summary.primary
    log.info(
        "membership audit: %s AUC %.3f [%.3f, %.3f], TPR@%g FPR %.3f (%d members, %d non-members)",
        METHODS[0], best.roc_auc, *best.roc_auc_ci95, settings.target_fpr,
        best.tpr_at_target_fpr, sets.members.size, sets.nonmembers.size,
    )  # fmt: skip
    return summary


def with_membership(summary: AuditSummary, sample: Sampler, cache: ImageCache) -> AuditSummary:
    """The memorisation audit's summary with the membership attacks added (same samples' seed
    and count, same holdout; the other of val/test calibrates). Unchanged, with a warning,
    when the cache lacks a split the attack needs."""
    holdout = summary.settings.holdout_split
    settings = MembershipSettings(
        num_samples=summary.settings.num_samples,
        sample_seed=summary.settings.sample_seed,
        holdout_split=holdout,
        reference_split="val" if holdout == "test" else "test",
    )
    try:
        membership = run_membership_audit(sample, cache, settings)
    except AuditError as error:
        log.warning("membership audit skipped: %s", error)
        return summary
    return summary.model_copy(update={"membership": membership})
