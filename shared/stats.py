"""Small, pure statistics for classifier evaluation: ROC curve and AUC, Youden's J, bootstrap CIs.

Everything takes numpy arrays and returns plain floats, so that the site (labeller
training, federated evaluation) and the hub (archive labelling, pooled classifiers)
compute the same numbers the same way. Scores may be probabilities or logits: the
ROC curve and its AUC only depend on the order of the scores.

ROC AUC is computed with the Mann–Whitney U statistic (Hanley & McNeil 1982)::

    AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)

where ``R_pos`` is the sum of the (tie-averaged, 1-based) ranks of the positive
scores among all scores. It equals the probability that a random positive scores
above a random negative, ties counting one half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BootstrapCI",
    "bootstrap_ci",
    "macro_roc_auc",
    "per_class_roc_auc",
    "roc_auc",
    "roc_curve",
    "youden_threshold",
]


def _binary_inputs(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but y_score has {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must be 0/1, got values {np.unique(y)[:5].tolist()}")
    if not np.isfinite(s).all():
        raise ValueError("y_score contains NaN or infinite values")
    return y.astype(bool), s


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group_of = np.cumsum(starts_group) - 1
    group_start = np.flatnonzero(starts_group)
    group_stop = np.r_[group_start[1:], values.size]
    mean_rank = (group_start + group_stop + 1) / 2.0  # mean of start+1 .. stop
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[group_of]
    return ranks


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve of binary labels ``y_true`` (0/1) and scores ``y_score``.

    Raises:
        ValueError: when ``y_true`` holds only one class (the AUC is undefined).
    """
    y, s = _binary_inputs(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC AUC needs both classes; got {n_pos} positives, {n_neg} negatives")
    rank_sum_pos = _average_ranks(s)[y].sum()
    return float((rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: ``(fpr, tpr, thresholds)``, thresholds decreasing, first one ``+inf``.

    Point ``k`` is the rate of positives / negatives with ``score >= thresholds[k]``;
    one point per distinct score, plus the origin.
    """
    y, s = _binary_inputs(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC curve needs both classes; got {n_pos} positives, {n_neg} negatives")
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    last_of_value = np.r_[s_desc[1:] != s_desc[:-1], True]
    true_pos = np.cumsum(y_desc)[last_of_value]
    false_pos = np.cumsum(~y_desc)[last_of_value]
    tpr = np.r_[0.0, true_pos / n_pos]
    fpr = np.r_[0.0, false_pos / n_neg]
    thresholds = np.r_[np.inf, s_desc[last_of_value]]
    return fpr, tpr, thresholds


def youden_threshold(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """The score threshold maximising Youden's J = TPR - FPR (Youden 1950).

    Predict positive where ``score >= threshold``. Ties go to the highest threshold.
    """
    fpr, tpr, thresholds = roc_curve(y_true, y_score)
    j = tpr[1:] - fpr[1:]  # skip the +inf point, which predicts nothing positive
    return float(thresholds[1:][int(np.argmax(j))])


def per_class_roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> list[float | None]:
    """ROC AUC of every column of ``[N, C]`` labels and scores; None where a class is absent."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"need [N, C] arrays of one shape, got {y_true.shape} and {y_score.shape}")
    out: list[float | None] = []
    for c in range(y_true.shape[1]):
        n_pos = int(y_true[:, c].sum())
        both = 0 < n_pos < y_true.shape[0]
        out.append(roc_auc(y_true[:, c], y_score[:, c]) if both else None)
    return out


def macro_roc_auc(y_true: np.ndarray, y_score: np.ndarray, min_positives: int = 1) -> float:
    """Mean per-class ROC AUC over classes with at least ``min_positives`` positives.

    Classes without negatives are skipped too. Returns NaN when no class qualifies.
    """
    y_true = np.asarray(y_true)
    aucs = per_class_roc_auc(y_true, y_score)
    positives = y_true.sum(axis=0)
    kept = [a for a, n in zip(aucs, positives, strict=True) if a is not None and n >= min_positives]
    return float(np.mean(kept)) if kept else float("nan")


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate and its percentile bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    num_resamples: int  # resamples in which the metric was defined


def bootstrap_ci(
    y_true: np.ndarray,
    y_score: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap CI of ``metric(y_true, y_score)`` (Efron & Tibshirani 1993).

    Cases are resampled with replacement; resamples where ``metric`` raises
    ValueError (e.g. a single class for ROC AUC) are skipped and not counted.

    Raises:
        ValueError: when the metric is undefined on the data itself or on every resample.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    estimate = metric(y_true, y_score)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_resamples):
        rows = rng.integers(0, y_true.shape[0], y_true.shape[0])
        try:
            values.append(metric(y_true[rows], y_score[rows]))
        except ValueError:
            continue
    if not values:
        raise ValueError(f"metric undefined on all {num_resamples} bootstrap resamples")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(values), [tail, 1.0 - tail])
    return BootstrapCI(float(estimate), float(low), float(high), confidence, len(values))
