"""Labeller data at the site: cache rows as tensors, and Guendel et al.'s class weights.

The input range and the batched augmentation (Segal et al. §3.3) are in
:mod:`shared.classifier_recipe`, shared with the hub's pooled classifier.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.masked_loss import masked_class_weights
from site_node.data.cache import SiteCache

__all__ = ["CacheSplitDataset", "class_weights"]


class CacheSplitDataset(Dataset):
    """Rows of one split of a :class:`SiteCache`: ``(uint8 [1, R, R], float32 [C])``."""

    def __init__(self, cache: SiteCache, split: str, resolution_px: int, class_names: list[str]):
        self.rows = cache.indices(split)
        self.images = cache.images(resolution_px)
        columns = [cache.label_space.index(name) for name in class_names]
        self.labels = cache.labels(split)[:, columns]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(self.images[self.rows[i]], dtype=np.uint8))
        return image[None], torch.from_numpy(self.labels[i])


def class_weights(labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Guendel et al.'s weights per class: ``w_P = (N_p + N_n) / N_p``, ``w_N = (N_p + N_n) / N_n``.

    A class without positives (or negatives) gets the count 1 in the denominator;
    its weight never multiplies a term then.
    """
    labels = np.asarray(labels, dtype=np.float64)
    return masked_class_weights(labels, np.ones_like(labels))  # every label annotated
