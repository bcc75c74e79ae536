"""Labeller data at the site: cache rows as tensors, and batched augmentation.

Augmentation follows Segal et al. §3.3 for one channel: rotation within ±10°,
horizontal flip with p = 0.5, brightness and contrast jitter of 0.1 (the
grey-level equivalents of torchvision's ``ColorJitter``: brightness multiplies by
a factor in [0.9, 1.1], contrast blends towards the image mean by a factor in
[0.9, 1.1]). It runs on whole batches on the training device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from site_node.data.cache import SiteCache

__all__ = ["CacheSplitDataset", "augment_batch", "class_weights", "to_network_range"]


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


def to_network_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 1, R, R]`` → float32 in [-1, 1] (the contract: ``x / 127.5 - 1``)."""
    return images_uint8.float() / 127.5 - 1.0


def class_weights(labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Guendel et al.'s weights per class: ``w_P = (N_p + N_n) / N_p``, ``w_N = (N_p + N_n) / N_n``.

    A class without positives (or negatives) gets the count 1 in the denominator;
    its weight never multiplies a term then.
    """
    labels = np.asarray(labels, dtype=np.float64)
    total = float(labels.shape[0])
    positives = labels.sum(axis=0)
    negatives = total - positives
    w_pos = total / np.maximum(positives, 1.0)
    w_neg = total / np.maximum(negatives, 1.0)
    return torch.tensor(w_pos, dtype=torch.float32), torch.tensor(w_neg, dtype=torch.float32)


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
