"""The site-local image panel of an audit: the samples closest to training images, with them.

As Han et al. showed their radiologists generated images beside their nearest
real neighbours, the panel puts each of the ``num_rows`` samples with the
highest best SSIM in a row, followed by its nearest training images and their
SSIM. It holds real pixels, so it is written only to a folder at the site and
never enters an audit summary or a Flower reply.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.fileio import atomic_open
from shared.metrics.nn_search import Neighbours

__all__ = ["PANEL_FILE", "write_nearest_pairs_panel"]

PANEL_FILE = "nearest_pairs.png"


def write_nearest_pairs_panel(
    folder: Path,
    samples: np.ndarray,
    reals: np.ndarray,
    neighbours: Neighbours,
    num_rows: int,
) -> Path:
    """Write ``folder/nearest_pairs.png`` atomically and return its path.

    Args:
        folder: a site-local folder (created if missing).
        samples: generated uint8 ``[N, R, R]``.
        reals: the cache's uint8 ``[M, R, R]``; ``neighbours.index`` addresses its rows.
        neighbours: each sample's nearest training images, best first.
        num_rows: samples shown, those with the highest best SSIM first.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-neighbours.similarity[:, 0].numpy(), kind="stable")[:num_rows]
    num_cols = 1 + neighbours.index.shape[1]
    figure, axes = plt.subplots(
        len(order), num_cols, figsize=(1.8 * num_cols, 1.9 * len(order)), squeeze=False
    )
    for row, sample_idx in enumerate(order):
        axes[row, 0].imshow(samples[sample_idx], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(f"sample {sample_idx}", fontsize=7)
        for col in range(1, num_cols):
            real_row = int(neighbours.index[sample_idx, col - 1])
            ssim = float(neighbours.similarity[sample_idx, col - 1])
            axes[row, col].imshow(reals[real_row], cmap="gray", vmin=0, vmax=255)
            axes[row, col].set_title(f"NN{col} SSIM {ssim:.3f}", fontsize=7)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PANEL_FILE
    with atomic_open(path) as handle:
        figure.savefig(handle, dpi=100, format="png")
    plt.close(figure)
    return path
