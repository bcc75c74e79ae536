"""The audit's statistics, pure functions on numbers: holdout tests, histogram, quantiles, verdict.

Train-versus-holdout test. For each generated sample ``i`` let ``d_T(i)`` and
``d_H(i)`` be its distance to the nearest image of a train set ``T`` and of the
holdout ``H``; the statistic is ``K = #{i : d_T(i) < d_H(i)}`` over the ``n``
samples without a tie.

* Binomial, equal sizes (what is asked for): ``T`` is a random set of whole
  training patients with as many images as ``H``. If the samples were
  independent, ``K ~ Bin(n, 1/2)`` under "no memorisation"; the p-value is
  ``P(K' >= K)`` (``scipy.stats.binomtest``, alternative ``greater``), and
  ``p = K / n`` is reported.
* Permutation, whole train split (what decides): under "no memorisation" the
  train/holdout labels of the pooled patients are exchangeable. ``K`` equals
  ``sum_p w_p 1[p in T]``, where ``w_p`` counts the samples whose nearest pooled
  image belongs to patient ``p``; relabelling a random set of ``|T|`` patients
  as train gives ``K``'s null distribution, including the dependence between
  samples that share a nearest image, which the binomial test ignores (its
  false-positive rate reached 50% for another site's images on the team's
  data). Using every training patient, not a subset, is what gives it power: a
  copy's nearest image is then always its source. p-value
  ``(1 + #{K_perm >= K}) / (1 + num_permutations)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import binomtest

from shared.artifacts.audit import (
    VERDICT_RULE,
    AuditSettings,
    AuditVerdict,
    Histogram,
    NearestSplitTest,
)

__all__ = [
    "QUANTILES",
    "PermutationResult",
    "SplitNeighbours",
    "best_ssim_histogram",
    "decide",
    "nearest_split_test",
    "permutation_test",
    "quantile_dict",
]

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class SplitNeighbours:
    """Each sample's nearest train-subset and holdout image: distances and patient codes.

    Patient codes are integers local to one audit (``pd.factorize`` of the ids); they
    never leave :func:`nearest_split_test`.
    """

    def __init__(
        self,
        distance_train: np.ndarray,
        distance_holdout: np.ndarray,
        patient_train: np.ndarray,
        patient_holdout: np.ndarray,
    ) -> None:
        self.distance_train = np.asarray(distance_train, dtype=np.float64)
        self.distance_holdout = np.asarray(distance_holdout, dtype=np.float64)
        self.patient_train = np.asarray(patient_train, dtype=np.int64)
        self.patient_holdout = np.asarray(patient_holdout, dtype=np.int64)


class PermutationResult(NamedTuple):
    """Observed and null-mean fraction of samples nearer train, and the p-value."""

    fraction_train: float
    null_fraction_train: float
    p_value: float


def permutation_test(
    neighbours: SplitNeighbours,
    train_patients: np.ndarray,
    holdout_patients: np.ndarray,
    *,
    num_permutations: int,
    seed: int,
) -> PermutationResult:
    """One-sided test of ``#{samples nearer train}`` under random patient relabelling.

    Args:
        neighbours: distances and patient codes of each sample's nearest train / holdout image.
        train_patients, holdout_patients: patient codes of the two groups' images (disjoint).
        num_permutations: Monte-Carlo relabellings.
        seed: their random seed.
    """
    nearer_train, decided = _decided(neighbours)
    nearest = np.where(nearer_train, neighbours.patient_train, neighbours.patient_holdout)[decided]
    num_train_patients = np.unique(train_patients).size
    num_pooled = num_train_patients + np.unique(holdout_patients).size
    observed = int(nearer_train.sum())
    _, weights = np.unique(nearest, return_counts=True)
    rng = np.random.default_rng(seed)
    null_counts = np.empty(num_permutations, dtype=np.int64)
    for trial in range(num_permutations):
        # A random permutation puts a patient in the train group iff it lands below |T|.
        landing = rng.choice(num_pooled, size=weights.size, replace=False)
        null_counts[trial] = weights[landing < num_train_patients].sum()
    num_decided = max(1, int(decided.sum()))
    return PermutationResult(
        fraction_train=observed / num_decided,
        null_fraction_train=float(null_counts.mean()) / num_decided,
        p_value=(1 + int(np.sum(null_counts >= observed))) / (1 + num_permutations),
    )


def _decided(neighbours: SplitNeighbours) -> tuple[np.ndarray, np.ndarray]:
    """Masks of samples nearer train, and of samples without a tie."""
    nearer_train = neighbours.distance_train < neighbours.distance_holdout
    return nearer_train, nearer_train | (neighbours.distance_train > neighbours.distance_holdout)


def nearest_split_test(
    equal: SplitNeighbours,
    pooled: SplitNeighbours,
    *,
    space: str,
    distance: str,
    subset_patients: tuple[np.ndarray, np.ndarray],
    split_patients: tuple[np.ndarray, np.ndarray],
    num_permutations: int,
    seed: int,
    reference_distance: np.ndarray | None = None,
) -> NearestSplitTest:
    """Binomial test on ``equal`` (train subset vs holdout), permutation test on ``pooled``.

    Args:
        equal: nearest train-subset and holdout images of each sample.
        pooled: nearest image of the whole train split and of the holdout.
        space, distance: names for the summary.
        subset_patients: patient codes of the train subset's and the holdout's images.
        split_patients: patient codes of the whole train split's and the holdout's images.
        num_permutations, seed: of the permutation test.
        reference_distance: real holdout images' distances to train (baseline).
    """
    nearer_train, decided_mask = _decided(equal)
    decided, num_train = int(decided_mask.sum()), int(nearer_train.sum())
    binomial = binomtest(num_train, decided, 0.5, alternative="greater").pvalue if decided else 1.0
    permutation = permutation_test(
        pooled, *split_patients, num_permutations=num_permutations, seed=seed
    )
    train_codes, holdout_codes = subset_patients
    return NearestSplitTest(
        space=space,
        distance=distance,
        num_train_images=int(train_codes.size),
        num_holdout_images=int(holdout_codes.size),
        num_train_patients=int(np.unique(train_codes).size),
        num_holdout_patients=int(np.unique(holdout_codes).size),
        num_samples=int(decided_mask.size),
        num_train_nearer=num_train,
        num_holdout_nearer=decided - num_train,
        num_ties=int(decided_mask.size) - decided,
        fraction_train=num_train / decided if decided else 0.5,
        binomial_p_value=float(binomial),
        split_fraction_train=permutation.fraction_train,
        split_null_fraction_train=permutation.null_fraction_train,
        permutation_p_value=permutation.p_value,
        num_permutations=num_permutations,
        distance_p05_train=float(np.percentile(equal.distance_train, 5)),
        distance_p05_holdout=float(np.percentile(equal.distance_holdout, 5)),
        reference_distance_p05=(
            None if reference_distance is None else float(np.percentile(reference_distance, 5))
        ),
    )


def best_ssim_histogram(best_ssim: np.ndarray, bins: int) -> Histogram:
    """Counts over ``bins`` equal bins of [0, 1]; an SSIM below 0 is counted in the first bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(best_ssim, 0.0, 1.0), bins=edges)
    return Histogram(bin_edges=edges.round(6).tolist(), counts=counts.astype(int).tolist())


