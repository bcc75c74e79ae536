"""Fused exact SSIM of one image against many (numba, CPU), and an exact upper bound for pruning.

The kernel computes scikit-image's mean SSIM (``shared.metrics.ssim``, same
window, ``data_range``, K1, K2, covariance factor and border crop) of every
requested (query, real) pair of 8-bit images without full-size temporaries.
Per pair it walks the valid window rows once: a column accumulator of the
products ``x y`` over the window's rows (updated by one entering and one
leaving image row), the horizontal window sum of that accumulator, and the
SSIM of each window of the row, summed into the pair's mean. The window moments
of every image (local sums and variances) are computed once per image
(:func:`fused_stats`) and reused for every pair. Reals are spread over the
cores (``numba.prange``).

Uniform window, exact in integers: with ``S`` the window sum of an image,
``n = win²`` and ``Q = n Σx² - S²`` (both integers for 8-bit images), the
sample covariance of a pair is ``cov_norm (n Σxy - Sx Sy) / n²`` and::

    SSIM_w = (2 Sx Sy + n² C1) (2 N_xy + n² C2 / cov_norm)
             -------------------------------------------------,   N_xy = n Σxy - Sx Sy,
             (Sx² + Sy² + n² C1) (Qx + Qy + n² C2 / cov_norm)

which is Wang et al.'s formula multiplied through by ``n²``; every sum is an
exact integer (float32 holds them exactly below 2²⁴, float64 does the rest), so
the only rounding is in the final quotient.

Gaussian window: the separable 11-tap weights of ``SSIMSettings.kernel_1d`` on
images centred on their own mean (as ``shared.metrics.ssim``), float32 window
sums, float64 quotient; a ring of the last ``win`` product rows feeds the
vertical pass.

Upper bound (:func:`pair_bounds`). For images with non-negative intensities,
each window's SSIM is ``l_w cs_w`` with the luminance term
``l_w = (2 mx my + C1) / (mx² + my² + C1)`` in ``(0, 1]`` and, because the
weighted covariance is an inner product of the centred patches,
``sigma_xy <= sigma_x sigma_y`` (Cauchy–Schwarz), so
``cs_w <= c_w = (2 sx sy + C2) / (sx² + sy² + C2)`` in ``(0, 1]``. Hence
``SSIM_w <= l_w c_w``. The windows are grouped in blocks of ``block`` × ``block``;
per image and block the range ``[min, max]`` of the local mean and of the
local standard deviation is stored once. Over a block,
``f(a, b) = (2ab + C) / (a² + b² + C) = 1 - (a-b)² / (a² + b² + C)`` is, for
``a, b >= 0``, increasing in ``b`` for ``b < a`` and decreasing for ``b > a``
(``∂/∂b (a-b)²/(a²+b²+C)`` has the sign of ``(b - a)(a² + ab + C)``), so its
largest value over two intervals is at their closest points (1 if they
overlap). With ``L_b`` and ``C_b`` these maxima for the block's means and
standard deviations, ``mean_w SSIM_w <= Σ_b n_b L_b C_b / N`` (``n_b`` windows in
block ``b``, ``N`` in all): an upper bound of the pair's mean SSIM from per-image
numbers only, which the search uses to skip pairs that cannot enter a top-k.

Shapes: images ``[N, H, W]`` uint8; statistics on the valid region
``[N, H - win + 1, W - win + 1]``.
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from shared.errors import ConfigError, DataError
from shared.metrics.ssim import SSIMSettings, SSIMWindow


def _load_numba() -> Any:
    """The numba module, or None where it cannot be imported (the torch search then runs)."""
    try:
        return importlib.import_module("numba")
    except ImportError:  # pragma: no cover - exercised only without numba
        return None


numba: Any = _load_numba()
NUMBA_AVAILABLE = numba is not None
prange = numba.prange if NUMBA_AVAILABLE else range

_F = TypeVar("_F", bound=Callable[..., Any])

#: numba's default (workqueue) threading layer aborts the process when two Python threads
#: launch parallel kernels at once (e.g. two audits in one Flower process): one at a time.
_KERNEL_LOCK = threading.Lock()


def _jit(parallel: bool = False) -> Callable[[_F], _F]:
    """``numba.njit`` with the kernels' flags; the plain function where numba is missing.

    Flags: fused multiply-add and reassociation (vectorised sums) but IEEE division;
    ``error_model="numpy"`` drops Python's zero-division check, which would keep every
    loop with a division scalar (4x slower); compiled code is cached on disk.
    """
    if not NUMBA_AVAILABLE:  # pragma: no cover
        return lambda function: function
    return numba.njit(  # type: ignore[no-any-return]
        parallel=parallel,
        cache=True,
        fastmath={"contract", "reassoc", "nsz"},
        error_model="numpy",
    )


__all__ = [
    "BLOCK_WINDOWS",
    "MAX_UNIFORM_WIN",
    "NUMBA_AVAILABLE",
    "FusedStats",
    "fused_pairwise_ssim",
    "fused_stats",
    "fused_supported",
    "pair_bounds",
    "set_threads",
]

#: Side of the window blocks of the upper bound (block × block windows per block).
BLOCK_WINDOWS = 4
#: Largest uniform window whose integer sums fit in int32 (n² 255² Σ < 2³¹).
MAX_UNIFORM_WIN = 13


def fused_supported(settings: SSIMSettings, dtype: np.dtype | str) -> str | None:
    """Why the fused kernel cannot run these images and settings, or None when it can."""
    if not NUMBA_AVAILABLE:
        return "numba is not installed"
    if np.dtype(dtype) != np.uint8:
        return f"images are {np.dtype(dtype)}, the fused kernel takes uint8"
    if settings.data_range not in (None, 255, 255.0):
        return f"data_range={settings.data_range}, the fused kernel assumes 255 for uint8"
    if settings.window is SSIMWindow.UNIFORM and settings.window_px > MAX_UNIFORM_WIN:
        return f"uniform window {settings.window_px} > {MAX_UNIFORM_WIN} overflows int32 sums"
    return None


def set_threads(threads: int | None) -> int:
    """Use ``threads`` numba threads (None: all cores numba sees); returns the number in use."""
    if numba is None:
        return 1
    count = numba.config.NUMBA_NUM_THREADS if threads is None else threads
    numba.set_num_threads(max(1, min(int(count), numba.config.NUMBA_NUM_THREADS)))
    return int(numba.get_num_threads())


@dataclass
class FusedStats:
    """Per-image window statistics for the fused kernel, computed once per image.

    ``images`` uint8 ``[N, H, W]``. Uniform: ``first`` the window sums ``S`` (exact
    in float32) and ``second`` ``n Σx² - S²`` (exact integers, rounded once to
    float32). Gaussian: ``first`` the weighted local mean of the centred image,
    ``second`` the local variance times ``cov_norm`` (float32) and ``offset`` each
    image's mean (float64 ``[N]``).
    ``bound_mean`` / ``bound_std`` hold the per-block [min, max] of the local mean and
    standard deviation, float64 ``[N, 2, hb, wb]``.
    """

    images: np.ndarray
    first: np.ndarray
    second: np.ndarray
    offset: np.ndarray
    bound_mean: np.ndarray
    bound_std: np.ndarray
    settings: SSIMSettings

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ---------------------------------------------------------------------------- per-image stats


@_jit(parallel=True)
def _uniform_image_stats(images, win):  # type: ignore[no-untyped-def]
    """Window sums ``S`` and ``n Σx² - S²`` of every image (float32; see :class:`FusedStats`).

    Column and window sums of 8-bit pixels and their squares are integers below 2²⁴
    (exact in float32); ``n Σx² - S²`` is formed in float64, exactly, then rounded.
    """
    count, height, width = images.shape
    out_h, out_w = height - win + 1, width - win + 1
    sums = np.empty((count, out_h, out_w), np.float32)
    second = np.empty((count, out_h, out_w), np.float32)
    num = np.float64(win * win)
    for n in prange(count):
        col = np.zeros(width, np.float32)
        col2 = np.zeros(width, np.float32)
        row = np.zeros(out_w, np.float32)
        row2 = np.zeros(out_w, np.float32)
        for r in range(win - 1):
            pixels = images[n, r]
            for j in range(width):
                v = np.float32(pixels[j])
                col[j] += v
                col2[j] += v * v
        for i in range(out_h):
            entering, leaving = images[n, i + win - 1], images[n, i]
            for j in range(width):
                v = np.float32(entering[j])
                col[j] += v
                col2[j] += v * v
            for j in range(out_w):
                row[j] = col[j]
                row2[j] = col2[j]
            for t in range(1, win):
                for j in range(out_w):
                    row[j] += col[j + t]
                    row2[j] += col2[j + t]
            sums_row, second_row = sums[n, i], second[n, i]
            for j in range(out_w):
                s = np.float64(row[j])
                sums_row[j] = row[j]
                second_row[j] = np.float32(num * np.float64(row2[j]) - s * s)
            for j in range(width):
                v = np.float32(leaving[j])
                col[j] -= v
                col2[j] -= v * v
    return sums, second


@_jit(parallel=True)
def _gaussian_image_stats(images, weights, offset, cov_norm):  # type: ignore[no-untyped-def]
    """Local means of the centred images and ``cov_norm`` × local variances (float32).

    ``offset[n]`` (a float32 value) is subtracted from every pixel of image ``n``, as the
    pair kernel does; separable weighted sums, vertical then horizontal.
    """
    count, height, width = images.shape
    win = weights.shape[0]
    out_h, out_w = height - win + 1, width - win + 1
    means = np.empty((count, out_h, out_w), np.float32)
    second = np.empty((count, out_h, out_w), np.float32)
    for n in prange(count):
        centre = np.float32(offset[n])
        col = np.zeros(width, np.float32)
        col2 = np.zeros(width, np.float32)
        for i in range(out_h):
            for j in range(width):
                col[j] = np.float32(0.0)
                col2[j] = np.float32(0.0)
            for t in range(win):
                w = weights[t]
                for j in range(width):
                    v = np.float32(images[n, i + t, j]) - centre
                    col[j] += w * v
                    col2[j] += w * (v * v)
            for j in range(out_w):
                m = np.float32(0.0)
                m2 = np.float32(0.0)
                for t in range(win):
                    m += weights[t] * col[j + t]
                    m2 += weights[t] * col2[j + t]
                means[n, i, j] = m
                second[n, i, j] = np.float32(cov_norm * (np.float64(m2) - np.float64(m) * m))
    return means, second


@_jit(parallel=True)
def _bound_ranges(first, second, offset, mean_scale, var_scale, block):  # type: ignore[no-untyped-def]
    """Per-block [min, max] of the local mean and standard deviation.

    Local mean ``first * mean_scale + offset[n]``, variance ``second * var_scale``
    (clipped at 0); returns two float64 ``[N, 2, ceil(h / block), ceil(w / block)]``.
    """
    count, height, width = first.shape
    hb, wb = (height + block - 1) // block, (width + block - 1) // block
    means = np.empty((count, 2, hb, wb), np.float64)
    stds = np.empty((count, 2, hb, wb), np.float64)
    for n in prange(count):
        m_lo = np.empty(width, np.float32)
        m_hi = np.empty(width, np.float32)
        v_lo = np.empty(width, np.float32)
        v_hi = np.empty(width, np.float32)
        for bi in range(hb):
            # Column-wise extremes over the block's rows, then over each block's columns.
            for j in range(width):
                m_lo[j] = first[n, bi * block, j]
                m_hi[j] = m_lo[j]
                v_lo[j] = second[n, bi * block, j]
                v_hi[j] = v_lo[j]
            for i in range(bi * block + 1, min(height, (bi + 1) * block)):
                m_row, v_row = first[n, i], second[n, i]
                for j in range(width):
                    m, v = m_row[j], v_row[j]
                    m_lo[j] = m if m < m_lo[j] else m_lo[j]
                    m_hi[j] = m if m > m_hi[j] else m_hi[j]
                    v_lo[j] = v if v < v_lo[j] else v_lo[j]
                    v_hi[j] = v if v > v_hi[j] else v_hi[j]
            for bj in range(wb):
                lo, hi, lo2, hi2 = (
                    m_lo[bj * block],
                    m_hi[bj * block],
                    v_lo[bj * block],
                    v_hi[bj * block],
                )
                for j in range(bj * block + 1, min(width, (bj + 1) * block)):
                    lo = m_lo[j] if m_lo[j] < lo else lo
                    hi = m_hi[j] if m_hi[j] > hi else hi
                    lo2 = v_lo[j] if v_lo[j] < lo2 else lo2
                    hi2 = v_hi[j] if v_hi[j] > hi2 else hi2
                means[n, 0, bi, bj] = np.float64(lo) * mean_scale + offset[n]
                means[n, 1, bi, bj] = np.float64(hi) * mean_scale + offset[n]
                var_lo = np.float64(lo2) * var_scale
                var_hi = np.float64(hi2) * var_scale
                stds[n, 0, bi, bj] = np.sqrt(var_lo) if var_lo > 0.0 else 0.0
                stds[n, 1, bi, bj] = np.sqrt(var_hi) if var_hi > 0.0 else 0.0
    return means, stds


def fused_stats(images: np.ndarray, settings: SSIMSettings | None = None) -> FusedStats:
    """Window statistics and bound ranges of uint8 images ``[N, H, W]`` for the fused kernel.

    Raises:
        ConfigError: the kernel cannot run these settings (see :func:`fused_supported`).
        DataError: wrong shape or images smaller than the window.
    """
    settings = settings or SSIMSettings()
    images = np.ascontiguousarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise DataError(f"images must be [N, H, W] uint8, got shape {images.shape}")
    reason = fused_supported(settings, images.dtype)
    if reason is not None:
        raise ConfigError(f"fused SSIM kernel: {reason}")
    win = settings.window_px
    if min(images.shape[-2:]) < win:
        raise DataError(f"images {images.shape[-2:]} are smaller than the window")
    weights = _gaussian_weights(settings)
    offset = images.reshape(len(images), -1).mean(axis=1).astype(np.float32)
    with _KERNEL_LOCK:
        if settings.window is SSIMWindow.UNIFORM:
            first, second = _uniform_image_stats(images, win)
            offset = np.zeros(len(images), np.float32)
            mean_scale, var_scale = 1.0 / win**2, settings.cov_norm / win**4
        else:
            first, second = _gaussian_image_stats(images, weights, offset, settings.cov_norm)
            mean_scale, var_scale = 1.0, 1.0
        # Rounding of the float32 statistics moves the bound by ~1e-7 (BOUND_MARGIN covers it).
        bound_mean, bound_std = _bound_ranges(
            first, second, offset.astype(np.float64), mean_scale, var_scale, BLOCK_WINDOWS
        )
    offset = offset.astype(np.float64)
    return FusedStats(images, first, second, offset, bound_mean, bound_std, settings)


# ---------------------------------------------------------------------------- pair kernels


@_jit()
def _uniform_pair(x, y, sx, qx, sy, qy, win, k1, k2, col, row, bands, floor, block, first_row):  # type: ignore[no-untyped-def]
    """Mean SSIM of one pair, uniform window, from integer sums (see the module docstring).

    Products and window sums of 8-bit pixels are integers below 2²⁴, exact in
    float32; ``N_xy`` is formed in float64 (exact) and every factor is rounded once
    to float32; each row of window SSIMs is summed in float32 lanes, rows in float64.
    Window rows are visited from ``first_row`` down, then from the top (see
    :func:`_uniform_many`); ``-inf`` when abandoned below ``floor``.
    """
    out_h, out_w = sx.shape
    num_windows = np.float64(out_h * out_w)
    num = np.float64(win * win)
    two = np.float32(2.0)
    remaining = 0.0
    for b in range(bands.shape[0]):
        remaining += bands[b]
    total = 0.0
    for segment in range(2):
        lo, hi = (first_row, out_h) if segment == 0 else (0, first_row)
        if lo >= hi:
            continue
        col[:] = 0.0
        for r in range(lo, lo + win - 1):
            x_row, y_row = x[r], y[r]
            for j in range(x_row.shape[0]):
                col[j] += np.float32(x_row[j]) * np.float32(y_row[j])
        for i in range(lo, hi):
            x_row, y_row = x[i + win - 1], y[i + win - 1]
            for j in range(x_row.shape[0]):
                col[j] += np.float32(x_row[j]) * np.float32(y_row[j])
            for j in range(out_w):
                row[j] = col[j]
            for t in range(1, win):
                for j in range(out_w):
                    row[j] += col[j + t]
            a_row, b_row, qa_row, qb_row = sx[i], sy[i], qx[i], qy[i]
            row_total = np.float32(0.0)
            for j in range(out_w):
                a = a_row[j]
                b = b_row[j]
                nxy = np.float32(num * np.float64(row[j]) - np.float64(a) * np.float64(b))
                numerator = (two * a * b + k1) * (two * nxy + k2)
                denominator = (a * a + b * b + k1) * (qa_row[j] + qb_row[j] + k2)
                row_total += numerator / denominator
            total += np.float64(row_total)
            if (i + 1) % block == 0 or i + 1 == out_h:  # a band of window rows is done
                remaining -= bands[i // block]
                if total / num_windows + remaining < floor:
                    return -np.inf  # abandoned: even the bound of the rows left cannot reach floor
            x_row, y_row = x[i], y[i]
            for j in range(x_row.shape[0]):
                col[j] -= np.float32(x_row[j]) * np.float32(y_row[j])
    return total / num_windows


@_jit()
def _gaussian_pair(
    x, y, mx, vx, ox, my, vy, oy, weights, c1, c2, cov_norm, ring, col, row, bands, floor, block,
    first_row,
):  # type: ignore[no-untyped-def]  # fmt: skip
    """Mean SSIM of one pair, Gaussian window, centred float32 sums (``sigma_xy`` in float64)."""
    width = x.shape[1]
    out_h, out_w = mx.shape
    num_windows = np.float64(out_h * out_w)
    win = weights.shape[0]
    fx, fy = np.float32(ox), np.float32(oy)
    two = np.float32(2.0)
    remaining = 0.0
    for b in range(bands.shape[0]):
        remaining += bands[b]
    total = 0.0
    for segment in range(2):
        lo, hi = (first_row, out_h) if segment == 0 else (0, first_row)
        if lo >= hi:
            continue
        for r in range(lo, lo + win - 1):
            slot = ring[r % win]
            for j in range(width):
                slot[j] = (np.float32(x[r, j]) - fx) * (np.float32(y[r, j]) - fy)
        for i in range(lo, hi):
            r_in = i + win - 1
            slot = ring[r_in % win]
            x_row, y_row = x[r_in], y[r_in]
            for j in range(width):
                slot[j] = (np.float32(x_row[j]) - fx) * (np.float32(y_row[j]) - fy)
            col[:] = 0.0
            for t in range(win):
                w = weights[t]
                src = ring[(i + t) % win]
                for j in range(width):
                    col[j] += w * src[j]
            for j in range(out_w):
                row[j] = weights[0] * col[j]
            for t in range(1, win):
                w = weights[t]
                for j in range(out_w):
                    row[j] += w * col[j + t]
            a_row, b_row, va_row, vb_row = mx[i], my[i], vx[i], vy[i]
            row_total = np.float32(0.0)
            for j in range(out_w):
                a = a_row[j]
                b = b_row[j]
                sxy = np.float32(cov_norm * (np.float64(row[j]) - np.float64(a) * np.float64(b)))
                mu_x = a + fx
                mu_y = b + fy
                numerator = (two * mu_x * mu_y + c1) * (two * sxy + c2)
                denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (va_row[j] + vb_row[j] + c2)
                row_total += numerator / denominator
            total += np.float64(row_total)
            if (i + 1) % block == 0 or i + 1 == out_h:
                remaining -= bands[i // block]
                if total / num_windows + remaining < floor:
                    return -np.inf
    return total / num_windows


@_jit()
def _band_bounds(qm, qs, rm, rs, weights, c1, c2, bands):  # type: ignore[no-untyped-def]
    """``bands[b]``: the pair's bound summed over the blocks of block row ``b`` (``n_b / N``)."""
    hb, wb = weights.shape
    for bi in range(hb):
        q_lo, q_hi, r_lo, r_hi = qm[0, bi], qm[1, bi], rm[0, bi], rm[1, bi]
        s_lo, s_hi, t_lo, t_hi = qs[0, bi], qs[1, bi], rs[0, bi], rs[1, bi]
        row_weights = weights[bi]
        band = 0.0
        for bj in range(wb):
            lum = _closest_ratio(q_lo[bj], q_hi[bj], r_lo[bj], r_hi[bj], c1)
            con = _closest_ratio(s_lo[bj], s_hi[bj], t_lo[bj], t_hi[bj], c2)
            band += row_weights[bj] * lum * con
        bands[bi] = band


