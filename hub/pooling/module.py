"""The Lightning module of a pooled classifier: the labeller's DenseNet, masked weighted BCE.

The network is :class:`shared.networks.labeller.Labeller` (DenseNet-121 over one channel
by default; the classifier is configured exactly as the labeller), composed, never
subclassed, so that sites and the hub rebuild it without Lightning. Loss: masked
weighted binary cross entropy (:mod:`shared.masked_loss`), so a label an image's site
never annotated adds neither loss nor gradient. Optimiser: Adam, lr reduced ten-fold
when the validation macro AUC (over annotated rows only) stops improving.

Augmentation (on by default, Segal et al. §3.3 for one channel): rotation within ±10°,
horizontal flip p = 0.5, brightness and contrast factors in [0.9, 1.1]; the recipe (input
range, augmentation, optimiser) is a site labeller's, from :mod:`shared.classifier_recipe`.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from shared.classifier_recipe import MONITOR, adam_with_plateau, augment_batch, to_network_range
from shared.masked_loss import masked_weighted_bce_with_logits
from shared.networks.labeller import Labeller, LabellerConfig
from shared.stats import roc_auc

__all__ = ["PooledClassifierModule", "masked_macro_auc"]


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
            x = augment_batch(x)
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
        return adam_with_plateau(self.classifier.parameters(), self.lr, self.lr_patience_epochs)
