"""Han et al. (2020)'s analyses: pathology correlation matrix, transitions, difference maps.

Han et al. condition their GAN on a label vector and sweep one entry from 0 to 1.
Our generators are unconditional and reach a class by latent optimisation
(Segal et al.'s Algorithm 1), so the sweep is the optimisation path: frame ``t``
of a path towards class ``i`` has "dose" ``t / T`` of pathology ``i``.

* :func:`record_optimisation_path` runs that optimisation (Adam on ``z`` against the
  labeller's class logit) and keeps every step's image and scores;
* :func:`pathology_correlation_matrix`: Pearson ``r`` between the dose of class ``i``
  and the labeller's score for class ``j``, over all frames of all paths towards
  ``i`` (their Fig. 7B, rows = optimised class, columns = scored class);
  :func:`plot_correlation_heatmap` orders rows by average-linkage clustering;
* :func:`transition_frames` picks evenly spaced frames (their Fig. 5) and
  :func:`save_gif` stitches them into an animation;
* :func:`difference_map` / :func:`overlay_difference`: end minus start, drawn as a
  red (brighter) / blue (darker) colour map over the start image (their Fig. 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image
from scipy.cluster.hierarchy import leaves_list, linkage
from torch import nn

from shared.errors import ConfigError

__all__ = [
    "correlation_from_paths",
    "difference_map",
    "overlay_difference",
    "pathology_correlation_matrix",
    "plot_correlation_heatmap",
    "record_optimisation_path",
    "save_gif",
    "transition_frames",
]


def record_optimisation_path(
    G: nn.Module,
    labeller: nn.Module,
    z0: torch.Tensor,
    class_index: int,
    num_steps: int = 20,
    lr: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Optimise ``z`` towards ``class_index``; return images and scores along the path.

    Images are ``[T+1, n, R, R]`` in [-1, 1], scores ``[T+1, n, C]`` sigmoid probabilities;
    step 0 is the start. G and the labeller stay frozen.
    """
    z = z0.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    images, scores = [], []
    for step in range(num_steps + 1):
        x = G(z)
        logits = labeller(x)
        images.append(x.detach()[:, 0].cpu().numpy())
        scores.append(torch.sigmoid(logits.detach()).cpu().numpy())
        if step == num_steps:
            break
        optimiser.zero_grad()
        (-logits[:, class_index].sum()).backward()
        optimiser.step()
    return np.stack(images), np.stack(scores)


def pathology_correlation_matrix(
    doses: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> np.ndarray:
    """Pearson ``r[i, j]`` of ``doses[i]`` ``[n_i]`` and column j of ``scores[i]``, ``[n_i, C]``.

    NaN where a score column is constant (r undefined).
    """
    rows = []
    for dose, score in zip(doses, scores, strict=True):
        d = np.asarray(dose, np.float64) - np.mean(dose)
        s = np.asarray(score, np.float64) - np.mean(score, axis=0)
        denom = np.sqrt((d @ d) * (s * s).sum(axis=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            rows.append(np.where(denom > 0, (d @ s) / denom, np.nan))
    return np.array(rows)


def correlation_from_paths(score_paths: Sequence[np.ndarray]) -> np.ndarray:
    """Correlation matrix from score paths ``[T+1, n, C]`` (one per class); dose of t is t / T."""
    doses, scores = [], []
    for path in score_paths:
        steps, n, num_classes = path.shape
        doses.append(np.repeat(np.linspace(0.0, 1.0, steps), n))
        scores.append(path.reshape(steps * n, num_classes))
    return pathology_correlation_matrix(doses, scores)


def plot_correlation_heatmap(
    matrix: np.ndarray, row_names: Sequence[str], col_names: Sequence[str]
) -> Figure:
    """Heatmap of r, rows (optimised classes) in average-linkage cluster order."""
    filled = np.nan_to_num(matrix)
    order = (
        leaves_list(linkage(filled, method="average"))
        if len(filled) > 2
        else np.arange(len(filled))
    )
    fig = Figure(figsize=(0.45 * len(col_names) + 3, 0.45 * len(row_names) + 2))
    ax = fig.subplots()
    image = ax.imshow(matrix[order], cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(col_names)), list(col_names), rotation=90, fontsize=8)
    ax.set_yticks(range(len(order)), [row_names[int(i)] for i in order], fontsize=8)
    ax.set(xlabel="labeller score for class j", ylabel="optimised for class i", title="Pearson r")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def _to_u8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats → uint8; uint8 passes through."""
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array
    return np.round((np.clip(array, -1, 1) + 1) * 127.5).astype(np.uint8)


def transition_frames(images_along_path: np.ndarray, num_frames: int = 6) -> np.ndarray:
    """``num_frames`` evenly spaced frames (first and last included) of ``[T, R, R]`` → uint8."""
    path = np.asarray(images_along_path)
    path = path[:, 0] if path.ndim == 4 else path
    if path.ndim != 3 or len(path) < 1:
        raise ConfigError(f"images_along_path must be [T, R, R] or [T, 1, R, R], got {path.shape}")
    picks = np.unique(
        np.round(np.linspace(0, len(path) - 1, min(num_frames, len(path)))).astype(int)
    )
    return _to_u8(path[picks])


def save_gif(frames_u8: np.ndarray, path: Path | str, frame_ms: int = 250) -> Path:
    """Write grey uint8 frames ``[F, R, R]`` as a looping GIF."""
    images = [Image.fromarray(frame) for frame in frames_u8]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return Path(path)


def difference_map(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``end - start`` in float32 intensity units of [-1, 1] (uint8 inputs are converted first)."""
    a, b = (np.asarray(x) for x in (start, end))
    if a.shape != b.shape:
        raise ConfigError(f"start {a.shape} and end {b.shape} differ in shape")
    if a.dtype == np.uint8:
        a, b = a / 127.5 - 1.0, b / 127.5 - 1.0
    return (b.astype(np.float64) - a.astype(np.float64)).astype(np.float32)


def overlay_difference(
    start: np.ndarray, difference: np.ndarray, max_abs: float | None = None
) -> np.ndarray:
    """RGB uint8 ``[R, R, 3]``: ``start`` in grey, the difference in red/blue, opacity ∝ |Δ|."""
    grey = _to_u8(start).astype(np.float64) / 255.0
    scale = max_abs or float(np.abs(difference).max()) or 1.0
    signed = np.clip(difference / scale, -1.0, 1.0)
    colour = colormaps["bwr"]((signed + 1.0) / 2.0)[..., :3]
    alpha = np.abs(signed)[..., None]
    blended = (1 - alpha) * grey[..., None] + alpha * colour
    return np.round(blended * 255).astype(np.uint8)
