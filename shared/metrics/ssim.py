"""Structural similarity (SSIM), batched torch, as ``skimage.metrics.structural_similarity``.

For two images ``x`` and ``y`` and every window position (Wang et al. 2004, eq. 13)::

    SSIM(x, y) = (2 mu_x mu_y + C1) (2 sigma_xy + C2)
                 ---------------------------------------------
                 (mu_x² + mu_y² + C1) (sigma_x² + sigma_y² + C2)

    C1 = (K1 L)², C2 = (K2 L)², K1 = 0.01, K2 = 0.03, L = data_range

where the local moments are weighted by the window: the uniform 7×7 box
(scikit-image's default, with the sample covariance ``NP / (NP - 1)``, NP = 49)
or the Gaussian of sigma = 1.5 truncated at 3.5 sigma (11 taps, the population
covariance of Wang et al.). The mean SSIM of a pair is the mean of that map
over the positions whose window lies wholly inside the image; scikit-image
filters the whole image with ``reflect`` borders and then crops
``(win_size - 1) // 2`` pixels, which leaves exactly those positions, so the
maps here are computed on the valid region only and no padding is needed.

Per-image moments (local mean and variance) come from :func:`window_stats` and
can be computed once and reused for many pairs (:func:`pairwise_ssim`); only
the cross term ``filter(x y)`` is computed per pair. Images are centred on
their global mean before the second moments are formed, which keeps float32
within 1e-5 of scikit-image's float64 on 8-bit images.

Reference: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality
assessment: from error visibility to structural similarity", IEEE TIP 13(4),
600-612, 2004. doi:10.1109/TIP.2003.819861

Shapes: images are ``[N, H, W]`` or ``[N, 1, H, W]`` (uint8, or float with an
explicit ``data_range``); maps are ``[N, H - 2p, W - 2p]`` with
``p = (win_size - 1) // 2``; mean SSIM is ``[N]``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from shared.errors import ConfigError, DataError

__all__ = [
    "SSIM",
    "SSIMSettings",
    "SSIMWindow",
    "WindowStats",
    "compute_ssim",
    "pairwise_ssim",
    "ssim_from_stats",
    "ssim_map",
    "window_stats",
]

GAUSSIAN_TRUNCATE = 3.5  # scikit-image's choice: 11 taps at sigma = 1.5, as in Wang et al.


class SSIMWindow(StrEnum):
    """Weighting of the local window."""

    UNIFORM = "uniform"
    GAUSSIAN = "gaussian"

    @classmethod
    def parse(cls, value: str | SSIMWindow) -> SSIMWindow:
        """The window named ``value``; the error lists the valid names and the nearest one."""
        try:
            return cls(value)
        except ValueError:
            valid = [member.value for member in cls]
            close = difflib.get_close_matches(str(value), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"ssim window {value!r} is not one of {', '.join(valid)}{hint}"
            ) from None


@dataclass(frozen=True)
class SSIMSettings:
    """SSIM options, with scikit-image's names and defaults.

    Args:
        window: ``uniform`` (7×7 box, scikit-image's default) or ``gaussian``
            (``gaussian_weights=True``: sigma 1.5, truncate 3.5, 11×11).
        win_size: side of the uniform window (odd); must stay None for ``gaussian``.
        sigma: standard deviation of the Gaussian window.
        data_range: L in C1 = (K1 L)²; None means 255 for uint8 input (required for float).
        k1, k2: the constants K1, K2.
        use_sample_covariance: normalise by NP - 1; None means scikit-image's
            default for ``uniform`` (True) and Wang et al.'s for ``gaussian`` (False).
    """

    window: SSIMWindow | str = SSIMWindow.UNIFORM
    win_size: int | None = None
    sigma: float = 1.5
    data_range: float | None = None
    k1: float = 0.01
    k2: float = 0.03
    use_sample_covariance: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", SSIMWindow.parse(self.window))
        if self.window is SSIMWindow.GAUSSIAN and self.win_size is not None:
            raise ConfigError(f"win_size={self.win_size}: set sigma, not win_size, for gaussian")
        if self.win_size is not None and (self.win_size < 3 or self.win_size % 2 == 0):
            raise ConfigError(f"win_size={self.win_size}: must be odd and >= 3")
        if self.sigma <= 0 or self.k1 < 0 or self.k2 < 0:
            raise ConfigError(f"sigma={self.sigma}, k1={self.k1}, k2={self.k2}: must be positive")
        if self.data_range is not None and self.data_range <= 0:
            raise ConfigError(f"data_range={self.data_range}: must be positive")

    @property
    def window_px(self) -> int:
        """Side of the window in pixels (7 uniform; 2 int(3.5 sigma + 0.5) + 1 Gaussian)."""
        if self.window is SSIMWindow.GAUSSIAN:
            return 2 * int(GAUSSIAN_TRUNCATE * self.sigma + 0.5) + 1
        return self.win_size or 7

    @property
    def border_px(self) -> int:
        """Pixels dropped at each border: ``(win_size - 1) // 2``."""
        return (self.window_px - 1) // 2

    @property
    def cov_norm(self) -> float:
        """Covariance normalisation: NP / (NP - 1) for the sample covariance, else 1."""
        sample = self.use_sample_covariance
        if sample is None:
            sample = self.window is SSIMWindow.UNIFORM
        num_px = self.window_px**2
        return num_px / (num_px - 1) if sample else 1.0

    def kernel_1d(self, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """Normalised 1-D weights; the 2-D window is their outer product (as in scipy.ndimage)."""
        if self.window is SSIMWindow.UNIFORM:
            return torch.full((self.window_px,), 1.0 / self.window_px, dtype=dtype, device=device)
        radius = self.border_px
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
        weights = torch.exp(-0.5 * offsets**2 / self.sigma**2)
        return (weights / weights.sum()).to(dtype=dtype, device=device)


@dataclass
class WindowStats:
    """Per-image window moments, computed once per image and reused for every pair.

    ``centred`` is the image minus its global mean ``[N, H, W]``; ``mean`` the local
    mean of the raw image and ``mean_centred`` that of the centred one
    ``[N, h, w]``; ``var`` the (normalised) local variance ``[N, h, w]``.
    """

    centred: torch.Tensor
    mean: torch.Tensor
    mean_centred: torch.Tensor
    var: torch.Tensor
    kernel: torch.Tensor
    settings: SSIMSettings
    data_range: float

    def __len__(self) -> int:
        return int(self.centred.shape[0])

    def select(self, rows: torch.Tensor | slice) -> WindowStats:
        """The statistics of ``rows`` only (a view for slices, a copy for index tensors)."""
        return WindowStats(
            self.centred[rows],
            self.mean[rows],
            self.mean_centred[rows],
            self.var[rows],
            self.kernel,
            self.settings,
            self.data_range,
        )


def _as_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``[N, H, W]`` tensor from ``[N, H, W]``, ``[N, 1, H, W]`` or one ``[H, W]`` image."""
    batch = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if batch.ndim == 4 and batch.shape[1] == 1:
        batch = batch[:, 0]
    elif batch.ndim == 2:
        batch = batch[None]
    if batch.ndim != 3:
        raise DataError(f"images must be [N, H, W] or [N, 1, H, W], got shape {tuple(batch.shape)}")
    return batch


def _data_range(batch: torch.Tensor, settings: SSIMSettings) -> float:
    if settings.data_range is not None:
        return float(settings.data_range)
    if batch.dtype == torch.uint8:
        return 255.0
    raise ConfigError(f"data_range is required for {batch.dtype} images (255 is implied for uint8)")


def filter_valid(
    images: torch.Tensor, settings: SSIMSettings, kernel: torch.Tensor
) -> torch.Tensor:
    """Window filter over the valid region: ``[..., H, W] -> [..., H-w+1, W-w+1]``.

    Separable, as scipy.ndimage: box sums through ``unfold`` for the uniform window,
    shifted slices for the Gaussian one (both several times faster than ``conv2d`` on CPU).
    """
    if settings.window is SSIMWindow.UNIFORM:
        taps = kernel.numel()
        summed = images.unfold(-2, taps, 1).sum(-1).unfold(-1, taps, 1).sum(-1)
        return summed.mul_(1.0 / taps**2)
    return _weighted_slices(_weighted_slices(images, kernel, -2), kernel, -1)


def _weighted_slices(images: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Valid 1-D correlation of ``images`` with ``kernel`` along ``dim``."""
    taps = kernel.numel()
    size = images.shape[dim] - taps + 1
    out = images.narrow(dim, 0, size) * kernel[0]
    for tap in range(1, taps):
        out.add_(images.narrow(dim, tap, size), alpha=float(kernel[tap]))
    return out


def window_stats(
    images: torch.Tensor | np.ndarray,
    settings: SSIMSettings | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> WindowStats:
    """Local means and variances of every image, for :func:`ssim_from_stats` and friends.

    Args:
        images: ``[N, H, W]`` or ``[N, 1, H, W]``; uint8, or float with ``settings.data_range``.
        settings: SSIM options (scikit-image defaults when None).
        dtype: compute precision (float32 is within 1e-5 of float64 on 8-bit images).
        device: where the statistics live.

    Raises:
        ConfigError: float input without ``data_range``.
        DataError: wrong shape, or images smaller than the window.
    """
    settings = settings or SSIMSettings()
    batch = _as_batch(images)
    data_range = _data_range(batch, settings)
    if min(batch.shape[-2:]) < settings.window_px:
        raise DataError(f"images {tuple(batch.shape[-2:])} are smaller than the window")
    raw = batch.to(device=device, dtype=dtype)
    # Any per-image offset leaves (co)variances unchanged; the image mean keeps float32 exact.
    offset = raw.mean(dim=(-2, -1), keepdim=True)
    centred = raw - offset
    kernel = settings.kernel_1d(dtype, device)
    mean_centred = filter_valid(centred, settings, kernel)
    mean = mean_centred + offset  # the window's weights sum to one
    second = filter_valid(centred * centred, settings, kernel)
    var = settings.cov_norm * (second - mean_centred**2)
    return WindowStats(centred, mean, mean_centred, var, kernel, settings, data_range)


def _ssim_map(a: WindowStats, b: WindowStats, cross: torch.Tensor) -> torch.Tensor:
    """SSIM map from the moments of ``a`` and ``b`` (broadcast against each other) and the
    filtered cross product ``cross = filter(a.centred * b.centred)``, which it overwrites.

    In-place on ``cross``: one pair costs about a dozen passes over its ``h × w`` map.
    """
    c1 = (a.settings.k1 * a.data_range) ** 2
    c2 = (a.settings.k2 * a.data_range) ** 2
    cov_norm = a.settings.cov_norm
    # (2 sigma_xy + C2), with sigma_xy = cov_norm (filter(x y) - mu_x mu_y) on centred images.
    ssim = cross.mul_(2 * cov_norm).addcmul_(a.mean_centred, b.mean_centred, value=-2 * cov_norm)
    ssim.add_(c2)
    ssim.mul_(
        torch.addcmul(
            torch.tensor(c1, dtype=cross.dtype, device=cross.device), a.mean, b.mean, value=2
        )
    )
    luminance_den = (a.mean * a.mean + c1 / 2) + (b.mean * b.mean + c1 / 2)
    contrast_den = (a.var + c2 / 2) + (b.var + c2 / 2)
    return ssim.div_(luminance_den.mul_(contrast_den))


def _check_compatible(a: WindowStats, b: WindowStats) -> None:
    if a.settings != b.settings or a.data_range != b.data_range:
        raise ConfigError(f"SSIM settings differ: {a.settings} vs {b.settings}")
    if a.centred.shape[-2:] != b.centred.shape[-2:]:
        raise DataError(f"image sizes differ: {a.centred.shape[-2:]} vs {b.centred.shape[-2:]}")


def _outer(a: WindowStats, b: WindowStats) -> tuple[WindowStats, WindowStats]:
    """Views of ``a`` as ``[Na, 1, ...]`` and ``b`` as ``[1, Nb, ...]``, for all pairs."""
    return (
        WindowStats(a.centred[:, None], a.mean[:, None], a.mean_centred[:, None], a.var[:, None],
                    a.kernel, a.settings, a.data_range),
        WindowStats(b.centred[None], b.mean[None], b.mean_centred[None], b.var[None],
                    b.kernel, b.settings, b.data_range),
    )  # fmt: skip


def ssim_from_stats(a: WindowStats, b: WindowStats, *, full: bool = False) -> torch.Tensor:
    """SSIM of pairs ``(a[i], b[i])`` (``b`` may hold one image): ``[N]``, or maps if ``full``."""
    _check_compatible(a, b)
    cross = filter_valid(a.centred * b.centred, a.settings, a.kernel)
    ssim = _ssim_map(a, b, cross)
    return ssim if full else ssim.mean(dim=(-2, -1))


def pairwise_ssim(a: WindowStats, b: WindowStats) -> torch.Tensor:
    """Mean SSIM of every pair ``(a[i], b[j])``: ``[len(a), len(b)]``.

    Memory is about two ``len(a) * len(b)`` images; chunk the inputs (on CPU, blocks of
    about 16 pairs at 256² stay in cache and run fastest; see ``shared.metrics.nn_search``).
    """
    _check_compatible(a, b)
    a_rows, b_cols = _outer(a, b)
    cross = filter_valid(a_rows.centred * b_cols.centred, a.settings, a.kernel)
    return _ssim_map(a_rows, b_cols, cross).mean(dim=(-2, -1))


def _stats_pair(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    settings: SSIMSettings | None,
    dtype: torch.dtype,
) -> tuple[WindowStats, WindowStats]:
    x_batch, y_batch = _as_batch(x), _as_batch(y)
    device = x_batch.device
    settings = settings or SSIMSettings()
    if settings.data_range is None and x_batch.dtype != y_batch.dtype:
        raise ConfigError(f"dtypes differ ({x_batch.dtype}, {y_batch.dtype}): give data_range")
    return (
        window_stats(x_batch, settings, dtype=dtype, device=device),
        window_stats(y_batch, settings, dtype=dtype, device=device),
    )


def ssim_map(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    settings: SSIMSettings | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Per-position SSIM of pairs ``(x[i], y[i])`` over the valid region ``[N, H-2p, W-2p]``.

    Equals ``structural_similarity(..., full=True)[1]`` cropped by ``p = (win_size - 1) // 2``.
    """
    a, b = _stats_pair(x, y, settings, dtype)
    return ssim_from_stats(a, b, full=True)


def compute_ssim(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    settings: SSIMSettings | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Mean SSIM of pairs ``(x[i], y[i])``, ``[N]``; as ``skimage.metrics.structural_similarity``.

    Args:
        x, y: ``[N, H, W]`` or ``[N, 1, H, W]`` (``y`` may hold a single image), on any device.
        settings: window, data_range, K1, K2 (scikit-image's defaults when None).
        dtype: compute precision.

    Returns:
        float tensor ``[N]`` on the inputs' device.
    """
    a, b = _stats_pair(x, y, settings, dtype)
    return ssim_from_stats(a, b)


class SSIM:
    """Thin callable holding :class:`SSIMSettings`: ``SSIM(window="gaussian")(x, y) -> [N]``."""

    def __init__(self, settings: SSIMSettings | None = None, **options: object) -> None:
        self.settings = settings or SSIMSettings(**options)  # type: ignore[arg-type]

    def __call__(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> torch.Tensor:
        return compute_ssim(x, y, self.settings)

    def __repr__(self) -> str:
        return f"SSIM({self.settings})"
