"""Real training images for PGGAN: the cache's train split, per resolution, faded like the fakes.

Images come from :class:`site_node.data.cache.SiteCache` (uint8 ``[N, R, R]`` memmaps) and
leave here as ``[B, 1, R, R]`` float32 in [-1, 1] (``x / 127.5 - 1``). A resolution the
cache lacks is made from the nearest larger cached one by 2×2 average pooling (how
Karras et al.'s dataset tool built its levels). During a fade phase the reals are faded
too (Karras et al.'s ``process_reals``): ``lerp(upsample(avg_pool(x)), x, alpha)``.

Which images a step sees is a pure function of ``(seed, cur_nimg)``: image number
``cur_nimg + i`` is position ``(cur_nimg + i) mod N`` of the permutation of data epoch
``(cur_nimg + i) // N``. Every image is shown once per data epoch, and a resumed run draws
exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import CacheError
from shared.networks.layers import lerp_fade
from site_node.data.cache import SiteCache

__all__ = ["RealImages", "batch_positions", "fade_reals", "uint8_to_float"]


def uint8_to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, R, R]`` → float32 ``[B, 1, R, R]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0).unsqueeze(1)


def fade_reals(images: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blend images with their 2×-downsampled, upsampled copies: ``lerp(low, images, alpha)``."""
    if alpha >= 1.0:
        return images
    low = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="nearest")
    return lerp_fade(low, images, alpha)


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, data_epoch: int, num_images: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x5EED, data_epoch])))
    return rng.permutation(num_images)


def batch_positions(seed: int, cur_nimg: int, batch_size: int, num_images: int) -> np.ndarray:
    """Positions (``0..num_images-1``) of images number ``cur_nimg .. cur_nimg+batch_size-1``."""
    image_numbers = np.arange(cur_nimg, cur_nimg + batch_size, dtype=np.int64)
    data_epochs, offsets = np.divmod(image_numbers, num_images)
    positions = np.empty(batch_size, dtype=np.int64)
    for data_epoch in np.unique(data_epochs):
        mask = data_epochs == data_epoch
        positions[mask] = _permutation(seed, int(data_epoch), num_images)[offsets[mask]]
    return positions


class RealImages:
    """The train split of a cache, served at every resolution up to ``resolution_px``."""

    def __init__(self, cache: SiteCache, resolution_px: int, split: str = "train"):
        self.cache = cache
        self.rows = cache.indices(split)
        if len(self.rows) == 0:
            raise CacheError(f"{cache.path}: split {split!r} has no images")
        cached = sorted(cache.manifest.resolutions_px)
        if not cached or cached[-1] < resolution_px:
            raise CacheError(
                f"{cache.path}: training at {resolution_px}px needs images at >= {resolution_px}px;"
                f" cached: {cached}"
            )
        self.resolution_px = resolution_px
        self._cached = cached
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _source(self, res_px: int) -> tuple[int, np.ndarray]:
        source_px = next(r for r in self._cached if r >= res_px)
        if source_px not in self._arrays:
            self._arrays[source_px] = self.cache.images(source_px)
        return source_px, self._arrays[source_px]

    def batch(
        self,
        positions: np.ndarray,
        res_log2: int,
        alpha: float = 1.0,
        flips: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images at ``positions`` of the split, ``[B, 1, 2**res_log2, 2**res_log2]``, faded;
        those where the bool ``flips[B]`` is True mirrored left-right."""
        res_px = 2**res_log2
        source_px, array = self._source(res_px)
        images = uint8_to_float(array[self.rows[positions]])
        if source_px != res_px:
            images = F.avg_pool2d(images, source_px // res_px)
        if flips is not None:
            images = torch.where(flips[:, None, None, None], images.flip(3), images)
        return fade_reals(images, alpha)
