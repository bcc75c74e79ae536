"""``radshare-hub train-classifier``: a classifier trained only on synthetic archives (a bundle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

__all__ = ["train_classifier"]


def train_classifier(
    archive: Path = typer.Option(..., help="a pooled archive, or one site's archive"),
    out: Path = typer.Option(..., help="new run folder (options.json, checkpoints/, bundle/)"),
    hub_key: Path = typer.Option(
        Path("hub-data/hub_signing.key"), help="hub signing key (made if missing)"
    ),
    site_id: str | None = typer.Option(
        None, help="site of a single-site archive without a manifest"
    ),
    resolution_px: int = typer.Option(32, help="input size (the generators' resolution)"),
    max_epochs: int = typer.Option(20, help="epochs at most (early stopping on val AUC)"),
    batch_size: int = typer.Option(32, help="images per step"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    small_network: bool = typer.Option(
        False, help="a small DenseNet (CPU demos), not DenseNet-121"
    ),
    accelerator: str = typer.Option("auto", help="auto | cpu | gpu"),
    seed: int = typer.Option(0, help="seed"),
) -> None:
    """Train on synthetic images only.

    Example:

    \b
      radshare-hub train-classifier --archive hub-data/archives/3f9a1c07... --out runs/pooled
    """
    from hub.pooling.train import ClassifierTrainOptions
    from hub.pooling.train import train_classifier as run

    small: dict[str, Any] = {"init_features": 16, "growth_rate": 8, "block_config": (2, 2, 2, 2)}
    network = small if small_network else {}
    options = ClassifierTrainOptions(
        archive_dir=archive,
        out_dir=out,
        hub_key=hub_key,
        site_id=site_id,
        resolution_px=resolution_px,
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        accelerator=accelerator,
        seed=seed,
        **network,
    )
    result = run(options)
    typer.echo(f"classifier bundle: {result.bundle_dir} ({_auc_line(result.card)})")


def _auc_line(card: Any) -> str:
    """``val macro AUC 0.731``, or why there is none (classes lacking positives or negatives)."""
    if card.val_macro_auc is not None:
        undefined = [c.name for c in card.classes if c.val_auc is None]
        note = f"; {len(undefined)} class(es) without an AUC" if undefined else ""
        return f"val macro AUC {card.val_macro_auc:.3f} over the classes that have one{note}"
    lacking = ", ".join(f"{c.name} ({c.val_positives} positive)" for c in card.classes)
    return (
        "val macro AUC: none: no class has both positive and negative images in the "
        f"validation rows (10% of the synthetic patients) [{lacking}]; use a larger archive"
    )
