"""Fused exact SSIM of one image against many (numba, CPU), and an exact upper bound for pruning.

The kernel computes scikit-image's mean SSIM (``shared.metrics.ssim``, same
window, ``data_range``, K1, K2, covariance factor and border crop) of every
requested (query, real) pair of 8-bit images without full-size temporaries.
Per pair it walks the valid window rows once: a column accumulator of the
products ``x y`` over the window's rows (updated by one entering and one
leaving image row in one pass), the horizontal window sum of that accumulator,
and the SSIM of each window of the row, summed into the pair's mean. The window
moments of every image (local sums and variances) are computed once per image
(:func:`fused_stats`) and reused for every pair. Pairs are taken in tiles of
queries × reals, a band of window rows of every pair of the tile at a time;
tiles are spread over the cores (``numba.prange``).

What makes the inner loops fast (measured: docs/benchmarks.md): the 7-tap box
sum and the 11-tap Gaussian passes are written out term by term (a loop over
the taps that stores between them does not vectorise and cost more than the
SSIM quotients), the uniform box sum is fused into the quotient loop, and rows
of statistics are padded to whole AVX-512 vectors with windows that add
exactly 0 (:class:`FusedStats`), so no window falls to a scalar remainder loop.

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
from dataclasses import dataclass, field
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


def _jit(parallel: bool = False, inline: bool = False) -> Callable[[_F], _F]:
    """``numba.njit`` with the kernels' flags; the plain function where numba is missing.

    Flags: fused multiply-add and reassociation (vectorised sums) but IEEE division;
    ``error_model="numpy"`` drops Python's zero-division check, which would keep every
    loop with a division scalar (4x slower); compiled code is cached on disk.
    ``inline``: inlined into its callers in numba's IR (per-element helpers of
    vectorised loops).
    """
    if not NUMBA_AVAILABLE:  # pragma: no cover
        return lambda function: function
    return numba.njit(  # type: ignore[no-any-return]
        parallel=parallel,
        cache=True,
        fastmath={"contract", "reassoc", "nsz"},
        error_model="numpy",
        inline="always" if inline else "never",
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
#: Rows of window statistics are padded to a multiple of this many windows (a whole
#: number of 16-lane AVX-512 vectors, 4 interleaved; see :class:`FusedStats`).
PAD_WINDOWS = 64
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
    standard deviation, float64 ``[N, 2, hb, wb]`` (computed on first use).
    ``windows`` is ``(h, w)``, the valid windows per image; ``first`` and ``second``
    are ``[N, h, w']``, ``w'`` the next multiple of :data:`PAD_WINDOWS`, padded with
    windows that add exactly 0 to any SSIM sum (``first`` 0, ``second`` +inf: a finite
    numerator over an infinite denominator), so the kernels' inner loops have no
    scalar remainder.
    """

    images: np.ndarray
    first: np.ndarray
    second: np.ndarray
    offset: np.ndarray
    settings: SSIMSettings
    windows: tuple[int, int]
    scales: tuple[float, float]  # local mean = first * scales[0] + offset; variance: second * [1]
    _bounds: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def bound_mean(self) -> np.ndarray:
        return self.bounds()[0]

    @property
    def bound_std(self) -> np.ndarray:
        return self.bounds()[1]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(bound_mean, bound_std)``, computed on first use (only pruning needs them).

        Rounding of the float32 statistics moves the bound by ~1e-7 (the search's
        ``BOUND_MARGIN`` covers it). Not to be called with ``_KERNEL_LOCK`` held.
        """
        if self._bounds is None:
            out_w = self.windows[1]
            with _KERNEL_LOCK:
                self._bounds = _bound_ranges(
                    self.first[:, :, :out_w], self.second[:, :, :out_w], self.offset,
                    self.scales[0], self.scales[1], BLOCK_WINDOWS,
                )  # fmt: skip
        return self._bounds


# ---------------------------------------------------------------------------- per-image stats


@_jit(inline=True)
def _box7(c, j):  # type: ignore[no-untyped-def]
    """``c[j] + ... + c[j + 6]``, the 7-tap window sum written out: it vectorises over ``j``
    (a loop over the taps, storing between them, does not)."""
    return c[j] + c[j + 1] + c[j + 2] + c[j + 3] + c[j + 4] + c[j + 5] + c[j + 6]


@_jit()
def _box_sums(col, row, win, out_w):  # type: ignore[no-untyped-def]
    """``row[j] = col[j] + ... + col[j + win - 1]`` for ``j < out_w`` (horizontal box sum)."""
    if win == 7:
        for j in range(out_w):
            row[j] = _box7(col, j)
        return
    for j in range(out_w):
        row[j] = col[j]
    for t in range(1, win):
        for j in range(out_w):
            row[j] += col[j + t]


@_jit(inline=True)
def _sum11(lines, weights, out, n):  # type: ignore[no-untyped-def]
    """``out[j] = Σ_t weights[t] lines[t][j]`` for ``j < n``, the 11 terms written out.

    Written out, the sum vectorises over ``j``; a loop over the taps that stores between
    them does not (the Gaussian window of σ = 1.5 has 11 taps).
    """
    r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10 = lines
    w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10 = weights[0], weights[1], weights[2], weights[3], weights[4], weights[5], weights[6], weights[7], weights[8], weights[9], weights[10]  # fmt: skip  # noqa: E501
    for j in range(n):
        out[j] = (
            w0 * r0[j] + w1 * r1[j] + w2 * r2[j] + w3 * r3[j] + w4 * r4[j] + w5 * r5[j]
            + w6 * r6[j] + w7 * r7[j] + w8 * r8[j] + w9 * r9[j] + w10 * r10[j]
        )  # fmt: skip


@_jit()
def _weighted_rows(src, first, weights, out):  # type: ignore[no-untyped-def]
    """Vertical pass: ``out[j] = Σ_t weights[t] src[(first + t) % len(src), j]``.

    ``src`` is an image (rows ``first`` ...) or a ring of the last ``win`` rows.
    """
    win, rows = weights.shape[0], src.shape[0]
    if win == 11:
        lines = (
            src[first % rows], src[(first + 1) % rows], src[(first + 2) % rows],
            src[(first + 3) % rows], src[(first + 4) % rows], src[(first + 5) % rows],
            src[(first + 6) % rows], src[(first + 7) % rows], src[(first + 8) % rows],
            src[(first + 9) % rows], src[(first + 10) % rows],
        )  # fmt: skip
        _sum11(lines, weights, out, out.shape[0])
        return
    out[:] = 0.0
    for t in range(win):
        w, line = weights[t], src[(first + t) % rows]
        for j in range(out.shape[0]):
            out[j] += w * line[j]


@_jit()
def _weighted_taps(col, weights, row, out_w):  # type: ignore[no-untyped-def]
    """Horizontal pass: ``row[j] = Σ_t weights[t] col[j + t]`` for ``j < out_w``."""
    win = weights.shape[0]
    if win == 11:
        lines = (
            col[0:], col[1:], col[2:], col[3:], col[4:], col[5:], col[6:], col[7:], col[8:],
            col[9:], col[10:],
        )  # fmt: skip
        _sum11(lines, weights, row, out_w)
        return
    for j in range(out_w):
        row[j] = weights[0] * col[j]
    for t in range(1, win):
        w = weights[t]
        for j in range(out_w):
            row[j] += w * col[j + t]


@_jit(parallel=True)
def _uniform_image_stats(images, win, pad_w):  # type: ignore[no-untyped-def]
    """Window sums ``S`` and ``n Σx² - S²`` of every image (float32; see :class:`FusedStats`).

    Column and window sums of 8-bit pixels and their squares are integers below 2²⁴
    (exact in float32); ``n Σx² - S²`` is formed in float64, exactly, then rounded.
    """
    count, height, width = images.shape
    out_h, out_w = height - win + 1, width - win + 1
    sums = np.zeros((count, out_h, pad_w), np.float32)
    second = np.full((count, out_h, pad_w), np.inf, np.float32)
    num = np.float64(win * win)
    for n in prange(count):
        col = np.zeros(width, np.float32)
        col2 = np.zeros(width, np.float32)
        row2 = np.zeros(out_w, np.float32)
        for r in range(win - 1):
            pixels = images[n, r]
            for j in range(width):
                v = np.float32(pixels[j])
                col[j] += v
                col2[j] += v * v
        for i in range(out_h):
            entering = images[n, i + win - 1]
            leaving = images[n, i - 1] if i > 0 else entering
            drop = np.float32(1.0) if i > 0 else np.float32(0.0)  # row i - 1 leaves
            for j in range(width):
                v, u = np.float32(entering[j]), drop * np.float32(leaving[j])
                col[j] += v - u
                col2[j] += v * v - u * u
            sums_row, second_row = sums[n, i], second[n, i]
            if win == 7:  # box sums inline (see _box7)
                for j in range(out_w):
                    s, s2 = _box7(col, j), _box7(col2, j)
                    sums_row[j] = s
                    second_row[j] = np.float32(num * np.float64(s2) - np.float64(s) * s)
                continue
            _box_sums(col, sums_row, win, out_w)
            _box_sums(col2, row2, win, out_w)
            for j in range(out_w):
                s = np.float64(sums_row[j])
                second_row[j] = np.float32(num * np.float64(row2[j]) - s * s)
    return sums, second


@_jit(parallel=True)
def _gaussian_image_stats(images, weights, offset, cov_norm, pad_w):  # type: ignore[no-untyped-def]
    """Local means of the centred images and ``cov_norm`` × local variances (float32).

    ``offset[n]`` (a float32 value) is subtracted from every pixel of image ``n``, as the
    pair kernel does; separable weighted sums, vertical then horizontal.
    """
    count, height, width = images.shape
    win = weights.shape[0]
    out_h, out_w = height - win + 1, width - win + 1
    means = np.zeros((count, out_h, pad_w), np.float32)
    second = np.full((count, out_h, pad_w), np.inf, np.float32)
    for n in prange(count):
        centre = np.float32(offset[n])
        centred = np.empty((height, width), np.float32)
        squared = np.empty((height, width), np.float32)
        for i in range(height):
            for j in range(width):
                v = np.float32(images[n, i, j]) - centre
                centred[i, j] = v
                squared[i, j] = v * v
        col = np.zeros(width, np.float32)
        col2 = np.zeros(width, np.float32)
        row2 = np.zeros(out_w, np.float32)
        for i in range(out_h):
            _weighted_rows(centred, i, weights, col)
            _weighted_rows(squared, i, weights, col2)
            means_row, second_row = means[n, i], second[n, i]
            _weighted_taps(col, weights, means_row, out_w)
            _weighted_taps(col2, weights, row2, out_w)
            for j in range(out_w):
                m = np.float64(means_row[j])
                second_row[j] = np.float32(cov_norm * (np.float64(row2[j]) - m * m))
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
    out_h, out_w = images.shape[1] - win + 1, images.shape[2] - win + 1
    pad_w = -(-out_w // PAD_WINDOWS) * PAD_WINDOWS
    with _KERNEL_LOCK:
        if settings.window is SSIMWindow.UNIFORM:
            first, second = _uniform_image_stats(images, win, pad_w)
            offset = np.zeros(len(images), np.float32)
            mean_scale, var_scale = 1.0 / win**2, settings.cov_norm / win**4
        else:
            first, second = _gaussian_image_stats(images, weights, offset, settings.cov_norm, pad_w)
            mean_scale, var_scale = 1.0, 1.0
    offset = offset.astype(np.float64)
    return FusedStats(
        images, first, second, offset, settings, (out_h, out_w), (mean_scale, var_scale)
    )


# ---------------------------------------------------------------------------- pair kernels

#: Queries × reals per tile: a tile's pairs are computed together, one pass of
#: :data:`PASS_ROWS` window rows at a time, so each image's rows and statistics are read
#: from memory once per pass and tile and then from cache (not once per pair).
TILE_QUERIES = 8
TILE_REALS = 8
#: Window rows per pass over a tile (a multiple of :data:`BLOCK_WINDOWS`).
PASS_ROWS = 32


@_jit()
def _row_done(state, row_total, i, out_h, block, bands, num_windows, floor):  # type: ignore[no-untyped-def]
    """Add window row ``i``'s SSIM sum to ``state``; True when the pair is abandoned.

    ``state`` is ``[sum of window SSIMs so far, bound of the rows not yet summed]``. At
    the end of each band of ``block`` window rows its bound leaves the second; the pair
    is abandoned (the sum set to ``-inf``) once its exact partial mean plus the bound of
    the rows left is below ``floor``.
    """
    state[0] += np.float64(row_total)
    if (i + 1) % block == 0 or i + 1 == out_h:
        state[1] -= bands[i // block]
        if state[0] / num_windows + state[1] < floor:
            state[0] = -np.inf
            return True
    return False


@_jit(inline=True)
def _uniform_window(s, a, b, qa, qb, num, k1, k2):  # type: ignore[no-untyped-def]
    """SSIM of one uniform window ``× n²`` through (module docstring); ``s`` = ``Σxy``.

    ``N_xy = n Σxy - Sx Sy`` is exact in float64 and rounded once to float32.
    """
    nxy = np.float32(num * np.float64(s) - np.float64(a) * np.float64(b))
    two = np.float32(2.0)
    return (two * a * b + k1) * (two * nxy + k2) / ((a * a + b * b + k1) * (qa + qb + k2))


@_jit()
def _uniform_rows(
    x, y, sx, qx, sy, qy, win, k1, k2, col, row, lo, hi, state, bands, floor, block, num_windows
):  # type: ignore[no-untyped-def]
    """Add the SSIM of window rows ``lo`` .. ``hi - 1`` of one pair (uniform) to ``state``.

    ``state`` is ``[sum of window SSIMs so far, bound of the rows not yet summed]``;
    the sum becomes ``-inf`` when the pair is abandoned below ``floor``. Products and
    window sums of 8-bit pixels are integers below 2²⁴, exact in float32; ``N_xy`` is
    formed in float64 (exact) and every factor is rounded once to float32; each row of
    window SSIMs is summed in float32 lanes, rows in float64. The column accumulator
    of ``x y`` over the window's rows starts from image rows ``lo .. lo + win - 2`` and
    moves down one row per window row (entering row in, leaving row out, one pass).
    """
    out_h, out_w = sx.shape  # out_w: padded (FusedStats)
    width = x.shape[1]
    num = np.float64(win * win)
    col[:] = 0.0
    for r in range(lo, lo + win - 1):
        x_row, y_row = x[r], y[r]
        for j in range(width):
            col[j] += np.float32(x_row[j]) * np.float32(y_row[j])
    for i in range(lo, hi):
        x_in, y_in = x[i + win - 1], y[i + win - 1]
        if i == lo:
            for j in range(width):
                col[j] += np.float32(x_in[j]) * np.float32(y_in[j])
        else:  # the entering row in, the row that left after window row i - 1 out: one pass
            x_out, y_out = x[i - 1], y[i - 1]
            for j in range(width):
                col[j] += np.float32(x_in[j]) * np.float32(y_in[j]) - np.float32(
                    x_out[j]
                ) * np.float32(y_out[j])
        a_row, b_row, qa_row, qb_row = sx[i], sy[i], qx[i], qy[i]
        row_total = np.float32(0.0)
        if win == 7:  # window sums inline: no row of sums stored and read back
            for j in range(out_w):
                s = _box7(col, j)
                row_total += _uniform_window(
                    s, a_row[j], b_row[j], qa_row[j], qb_row[j], num, k1, k2
                )
        else:
            _box_sums(col, row, win, out_w)
            for j in range(out_w):
                s = row[j]
                row_total += _uniform_window(
                    s, a_row[j], b_row[j], qa_row[j], qb_row[j], num, k1, k2
                )
        if _row_done(state, row_total, i, out_h, block, bands, num_windows, floor):
            return


@_jit(inline=True)
def _gaussian_window(sw, a, b, va, vb, fx, fy, c1, c2, cov_norm):  # type: ignore[no-untyped-def]
    """SSIM of one Gaussian window: ``sw`` the weighted ``Σ x y`` of the centred images,
    ``a``, ``b`` their local means, ``va``, ``vb`` the variances × ``cov_norm``; the
    covariance ``sw - a b`` is formed in float64 and rounded once."""
    sxy = np.float32(cov_norm * (np.float64(sw) - np.float64(a) * np.float64(b)))
    mu_x, mu_y = a + fx, b + fy
    two = np.float32(2.0)
    numerator = (two * mu_x * mu_y + c1) * (two * sxy + c2)
    return numerator / ((mu_x * mu_x + mu_y * mu_y + c1) * (va + vb + c2))


@_jit()
def _gaussian_rows(
    x, y, mx, vx, ox, my, vy, oy, weights, c1, c2, cov_norm, ring, col, row, lo, hi, state,
    bands, floor, block, num_windows,
):  # type: ignore[no-untyped-def]  # fmt: skip
    """Gaussian counterpart of :func:`_uniform_rows`: centred float32 sums, ``sigma_xy`` in float64.

    A ring of the last ``win`` centred product rows (primed from the rows above ``lo``)
    feeds the vertical pass, then the horizontal one.
    """
    width = x.shape[1]
    out_h, out_w = mx.shape  # out_w: padded (FusedStats)
    win = weights.shape[0]
    fx, fy = np.float32(ox), np.float32(oy)
    for r in range(lo, lo + win - 1):
        slot = ring[r % win]
        x_row, y_row = x[r], y[r]
        for j in range(width):
            slot[j] = (np.float32(x_row[j]) - fx) * (np.float32(y_row[j]) - fy)
    for i in range(lo, hi):
        r_in = i + win - 1
        slot = ring[r_in % win]
        x_row, y_row = x[r_in], y[r_in]
        for j in range(width):
            slot[j] = (np.float32(x_row[j]) - fx) * (np.float32(y_row[j]) - fy)
        _weighted_rows(ring, i, weights, col[:width])
        _weighted_taps(col, weights, row, out_w)
        a_row, b_row, va_row, vb_row = mx[i], my[i], vx[i], vy[i]
        row_total = np.float32(0.0)
        for j in range(out_w):
            row_total += _gaussian_window(
                row[j], a_row[j], b_row[j], va_row[j], vb_row[j], fx, fy, c1, c2, cov_norm
            )
        if _row_done(state, row_total, i, out_h, block, bands, num_windows, floor):
            return


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


@_jit()
def _tile_pairs(active, t0, u0):  # type: ignore[no-untyped-def]
    """The active (query, real) pairs of the tile starting at ``(t0, u0)``: two int64 arrays."""
    t1 = min(active.shape[0], t0 + TILE_QUERIES)
    u1 = min(active.shape[1], u0 + TILE_REALS)
    pair_t = np.empty((t1 - t0) * (u1 - u0), np.int64)
    pair_u = np.empty_like(pair_t)
    count = 0
    for t in range(t0, t1):
        for u in range(u0, u1):
            if active[t, u]:
                pair_t[count], pair_u[count] = t, u
                count += 1
    return pair_t[:count], pair_u[:count]


@_jit(parallel=True)
def _many(qi, qa, qb, qo, ri, ra, rb, ro, active, floors, bounds, weights, consts, out):  # type: ignore[no-untyped-def]
    """``out[t, u]`` = mean SSIM of query t and real u where ``active[t, u]``; tiles in parallel.

    ``weights`` empty: uniform window (``consts`` = window side, ``n² C1``,
    ``n² C2 / cov_norm``, unused, valid windows per image); else the Gaussian taps
    (``consts`` = 0, ``C1``, ``C2``, ``cov_norm``, valid windows). Each tile of
    :data:`TILE_QUERIES` × :data:`TILE_REALS` pairs is walked :data:`PASS_ROWS` window
    rows at a time, every pair of the tile per pass.
    A pair is abandoned (``-inf``) once its exact partial sum plus the bound of the rows
    left is below ``floors[t]`` (``-inf``: never). Rows are visited from ``first_row``
    (a band a quarter of the way down: the lungs, where two radiographs differ and the
    bound is loosest) to the bottom, then from the top: the sum is the same, and pairs
    that cannot win are abandoned sooner than from the uniform top border down.
    """
    qbm, qbs, rbm, rbs, block_weights, c1b, c2b, block, first_row = bounds
    gaussian = weights.shape[0] > 0
    win = weights.shape[0] if gaussian else int(consts[0])
    c1, c2, cov_norm, num_windows = (
        np.float32(consts[1]),
        np.float32(consts[2]),
        consts[3],
        consts[4],
    )
    num_q, num_r = active.shape
    width = qi.shape[2]
    out_h, out_w = qa.shape[1], qa.shape[2]
    tiles_q = (num_q + TILE_QUERIES - 1) // TILE_QUERIES
    tiles_r = (num_r + TILE_REALS - 1) // TILE_REALS
    for tile in prange(tiles_q * tiles_r):
        pair_t, pair_u = _tile_pairs(
            active, (tile % tiles_q) * TILE_QUERIES, (tile // tiles_q) * TILE_REALS
        )
        ring = np.zeros((win, width), np.float32)
        col = np.zeros(out_w + win - 1, np.float32)  # zeros right of the image
        row = np.zeros(out_w, np.float32)
        bands = np.zeros((pair_t.size, block_weights.shape[0]))
        state = np.zeros((pair_t.size, 2))  # partial sum, bound of the rows left
        for p in range(pair_t.size):
            t, u = pair_t[p], pair_u[p]
            if floors[t] > -np.inf:
                _band_bounds(qbm[t], qbs[t], rbm[u], rbs[u], block_weights, c1b, c2b, bands[p])
                state[p, 1] = bands[p].sum()
        for segment in range(2):
            lo, hi = (first_row, out_h) if segment == 0 else (0, first_row)
            for start in range(lo, hi, PASS_ROWS):
                stop = min(hi, start + PASS_ROWS)
                for p in range(pair_t.size):
                    t, u = pair_t[p], pair_u[p]
                    if state[p, 0] == -np.inf:
                        continue
                    if gaussian:
                        _gaussian_rows(
                            qi[t], ri[u], qa[t], qb[t], qo[t], ra[u], rb[u], ro[u], weights,
                            c1, c2, cov_norm, ring, col, row, start, stop, state[p], bands[p],
                            floors[t], block, num_windows,
                        )  # fmt: skip
                    else:
                        _uniform_rows(
                            qi[t], ri[u], qa[t], qb[t], ra[u], rb[u], win, c1, c2, col, row,
                            start, stop, state[p], bands[p], floors[t], block, num_windows,
                        )  # fmt: skip
        for p in range(pair_t.size):
            total = state[p, 0]
            out[pair_t[p], pair_u[p]] = total / num_windows if total > -np.inf else -np.inf


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
    out_h, out_w = queries.windows
    if (floors > -np.inf).any():
        ranges = (*queries.bounds(), *reals.bounds())
    else:  # no pair can be abandoned: the kernel never reads the bound ranges
        ranges = (np.zeros((1, 2, 1, 1)),) * 4
    bounds = (
        *ranges, _block_weights(int(out_h), int(out_w)), c1, c2, BLOCK_WINDOWS,
        (int(out_h) // BLOCK_WINDOWS // 4) * BLOCK_WINDOWS,
    )  # fmt: skip
    win = settings.window_px
    if settings.window is SSIMWindow.UNIFORM:
        n2 = float(win * win) ** 2
        weights = np.zeros(0, np.float32)
        consts = np.array([win, n2 * c1, n2 * c2 / settings.cov_norm, 1.0, out_h * out_w])
    else:
        weights = _gaussian_weights(settings)
        consts = np.array([0.0, c1, c2, settings.cov_norm, out_h * out_w])
    with _KERNEL_LOCK:
        _many(
            queries.images, queries.first, queries.second, queries.offset,
            reals.images, reals.first, reals.second, reals.offset,
            active, floors, bounds, weights, consts, out,
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
    out_h, out_w = queries.windows
    c1, c2 = _constants(queries.settings)
    weights = _block_weights(int(out_h), int(out_w))
    ranges = (*queries.bounds(), *reals.bounds())  # before the lock: bounds() takes it
    with _KERNEL_LOCK:
        _pair_bounds(*ranges, weights, c1, c2, out)
    return out
