"""Real images for PGGAN: uint8 → [-1, 1], faded reals and derived resolutions against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from shared.errors import CacheError
from site_node.data.cache import SiteCache, write_cache
from site_node.pggan.reals import RealImages, fade_reals, uint8_to_float
from site_node.pggan.sampling import to_uint8


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    n, h, w = x.shape
    return x.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


@pytest.fixture
def small_cache(tmp_path: Path) -> SiteCache:
    rng = np.random.default_rng(0)
    images32 = rng.integers(0, 256, size=(6, 32, 32), dtype=np.uint8)
    images8 = np.round(_block_mean(images32.astype(np.float64), 4)).astype(np.uint8)
    table = pd.DataFrame(
        {
            "image_index": [f"{i:08d}_000.png" for i in range(6)],
            "patient_id": ["1", "1", "2", "3", "4", "5"],
            "split": ["train", "train", "val", "train", "test", "train"],
            "No Finding": [1, 0, 1, 1, 0, 1],
        }
    )
    write_cache(tmp_path / "cache", {8: images8, 32: images32}, table, ["No Finding"])
    return SiteCache(tmp_path / "cache")


def test_uint8_round_trip_is_exact() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x = uint8_to_float(pixels)
    assert x.shape == (1, 1, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x.min(), torch.tensor(-1.0))
    torch.testing.assert_close(x.max(), torch.tensor(1.0))
    np.testing.assert_array_equal(to_uint8(x), pixels)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_fade_reals_matches_numpy(alpha: float) -> None:
    x = np.random.default_rng(1).uniform(-1, 1, size=(3, 8, 8))
    low = np.kron(_block_mean(x, 2), np.ones((2, 2)))  # 2×2 mean, nearest upsampled
    expected = (1 - alpha) * low + alpha * x
    got = fade_reals(torch.from_numpy(x)[:, None], alpha)[:, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_real_images_serve_the_train_split_at_every_resolution(small_cache: SiteCache) -> None:
    reals = RealImages(small_cache, 32)
    assert len(reals) == 4
    train_rows = np.array([0, 1, 3, 5])
    positions = np.array([3, 0, 2])
    source = small_cache.images(32)[train_rows[positions]].astype(np.float64) / 127.5 - 1
    # 32 px: straight from the cache.
    np.testing.assert_allclose(reals.batch(positions, 5)[:, 0].numpy(), source, rtol=0, atol=1e-6)
    # 16 px is not cached: 2×2 means of the 32 px images.
    np.testing.assert_allclose(
        reals.batch(positions, 4)[:, 0].numpy(), _block_mean(source, 2), rtol=0, atol=1e-6
    )
    # 8 px is cached: the cache's own images.
    cached8 = small_cache.images(8)[train_rows[positions]].astype(np.float64) / 127.5 - 1
    np.testing.assert_allclose(reals.batch(positions, 3)[:, 0].numpy(), cached8, rtol=0, atol=1e-6)
    # 4 px: from the 8 px cache level.
    np.testing.assert_allclose(
        reals.batch(positions, 2)[:, 0].numpy(), _block_mean(cached8, 2), rtol=0, atol=1e-6
    )


def test_horizontal_flips_mirror_the_chosen_images(small_cache: SiteCache) -> None:
    reals = RealImages(small_cache, 32)
    positions = np.array([0, 1, 2])
    plain = reals.batch(positions, 5)[:, 0].numpy()
    flipped = reals.batch(positions, 5, flips=torch.tensor([True, False, True]))[:, 0].numpy()
    np.testing.assert_array_equal(flipped[0], plain[0][:, ::-1])
    np.testing.assert_array_equal(flipped[1], plain[1])
    np.testing.assert_array_equal(flipped[2], plain[2][:, ::-1])


def test_real_images_need_a_large_enough_cache(small_cache: SiteCache) -> None:
    with pytest.raises(CacheError, match=r"64px.*cached: \[8, 32\]"):
        RealImages(small_cache, 64)