def quantile_dict(values: np.ndarray) -> dict[str, float]:
    """``min``, the :data:`QUANTILES` and ``max`` of ``values``."""
    points = np.quantile(values, QUANTILES)
    result = {"min": float(np.min(values))}
    result.update({f"{q:g}": float(v) for q, v in zip(QUANTILES, points, strict=True)})
    result["max"] = float(np.max(values))
    return result


def decide(
    near_copy_count: int,
    ssim_test: NearestSplitTest,
    feature_test: NearestSplitTest | None,
    settings: AuditSettings,
) -> AuditVerdict:
    """Apply :data:`~shared.artifacts.audit.VERDICT_RULE`."""
    level = settings.alpha / 2
    flags = {
        "near_copies": near_copy_count > settings.max_near_copies,
        "ssim_holdout": ssim_test.permutation_p_value < level,
        "feature_holdout": feature_test is not None and feature_test.permutation_p_value < level,
    }
    reasons = []
    if flags["near_copies"]:
        reasons.append(
            f"{near_copy_count} samples with SSIM >= {settings.near_copy_ssim} to a training "
            f"image (allowed {settings.max_near_copies})"
        )
    for name, test in (("ssim_holdout", ssim_test), ("feature_holdout", feature_test)):
        if flags[name] and test is not None:
            reasons.append(
                f"{test.space}: {test.fraction_train:.3f} of samples nearer train than holdout, "
                f"permutation p-value {test.permutation_p_value:.2e} < {level:g}"
            )
    return AuditVerdict(
        passed=not any(flags.values()), rule=VERDICT_RULE, flags=flags, reasons=reasons
    )
