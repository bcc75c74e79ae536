"""How a labeller-architecture classifier is trained: input range, augmentation, optimiser.

One recipe for a site's labeller (``site_node.labeller``), a site's real-only baseline
(``site_node.evaluation``) and the hub's pooled classifier (``hub.pooling``); pure torch,
no Lightning, so that both sides share this one copy.

* :func:`to_network_range`: the networks' input contract, uint8 → float32 in [-1, 1].
* :func:`augment_batch`: Segal et al. §3.3 for one channel: rotation within ±10°,
  horizontal flip with p = 0.5, brightness and contrast jitter of 0.1 (the grey-level
  equivalents of torchvision's ``ColorJitter``: brightness multiplies by a factor in
  [0.9, 1.1], contrast blends towards the image mean by a factor in [0.9, 1.1]). It runs
  on whole batches on the training device.
* :func:`adam_with_plateau`: Adam, the learning rate reduced ten-fold when the
  validation macro ROC AUC (:data:`MONITOR`) stops improving.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["MONITOR", "adam_with_plateau", "augment_batch", "to_network_range"]

#: The validation metric that drives the learning rate, checkpoints and early stopping.
MONITOR = "val_macro_auc"


def to_network_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 1, R, R]`` → float32 in [-1, 1] (the contract: ``x / 127.5 - 1``)."""
    return images_uint8.float() / 127.5 - 1.0


def augment_batch(
    x: torch.Tensor,
    *,
    max_rotation_deg: float = 10.0,
    flip_p: float = 0.5,
    brightness: float = 0.1,
    contrast: float = 0.1,
) -> torch.Tensor:
    """Random rotation, horizontal flip, brightness and contrast of ``[N, 1, R, R]`` in [-1, 1].

    Uncovered corners after rotation are black (0 on the uint8 scale).
    """
    n = x.shape[0]
    device = x.device
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_rotation_deg)
    mirror = torch.where(torch.rand(n, device=device) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, zero], 1), torch.stack([sin * mirror, cos, zero], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x01 = F.grid_sample(
        (x + 1) / 2, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    factor_b = 1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * brightness
    factor_c = 1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * contrast
    x01 = (x01 * factor_b).clamp(0, 1)
    mean = x01.mean(dim=(1, 2, 3), keepdim=True)
    x01 = ((x01 - mean) * factor_c + mean).clamp(0, 1)
    return x01 * 2 - 1


def adam_with_plateau(
    parameters: Iterable[torch.nn.Parameter], lr: float, patience_epochs: int
) -> dict[str, Any]:
    """Adam at ``lr``, reduced ten-fold after ``patience_epochs`` epochs without a better
    :data:`MONITOR`: the dict a LightningModule's ``configure_optimizers`` returns."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.1, patience=patience_epochs
    )
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "monitor": MONITOR, "interval": "epoch"},
    }
