"""The Lightning module of a pooled classifier: the labeller's DenseNet, masked weighted BCE.

The network is :class:`shared.networks.labeller.Labeller` (DenseNet-121 over one channel
by default; the classifier is configured exactly as the labeller), composed, never
subclassed, so that sites and the hub rebuild it without Lightning. Loss: masked
weighted binary cross entropy (:mod:`shared.masked_loss`), so a label an image's site
never annotated adds neither loss nor gradient. Optimiser: Adam, lr reduced ten-fold
when the validation macro AUC (over annotated rows only) stops improving.

Augmentation (on by default, Segal et al. §3.3 for one channel): rotation within ±10°,
horizontal flip p = 0.5, brightness and contrast factors in [0.9, 1.1].
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from shared.masked_loss import masked_weighted_bce_with_logits
from shared.networks.labeller import Labeller, LabellerConfig
from shared.stats import roc_auc

__all__ = ["MONITOR", "PooledClassifierModule", "augment", "masked_macro_auc", "to_network_range"]

MONITOR = "val_macro_auc"


def to_network_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 1, R, R]`` → float32 in [-1, 1] (``x / 127.5 - 1``)."""
    return images_uint8.float() / 127.5 - 1.0


def augment(
    x: torch.Tensor, max_rotation_deg: float = 10.0, flip_p: float = 0.5, jitter: float = 0.1
) -> torch.Tensor:
    """Random rotation, horizontal flip, brightness and contrast of ``[N, 1, R, R]`` in [-1, 1]."""
    n, device = x.shape[0], x.device
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_rotation_deg)
    mirror = torch.where(torch.rand(n, device=device) < flip_p, -1.0, 1.0)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros(n, device=device)
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, zero], 1), torch.stack([sin * mirror, cos, zero], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x01 = F.grid_sample((x + 1) / 2, grid, padding_mode="zeros", align_corners=False)
    brightness = 1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * jitter
    contrast = 1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * jitter
    x01 = (x01 * brightness).clamp(0, 1)
    mean = x01.mean(dim=(1, 2, 3), keepdim=True)
    return ((x01 - mean) * contrast + mean).clamp(0, 1) * 2 - 1


def masked_macro_auc(labels: np.ndarray, mask: np.ndarray, logits: np.ndarray) -> float:
    """Mean ROC AUC over classes, each over its annotated rows; NaN when none is defined."""
    aucs = []
    for c in range(labels.shape[1]):
        rows = mask[:, c] > 0
        y = labels[rows, c]
        if 0 < y.sum() < len(y):
            aucs.append(roc_auc(y, logits[rows, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


class PooledClassifierModule(pl.LightningModule):
    """Trains a classifier on archive batches ``(uint8 images, labels, masks)``."""

    def __init__(
        self,
        cfg: LabellerConfig,
        w_pos: torch.Tensor,
        w_neg: torch.Tensor,
        *,
        lr: float = 1e-3,
        lr_patience_epochs: int = 2,
        use_augmentation: bool = True,
    ):
        super().__init__()
        self.classifier = Labeller(cfg)
        self.w_pos: torch.Tensor
        self.w_neg: torch.Tensor
        self.register_buffer("w_pos", w_pos.float().clone())
        self.register_buffer("w_neg", w_neg.float().clone())
        self.lr = lr
        self.lr_patience_epochs = lr_patience_epochs
        self.use_augmentation = use_augmentation
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def loss(
        self, images: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked weighted BCE of a batch, and its logits."""
        x = to_network_range(images)
        if train and self.use_augmentation:
            x = augment(x)
        logits = self.classifier(x)
        return masked_weighted_bce_with_logits(
            logits, targets, mask, self.w_pos, self.w_neg
        ), logits

    def training_step(self, batch, batch_idx: int):
        images, targets, mask = batch
        loss, _ = self.loss(images, targets, mask, train=True)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx: int):
        images, targets, mask = batch
        loss, logits = self.loss(images, targets, mask, train=False)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        self._val.append((logits.detach().float().cpu(), targets.cpu(), mask.cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        logits, labels, mask = (torch.cat(parts).numpy() for parts in zip(*self._val, strict=True))
        self._val.clear()
        auc = masked_macro_auc(labels, mask, logits)
        self.log(MONITOR, 0.5 if np.isnan(auc) else auc, prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.classifier.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.1, patience=self.lr_patience_epochs
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": MONITOR, "interval": "epoch"},
        }
