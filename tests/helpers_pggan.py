"""A PGGAN run small enough for a unit test: 8 px, a few dozen images per phase, CPU."""

from __future__ import annotations

from typing import Any

#: TrainOptions fields of the tiny run the PGGAN tests share (add a seed and the data paths).
TINY_RUN: dict[str, Any] = {
    "resolution_px": 8,
    "z_dim": 16,
    "fmap_base": 64,
    "fmap_max": 16,
    "kimg_per_phase": 0.016,
    "batch_sizes": {4: 8, 8: 8},
    "tick_kimg": 0.016,
    "sample_every_kimg": 1.0,
    "num_grid_images": 4,
    "ema_halflife_kimg": 0.1,
    "accelerator": "cpu",
    "progress_bar": False,
}
