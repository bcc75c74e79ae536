"""Sampling a generator: uint8 images from seeded latents, PNG files and image grids.

All sampling uses G_ema. Latents are drawn from a CPU generator seeded with ``seed`` only,
so the same (weights, seed, num_images) gives the same images on any device.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.errors import ConfigError
from shared.fileio import atomic_open
from shared.networks.generator import Generator
from site_node.pggan.export import load_exported_generator

__all__ = ["generate_uint8", "image_grid", "latents", "sample_run", "to_uint8", "write_png"]


def latents(seed: int, num_images: int, z_dim: int) -> torch.Tensor:
    """``[num_images, z_dim]`` standard normal latents from ``seed`` alone."""
    return torch.randn(num_images, z_dim, generator=torch.Generator().manual_seed(seed))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 1, H, W]`` in [-1, 1] → uint8 ``[N, H, W]`` (inverse of ``x / 127.5 - 1``)."""
    pixels = ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels[:, 0].cpu().numpy()


@torch.no_grad()
def generate_uint8(
    G: Generator,
    num_images: int,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """uint8 ``[num_images, R, R]`` from ``G(z)`` with ``z = latents(seed, ...)``."""
    z = latents(seed, num_images, G.z_dim)
    G = G.to(device).eval()
    batches = [to_uint8(G(chunk.to(device))) for chunk in z.split(batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, G.resolution_px, G.resolution_px))


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tile uint8 ``[N, H, W]`` into one ``[rows * H, columns * W]`` image (blank cells black)."""
    n, h, w = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = np.zeros((rows * h, columns * w), dtype=np.uint8)
    for i, image in enumerate(images):
        row, col = divmod(i, columns)
        grid[row * h : (row + 1) * h, col * w : (col + 1) * w] = image
    return grid


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write an 8-bit greyscale PNG atomically (``shared.fileio``)."""
    path = Path(path)
    with atomic_open(path) as handle:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").save(
            handle, format="PNG"
        )
    return path


def sample_run(
    run_dir: Path,
    out_dir: Path,
    num_images: int,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Write ``num_images`` PNGs (``sample_000000.png``, ...) and ``grid.png`` from a run's export.

    Uses ``run_dir/export/`` only (G_ema). ``out_dir`` must be new or empty (never
    overwritten). Returns the image paths, grid last.
    """
    out_dir = Path(out_dir)
    if num_images < 1:
        raise ConfigError(f"--num-images must be >= 1, got {num_images}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir}: exists and is not empty; choose a new --out")
    G_ema = load_exported_generator(run_dir)
    images = generate_uint8(G_ema, num_images, seed=seed, batch_size=batch_size, device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_png(out_dir / f"sample_{i:06d}.png", image) for i, image in enumerate(images)]
    grid = images[: min(num_images, 64)]
    paths.append(write_png(out_dir / "grid.png", image_grid(grid)))
    return paths
