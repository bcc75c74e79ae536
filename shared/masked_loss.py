"""Masked, class-weighted binary cross entropy for pooled multi-label data.

When archives of several sites are pooled, a label that one site never annotated
is *unknown* for that site's images, not negative. Each image carries a 0/1 mask
over the label space (its site's annotated labels); the loss of image ``i`` and
class ``c`` is

    m_ic · w_ic · BCE(l_ic, y_ic),   w_ic = w_P[c] if y_ic = 1 else w_N[c]

(Guendel et al.'s weights, Segal et al. eq. 3), and the batch loss is the sum over
``i, c`` divided by the number of unmasked entries. A masked entry contributes
nothing, and so does its gradient: ``∂loss/∂l_ic = 0`` wherever ``m_ic = 0``.

The class weights count only unmasked entries:
``w_P[c] = (N_p + N_n) / N_p`` and ``w_N[c] = (N_p + N_n) / N_n`` over the images
whose site annotated ``c``. Pure torch and numpy, used by the hub's pooled classifier
and by a site's real-only baseline alike.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["masked_class_weights", "masked_weighted_bce_with_logits"]


def masked_class_weights(labels: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class ``(w_pos, w_neg)`` float32 ``[C]`` from 0/1 ``labels`` and ``mask`` ``[N, C]``.

    A class without an annotated positive (or negative) gets the count 1 in that
    denominator; its weight never multiplies a term then.
    """
    labels = np.asarray(labels, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)
    if labels.shape != mask.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and mask {mask.shape} must be one [N, C] shape")
    positives = (labels * mask).sum(axis=0)
    annotated = mask.sum(axis=0)
    negatives = annotated - positives
    w_pos = annotated / np.maximum(positives, 1.0)
    w_neg = annotated / np.maximum(negatives, 1.0)
    return torch.tensor(w_pos, dtype=torch.float32), torch.tensor(w_neg, dtype=torch.float32)


def masked_weighted_bce_with_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    w_pos: torch.Tensor,
    w_neg: torch.Tensor,
) -> torch.Tensor:
    """Sum of ``m · w · BCE`` over ``[N, C]`` divided by the number of unmasked entries.

    Returns 0 (with a graph, zero gradient) when every entry is masked.
    """
    targets = targets.to(logits.dtype)
    mask = mask.to(logits.dtype)
    weight = (targets * w_pos + (1 - targets) * w_neg) * mask
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (weight * per_entry).sum() / mask.sum().clamp(min=1.0)