@_jit(parallel=True)
def _uniform_many(qi, qs, qq, ri, rs, rq, active, floors, bounds, win, k1, k2, out):  # type: ignore[no-untyped-def]
    """``out[t, u]`` = mean SSIM of query t and real u where ``active[t, u]``; reals in parallel.

    A pair is abandoned (``-inf``) once its exact partial sum plus the bound of the rows
    left is below ``floors[t]`` (``-inf``: never). Rows are visited from ``first_row``
    (a band a quarter of the way down: the lungs, where two radiographs differ and the
    bound is loosest) to the bottom, then from the top: the sum is the same, and pairs
    that cannot win are abandoned sooner than from the uniform top border down.
    """
    qbm, qbs, rbm, rbs, weights, c1, c2, block, first_row = bounds
    num_q, num_r = active.shape
    width = qi.shape[2]
    out_w = qs.shape[2]
    for u in prange(num_r):
        col = np.zeros(width, np.float32)
        row = np.zeros(out_w, np.float32)
        bands = np.zeros(weights.shape[0])
        for t in range(num_q):
            if active[t, u]:
                if floors[t] > -np.inf:
                    _band_bounds(qbm[t], qbs[t], rbm[u], rbs[u], weights, c1, c2, bands)
                out[t, u] = _uniform_pair(
                    qi[t], ri[u], qs[t], qq[t], rs[u], rq[u], win, k1, k2, col, row,
                    bands, floors[t], block, first_row,
                )  # fmt: skip


