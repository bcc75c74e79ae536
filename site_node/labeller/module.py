"""The Lightning module that trains a :class:`~shared.networks.labeller.Labeller`.

Loss: Guendel et al.'s weighted binary cross entropy (Segal et al. eq. 3), per class
``-(w_P y log p + w_N (1 - y) log(1 - p))``, averaged over classes and images.
Optimiser: Adam, lr 1e-3, reduced ten-fold when the validation macro ROC AUC stops
improving. The network is composed, never subclassed: the hub loads it without Lightning.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from shared.classifier_recipe import MONITOR, adam_with_plateau, augment_batch, to_network_range
from shared.networks.labeller import Labeller, LabellerConfig
from shared.stats import macro_roc_auc

__all__ = ["LabellerModule", "weighted_bce_with_logits"]


def weighted_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor
) -> torch.Tensor:
    """Mean of ``-(w_P y log σ(l) + w_N (1 - y) log(1 - σ(l)))`` over ``[N, C]``."""
    weight = targets * w_pos + (1 - targets) * w_neg
    return F.binary_cross_entropy_with_logits(logits, targets, weight=weight)


class LabellerModule(pl.LightningModule):
    """Trains a labeller; logs ``train_loss``, ``val_loss`` and ``val_macro_auc``."""

    w_pos: torch.Tensor
    w_neg: torch.Tensor

    def __init__(
        self,
        cfg: LabellerConfig,
        w_pos: torch.Tensor,
        w_neg: torch.Tensor,
        *,
        lr: float = 1e-3,
        lr_patience_epochs: int = 2,
        augment: dict[str, float] | None = None,
    ):
        super().__init__()
        self.labeller = Labeller(cfg)
        self.register_buffer("w_pos", w_pos.float().clone())
        self.register_buffer("w_neg", w_neg.float().clone())
        self.lr = lr
        self.lr_patience_epochs = lr_patience_epochs
        self.augment = dict(augment or {})
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.labeller(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, targets = batch
        x = augment_batch(to_network_range(images), **self.augment)
        loss = weighted_bce_with_logits(self.labeller(x), targets, self.w_pos, self.w_neg)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, targets = batch
        logits = self.labeller(to_network_range(images))
        loss = weighted_bce_with_logits(logits, targets, self.w_pos, self.w_neg)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        self._val_logits.append(logits.detach().float().cpu())
        self._val_labels.append(targets.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_logits:
            return
        logits = torch.cat(self._val_logits).numpy()
        labels = torch.cat(self._val_labels).numpy()
        self._val_logits.clear()
        self._val_labels.clear()
        auc = macro_roc_auc(labels, logits)
        self.log(MONITOR, 0.5 if np.isnan(auc) else auc, prog_bar=True)

    def configure_optimizers(self):
        return adam_with_plateau(self.labeller.parameters(), self.lr, self.lr_patience_epochs)
