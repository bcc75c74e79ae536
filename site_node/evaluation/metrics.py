"""Per-class aggregates of a classifier on a site's real split: AUC, sensitivity, specificity, CIs.

Point estimates use :mod:`shared.stats` (Mann–Whitney AUC, Youden's J). The 95% CIs are
percentile bootstraps over images (Efron & Tibshirani 1993) with 10,000 resamples by
default, computed for all resamples at once: resample ``b`` draws rows with
``rng.integers(0, n, n)`` exactly as :func:`shared.stats.bootstrap_ci` does with the same
seed, turns them into per-row multiplicities ``w_b``, and evaluates

    AUC_b  = Σ_k P_bk (N_b,<k + N_bk / 2) / (P_b N_b)      (k: distinct score values)
    sens_b = Σ_{y=1, s>=T} w_b / P_b,   spec_b = Σ_{y=0, s<T} w_b / N_b

where ``P_bk``/``N_bk`` are the resampled positives/negatives with score value ``k`` and
``N_b,<k`` the negatives below it. Resamples in which a metric is undefined (no
positive or no negative) are skipped, as in ``bootstrap_ci``; a test checks both agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from shared.stats import roc_auc, roc_curve

__all__ = ["BootstrapResult", "bootstrap_auc_sens_spec", "roc_tpr_at", "sens_spec"]

_BLOCK_ELEMENTS = 4_000_000  # resample rows drawn per block (bounded memory)


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimates and percentile CIs (low, high) of AUC, sensitivity and specificity."""

    auc: float
    auc_ci: tuple[float, float]
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]
    num_resamples: int


def sens_spec(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``score >= threshold``; ValueError without both classes."""
    y = np.asarray(y_true).astype(bool)
    if y.all() or not y.any():
        raise ValueError("sensitivity and specificity need positives and negatives")
    predicted = np.asarray(y_score) >= threshold
    return float(predicted[y].mean()), float((~predicted[~y]).mean())


def roc_tpr_at(y_true: np.ndarray, y_score: np.ndarray, fpr_grid: np.ndarray) -> list[float]:
    """The ROC curve's TPR at each grid FPR (the best TPR with FPR at or below it)."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return [float(tpr[fpr <= x + 1e-12].max()) for x in fpr_grid]


def _resample_weights(n: int, num_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Multiplicity of each row ``[block, n]`` per resample, in ``bootstrap_ci``'s draw order."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    done = 0
    while done < num_resamples:
        b = min(block, num_resamples - done)
        rows = rng.integers(0, n, (b, n))
        flat = rows + n * np.arange(b)[:, None]
        yield np.bincount(flat.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _auc_of_weights(w: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted, w_sorted = s[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    pos = np.add.reduceat(w_sorted * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w_sorted * ~y_sorted, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    p, q = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + neg / 2)).sum(axis=1) / (p * q)


def _percentile(values: np.ndarray, confidence: float) -> tuple[float, float]:
    kept = values[np.isfinite(values)]
    if kept.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    low, high = np.quantile(kept, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_auc_sens_spec(
    y_true: np.ndarray,
    y_score: np.ndarray,
    threshold: float | None,
    *,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """AUC, and sensitivity/specificity at ``threshold`` (NaN if None), with bootstrap CIs."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    auc = roc_auc(y, s)
    predicted = s >= (np.inf if threshold is None else threshold)
    aucs, sens, spec = [], [], []
    for w in _resample_weights(len(y), num_resamples, seed):
        aucs.append(_auc_of_weights(w, y, s))
        p, q = (w * y).sum(axis=1), (w * ~y).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens.append((w * (y & predicted)).sum(axis=1) / np.where(p > 0, p, np.nan))
            spec.append((w * (~y & ~predicted)).sum(axis=1) / np.where(q > 0, q, np.nan))
    all_auc = np.concatenate(aucs)
    point = (np.nan, np.nan) if threshold is None else sens_spec(y, s, threshold)
    nan_ci = (float("nan"), float("nan"))
    return BootstrapResult(
        auc=auc,
        auc_ci=_percentile(all_auc, confidence),
        sensitivity=point[0],
        sensitivity_ci=nan_ci
        if threshold is None
        else _percentile(np.concatenate(sens), confidence),
        specificity=point[1],
        specificity_ci=nan_ci
        if threshold is None
        else _percentile(np.concatenate(spec), confidence),
        num_resamples=int(np.isfinite(all_auc).sum()),
    )
