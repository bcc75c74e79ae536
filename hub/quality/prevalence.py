"""Label prevalence of real and synthetic sets by one labeller, with bootstrap CIs (Segal Fig. 6).

Both sets are labelled by the same labeller (logits ≥ the class's Youden
threshold from its card; 0 where a class has none). The prevalence of a class is
the mean of its 0/1 column. Its 95% CI is the percentile bootstrap over images
with 10,000 resamples. For a 0/1 column the bootstrap distribution of the mean
is exactly ``Binomial(N, p̂) / N`` (resampling N rows with replacement draws each
row's value from the empirical Bernoulli(p̂)), so the resamples are drawn in that
form: the same distribution as resampling rows, at a cost independent of N
(130,000 images in the paper). A test checks it against row resampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

__all__ = ["PrevalenceCI", "plot_prevalence", "predict_labels", "prevalence_ci"]


@dataclass(frozen=True)
class PrevalenceCI:
    """Per-class prevalence with its percentile bootstrap CI (arrays ``[C]``)."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    num_images: int


def prevalence_ci(
    binary_labels: np.ndarray, num_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> PrevalenceCI:
    """Prevalence of every column of 0/1 ``[N, C]`` and its bootstrap CI."""
    labels = np.asarray(binary_labels, dtype=np.float64)
    num_images = labels.shape[0]
    if num_images == 0:  # an empty archive: no prevalence, no interval
        nan = np.full(labels.shape[1:] or (0,), np.nan)
        return PrevalenceCI(nan, nan.copy(), nan.copy(), 0)
    estimate = labels.mean(axis=0)
    rng = np.random.default_rng(seed)
    resampled = (
        rng.binomial(num_images, estimate, size=(num_resamples, labels.shape[1])) / num_images
    )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail], axis=0)
    return PrevalenceCI(estimate, low, high, num_images)


@torch.no_grad()
def predict_labels(
    labeller: nn.Module,
    images_u8: np.ndarray,
    thresholds_logit: Sequence[float | None],
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """0/1 ``[N, C]``: the labeller's logits against per-class thresholds (None → 0.0)."""
    cut = torch.tensor([0.0 if t is None else t for t in thresholds_logit], device=device)
    labeller = labeller.eval().to(device)
    out = []
    for start in range(0, len(images_u8), batch_size):
        chunk = np.ascontiguousarray(images_u8[start : start + batch_size])
        x = torch.from_numpy(chunk).float().unsqueeze(1).div(127.5).sub(1.0).to(device)
        out.append((labeller(x) >= cut).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def plot_prevalence(names: Sequence[str], real: PrevalenceCI, synthetic: PrevalenceCI) -> Figure:
    """Real versus synthetic prevalence per class with 95% CIs (Segal et al.'s Fig. 6)."""
    fig = Figure(figsize=(7, 0.35 * len(names) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(names))
    for offset, ci, label, colour in (
        (-0.15, real, "real", "tab:blue"),
        (0.15, synthetic, "synthetic", "tab:orange"),
    ):
        err = np.vstack([ci.estimate - ci.low, ci.high - ci.estimate])
        ax.errorbar(
            ci.estimate,
            y + offset,
            xerr=err,
            fmt="o",
            capsize=3,
            color=colour,
            label=f"{label} (n={ci.num_images})",
        )
    ax.set_yticks(y, list(names))
    ax.invert_yaxis()
    ax.set(
        xlabel="prevalence (fraction of images)",
        title="Label prevalence by one labeller, 95% bootstrap CI",
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
