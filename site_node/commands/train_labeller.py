"""``radshare-site train-labeller``: the DenseNet-121 labeller for class optimisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

__all__ = ["train_labeller_command"]


def train_labeller_command(
    cache: Path = typer.Option(..., help="the site's cache folder (radshare-site ingest)"),
    out: Path = typer.Option(..., help="new run folder (or an unfinished one to resume)"),
    resolution: int = typer.Option(64, help="input size in px: the generator's resolution"),
    classes: str | None = typer.Option(
        None, help="comma-separated class names (default: the cache's label space)"
    ),
    max_epochs: int = typer.Option(30, help="upper bound; early stopping usually ends sooner"),
    batch_size: int = typer.Option(32, help="images per step"),
    lr: float = typer.Option(1e-3, help="Adam learning rate (reduced ten-fold on plateau)"),
    patience: int = typer.Option(5, help="early stopping: epochs without a better val AUC"),
    lr_patience: int = typer.Option(2, help="epochs without a better val AUC before lr / 10"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples for the test-AUC CIs"),
    seed: int = typer.Option(0, help="random seed"),
    workers: int = typer.Option(0, help="data-loader worker processes"),
    accelerator: str = typer.Option("auto", help="auto | cpu | gpu"),
    small_network: bool = typer.Option(
        False, help="a small DenseNet (CPU demos), not DenseNet-121; recorded in the card"
    ),
) -> None:
    """Train the labeller, pick thresholds (Youden, validation), evaluate on test.

    Example:

    \b
      radshare-site train-labeller --cache cache/a --out runs/L --resolution 64
    """
    from site_node.labeller.metrics import format_table
    from site_node.labeller.train import LabellerTrainOptions, train_labeller

    options = LabellerTrainOptions(
        cache_dir=cache,
        out_dir=out,
        resolution_px=resolution,
        class_names=[c.strip() for c in classes.split(",")] if classes else None,
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        early_stop_patience_epochs=patience,
        lr_patience_epochs=lr_patience,
        bootstrap_resamples=bootstrap,
        seed=seed,
        num_workers=workers,
        accelerator=accelerator,
        small_network=small_network,
    )
    _check_inputs(options)  # before the run folder exists: a refused run leaves nothing
    result = train_labeller(options)
    typer.echo(format_table(result.evaluations))
    typer.echo(f"export: {result.export_dir}")


def _check_inputs(options: Any) -> None:
    """Raise now for a cache without this resolution or unknown class names."""
    from shared.networks.labeller import LabellerConfig
    from site_node.data.cache import SiteCache

    cache = SiteCache(options.cache_dir)
    cache.images(options.resolution_px)
    names = options.class_names or cache.label_space
    LabellerConfig(resolution_px=options.resolution_px, class_names=tuple(names))
