"""Per-class evaluation of a labeller: Youden thresholds on validation, AUCs with CIs.

Pure numpy over logits and multi-hot labels (formulas in :mod:`shared.stats`), so
that it is tested without a network and reused by federated evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.stats import bootstrap_ci, youden_threshold

__all__ = ["ClassEvaluation", "evaluate_classes", "format_table"]


@dataclass(frozen=True)
class ClassEvaluation:
    """One class: threshold from validation, AUCs, positives per split."""

    name: str
    threshold_logit: float | None
    val_auc: float | None
    val_auc_ci95: tuple[float, float] | None
    test_auc: float | None
    test_auc_ci95: tuple[float, float] | None
    val_positives: int
    test_positives: int


def _threshold(y: np.ndarray, logits: np.ndarray) -> float | None:
    both = 0 < int(y.sum()) < y.size
    return youden_threshold(y, logits) if both else None


def _auc_ci(
    y: np.ndarray, logits: np.ndarray, num_resamples: int, seed: int
) -> tuple[float | None, tuple[float, float] | None]:
    if not 0 < int(y.sum()) < y.size:
        return None, None
    ci = bootstrap_ci(y, logits, num_resamples=num_resamples, seed=seed)
    return ci.estimate, (ci.low, ci.high)


def evaluate_classes(
    class_names: Sequence[str],
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_resamples: int = 1000,
    seed: int = 0,
) -> list[ClassEvaluation]:
    """Youden threshold on validation, AUCs with 95% bootstrap CIs on validation and test.

    Classes without positives (or negatives) in a split get None for that split's numbers.
    The validation CI tells the hub whether the labeller can call a class at all
    (``hub.synthesis.pipeline.usable_thresholds``).
    """
    out = []
    for c, name in enumerate(class_names):
        val_auc, val_ci = _auc_ci(val_labels[:, c], val_logits[:, c], num_resamples, seed)
        test_auc, test_ci = _auc_ci(test_labels[:, c], test_logits[:, c], num_resamples, seed)
        out.append(
            ClassEvaluation(
                name=name,
                threshold_logit=_threshold(val_labels[:, c], val_logits[:, c]),
                val_auc=val_auc,
                val_auc_ci95=val_ci,
                test_auc=test_auc,
                test_auc_ci95=test_ci,
                val_positives=int(val_labels[:, c].sum()),
                test_positives=int(test_labels[:, c].sum()),
            )
        )
    return out


def format_table(evaluations: Sequence[ClassEvaluation]) -> str:
    """A plain-text table: class, positives, thresholds and AUCs (for logs and notes)."""

    def num(value: float | None) -> str:
        return "   -  " if value is None else f"{value:6.3f}"

    lines = [
        f"{'class':20s} {'val+':>4s} {'test+':>5s} {'T_logit':>7s} {'valAUC':>6s} testAUC [95% CI]"
    ]
    for e in evaluations:
        ci = (
            ""
            if e.test_auc_ci95 is None
            else f" [{e.test_auc_ci95[0]:.3f}, {e.test_auc_ci95[1]:.3f}]"
        )
        lines.append(
            f"{e.name:20s} {e.val_positives:4d} {e.test_positives:5d} {num(e.threshold_logit):>7s} "
            f"{num(e.val_auc)} {num(e.test_auc)}{ci}"
        )
    return "\n".join(lines)
