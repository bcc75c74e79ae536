"""SSIM (shared.metrics.ssim) against scikit-image on real chest X-rays, both window types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from shared.errors import ConfigError, DataError
from shared.metrics.ssim import (
    SSIM,
    SSIMSettings,
    compute_ssim,
    pairwise_ssim,
    ssim_map,
    window_stats,
)

NUM_PAIRS = 200

# Our settings and the scikit-image keywords that mean the same.
WINDOWS = {
    "uniform": (SSIMSettings(), {}),
    "gaussian": (
        SSIMSettings(window="gaussian"),
        {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},
    ),
}


def _load(folder: Path, count: int) -> np.ndarray:
    names = sorted(p.name for p in (folder / "images").iterdir())[:count]
    return np.stack([np.asarray(Image.open(folder / "images" / n).convert("L")) for n in names])


@pytest.fixture(scope="module")
def real_pairs(site_a: Path, site_b: Path) -> tuple[np.ndarray, np.ndarray]:
    """200 pairs of real 256² radiographs: 100 within site A, 100 within site B (uint8)."""
    half = NUM_PAIRS // 2
    a, b = _load(site_a, 2 * half), _load(site_b, 2 * half)
    return np.concatenate([a[:half], b[:half]]), np.concatenate([a[half:], b[half:]])


def _skimage(x: np.ndarray, y: np.ndarray, **kwargs: object) -> np.ndarray:
    pairs = zip(x, y, strict=True)
    return np.array([structural_similarity(a, b, data_range=255, **kwargs) for a, b in pairs])


@pytest.fixture(scope="module")
def skimage_ssim(real_pairs) -> dict[str, np.ndarray]:
    """scikit-image's SSIM of every real pair, per window, computed once for this module."""
    return {name: _skimage(*real_pairs, **kwargs) for name, (_, kwargs) in WINDOWS.items()}


@pytest.mark.realdata
@pytest.mark.parametrize("window", ["uniform", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage_on_real_pairs(real_pairs, skimage_ssim, window, dtype):
    x, y = real_pairs
    settings, _ = WINDOWS[window]
    expected = skimage_ssim[window]
    got = compute_ssim(x, y, settings, dtype=dtype).numpy()
    max_diff = np.abs(got - expected).max()
    print(f"\n{window} {dtype}: max |dSSIM| over {len(x)} real pairs = {max_diff:.2e}")
    assert got.shape == (NUM_PAIRS,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.realdata
@pytest.mark.parametrize("sample_covariance", [True, False])
def test_gaussian_covariance_normalisation_matches_skimage(real_pairs, sample_covariance):
    x, y = real_pairs[0][:8], real_pairs[1][:8]
    settings = SSIMSettings(window="gaussian", use_sample_covariance=sample_covariance)
    expected = _skimage(x, y, gaussian_weights=True, use_sample_covariance=sample_covariance)
    np.testing.assert_allclose(compute_ssim(x, y, settings).numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.realdata
def test_float_images_in_minus_one_one_with_data_range(real_pairs):
    x, y = (pair[:8].astype(np.float32) / 127.5 - 1 for pair in real_pairs)
    pairs = zip(x, y, strict=True)
    expected = np.array([structural_similarity(a, b, data_range=2.0) for a, b in pairs])
    got = SSIM(data_range=2.0)(torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None])
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.realdata
@pytest.mark.parametrize("window", ["uniform", "gaussian"])
def test_ssim_map_is_skimage_full_map_without_its_border(real_pairs, window):
    x, y = real_pairs[0][:3], real_pairs[1][:3]
    settings, sk_kwargs = WINDOWS[window]
    border = settings.border_px
    got = ssim_map(x, y, settings).numpy()
    for i in range(3):
        _, full = structural_similarity(x[i], y[i], data_range=255, full=True, **sk_kwargs)
        np.testing.assert_allclose(got[i], full[border:-border, border:-border], atol=1e-10)


@pytest.mark.realdata
def test_pairwise_ssim_matches_skimage_for_every_pair(real_pairs):
    x, y = real_pairs[0][:3], real_pairs[1][:4]
    got = pairwise_ssim(window_stats(x), window_stats(y)).numpy()
    expected = np.array([[structural_similarity(a, b, data_range=255) for b in y] for a in x])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_window_sizes_follow_skimage():
    assert SSIMSettings().window_px == 7
    assert SSIMSettings(window="gaussian").window_px == 2 * int(3.5 * 1.5 + 0.5) + 1 == 11
    assert SSIMSettings(win_size=9).border_px == 4
    assert SSIMSettings().cov_norm == pytest.approx(49 / 48)
    assert SSIMSettings(window="gaussian").cov_norm == 1.0


def test_float_input_without_data_range_is_refused():
    x = np.zeros((1, 16, 16), dtype=np.float32)
    with pytest.raises(ConfigError, match="data_range is required"):
        compute_ssim(x, x)


def test_unknown_window_names_the_valid_ones():
    with pytest.raises(ConfigError, match="did you mean 'gaussian'"):
        SSIMSettings(window="gausian")


def test_images_smaller_than_the_window_are_refused():
    with pytest.raises(DataError, match="smaller than the window"):
        compute_ssim(np.zeros((1, 5, 5), np.uint8), np.zeros((1, 5, 5), np.uint8))