@_jit(parallel=True)
def _gaussian_many(
    qi, qm, qv, qo, ri, rm, rv, ro, active, floors, bounds, weights, c1, c2, cov_norm, out
):  # type: ignore[no-untyped-def]
    """Gaussian counterpart of :func:`_uniform_many`."""
    qbm, qbs, rbm, rbs, block_weights, c1b, c2b, block, first_row = bounds
    num_q, num_r = active.shape
    width = qi.shape[2]
    win = weights.shape[0]
    for u in prange(num_r):
        ring = np.zeros((win, width), np.float32)
        col = np.zeros(width, np.float32)
        row = np.zeros(width, np.float32)
        bands = np.zeros(block_weights.shape[0])
        for t in range(num_q):
            if active[t, u]:
                if floors[t] > -np.inf:
                    _band_bounds(qbm[t], qbs[t], rbm[u], rbs[u], block_weights, c1b, c2b, bands)
                out[t, u] = _gaussian_pair(
                    qi[t], ri[u], qm[t], qv[t], qo[t], rm[u], rv[u], ro[u], weights, c1, c2,
                    cov_norm, ring, col, row, bands, floors[t], block, first_row,
                )  # fmt: skip


def _gaussian_weights(settings: SSIMSettings) -> np.ndarray:
    """The normalised 1-D Gaussian taps of ``SSIMSettings.kernel_1d``, float32."""
    import torch

    return settings.kernel_1d(torch.float32, "cpu").numpy()


