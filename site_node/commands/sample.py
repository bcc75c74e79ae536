"""``radshare-site sample``: PNG images and a grid from a finished run's G_ema."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["sample_command"]


def sample_command(
    run: Path = typer.Option(..., "--run", help="finished run folder (reads only its export/)"),
    num_images: int = typer.Option(..., "--num-images", help="how many images"),
    out: Path = typer.Option(..., "--out", help="new folder for the PNGs"),
    seed: int = typer.Option(0, "--seed", help="latent seed; same seed, same images"),
    batch_size: int = typer.Option(64, "--batch-size", help="images per forward pass"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Write OUT/sample_000000.png ... (8-bit greyscale) and OUT/grid.png from G_ema.

    \b
      radshare-site sample --run runs/tiny --num-images 64 --out samples/tiny --seed 1
    """
    from site_node.pggan.sampling import sample_run

    paths = sample_run(run, out, num_images, seed=seed, batch_size=batch_size, device=device)
    typer.echo(f"wrote {len(paths) - 1} images and {paths[-1]}")