def _constants(settings: SSIMSettings) -> tuple[float, float]:
    data_range = 255.0
    return (settings.k1 * data_range) ** 2, (settings.k2 * data_range) ** 2


def fused_pairwise_ssim(
    queries: FusedStats,
    reals: FusedStats,
    active: np.ndarray | None = None,
    floors: np.ndarray | None = None,
) -> np.ndarray:
    """Mean SSIM of the pairs ``(queries[t], reals[u])`` with ``active[t, u]``: ``[Q, R]`` float64.

    Inactive pairs are left NaN. With ``floors`` (``[Q]``), a pair whose SSIM is provably
    below ``floors[t]`` may stop early and read ``-inf``: after each band of
    :data:`BLOCK_WINDOWS` window rows, its exact partial sum plus the bound of the rows
    left (:func:`pair_bounds`, by rows) is compared with the floor. Equals
    ``shared.metrics.ssim.pairwise_ssim`` (and scikit-image) to about 1e-7 otherwise.
    """
    if queries.settings != reals.settings or queries.images.shape[1:] != reals.images.shape[1:]:
        raise ConfigError("fused SSIM: queries and reals differ in settings or image size")
    shape = (len(queries), len(reals))
    active = np.ones(shape, np.bool_) if active is None else np.ascontiguousarray(active, np.bool_)
    floors = np.full(shape[0], -np.inf) if floors is None else np.asarray(floors, np.float64)
    out = np.full(shape, np.nan)
    settings = queries.settings
    c1, c2 = _constants(settings)
    out_h, out_w = queries.first.shape[-2:]
    bounds = (
        queries.bound_mean, queries.bound_std, reals.bound_mean, reals.bound_std,
        _block_weights(int(out_h), int(out_w)), c1, c2, BLOCK_WINDOWS,
        (int(out_h) // BLOCK_WINDOWS // 4) * BLOCK_WINDOWS,
    )  # fmt: skip
    win = settings.window_px
    n2 = float(win * win) ** 2
    weights = _gaussian_weights(settings)
    with _KERNEL_LOCK:
        if settings.window is SSIMWindow.UNIFORM:
            _uniform_many(
                queries.images, queries.first, queries.second,
                reals.images, reals.first, reals.second, active, floors, bounds,
                win, np.float32(n2 * c1), np.float32(n2 * c2 / settings.cov_norm), out,
            )  # fmt: skip
        else:
            _gaussian_many(
                queries.images, queries.first, queries.second, queries.offset,
                reals.images, reals.first, reals.second, reals.offset, active, floors, bounds,
                weights, np.float32(c1), np.float32(c2), settings.cov_norm, out,
            )  # fmt: skip
    return out


# ---------------------------------------------------------------------------- upper bound


@_jit()
def _closest_ratio(a1, a2, b1, b2, c):  # type: ignore[no-untyped-def]
    """max of (2ab + c) / (a² + b² + c) over a in [a1, a2], b in [b1, b2] (all >= 0).

    The closest points of the two intervals (equal points, ratio 1, if they overlap);
    written with conditional expressions, which vectorise (``min``/``max`` do not).
    """
    a = b1 if b1 > a1 else a1
    a = a if a < a2 else a2
    b = a if a > b1 else b1
    b = b if b < b2 else b2
    return (2.0 * a * b + c) / (a * a + b * b + c)


@_jit(parallel=True)
def _pair_bounds(qm, qs, rm, rs, weights, c1, c2, out):  # type: ignore[no-untyped-def]
    """``out[t, u] = Σ_b weights_b L_b C_b`` for every pair (module docstring)."""
    num_q, num_r = out.shape
    for u in prange(num_r):
        bands = np.zeros(weights.shape[0])
        for t in range(num_q):
            _band_bounds(qm[t], qs[t], rm[u], rs[u], weights, c1, c2, bands)
            out[t, u] = bands.sum()


def _block_weights(out_h: int, out_w: int) -> np.ndarray:
    """Fraction of all windows in each block: ``n_b / N``, ``[hb, wb]``."""
    rows = np.minimum(
        BLOCK_WINDOWS, out_h - BLOCK_WINDOWS * np.arange(math.ceil(out_h / BLOCK_WINDOWS))
    )
    cols = np.minimum(
        BLOCK_WINDOWS, out_w - BLOCK_WINDOWS * np.arange(math.ceil(out_w / BLOCK_WINDOWS))
    )
    return np.outer(rows, cols).astype(np.float64) / (out_h * out_w)


def pair_bounds(queries: FusedStats, reals: FusedStats) -> np.ndarray:
    """Upper bound of every pair's mean SSIM, ``[Q, R]`` float64 (module docstring for the proof).

    Valid for non-negative intensities (uint8 images, as the kernel takes).
    """
    out = np.empty((len(queries), len(reals)))
    out_h, out_w = queries.first.shape[-2:]
    c1, c2 = _constants(queries.settings)
    weights = _block_weights(int(out_h), int(out_w))
    with _KERNEL_LOCK:
        _pair_bounds(
            queries.bound_mean, queries.bound_std, reals.bound_mean, reals.bound_std,
            weights, c1, c2, out,
        )  # fmt: skip
    return out
