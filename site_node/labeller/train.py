"""Train a labeller on the site's cache: one linear procedure, from options to export.

    radshare-site train-labeller --cache C --out runs/L --resolution 64

Run folder (new, or an unfinished one with the same options, which resumes)::

    options.json                 resolved options, written before work starts
    checkpoints/last.ckpt        Lightning, resumable; checkpoints/best.ckpt
    logs/                        CSV + TensorBoard
    evaluation.txt               per-class thresholds and AUCs (counts only)
    export/labeller.safetensors  the weights of the best epoch (validation macro AUC)
    export/labeller.json         LabellerCard: config, Youden thresholds, val/test AUCs
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader

from shared.artifacts.labeller import (
    CARD_FILE,
    ClassMetrics,
    LabellerCard,
    LabellerDataSummary,
    LabellerTrainingSummary,
    save_labeller_export,
)
from shared.classifier_recipe import MONITOR, to_network_range
from shared.errors import ConfigError, TrainingError
from shared.fileio import atomic_write_text
from shared.networks.labeller import Labeller, LabellerConfig
from shared.stats import macro_roc_auc
from site_node.data.cache import SiteCache
from site_node.labeller.data import CacheSplitDataset, class_weights
from site_node.labeller.metrics import ClassEvaluation, evaluate_classes, format_table
from site_node.labeller.module import LabellerModule

__all__ = [
    "SMALL_NETWORK",
    "LabellerTrainOptions",
    "LabellerTrainResult",
    "predict_logits",
    "train_labeller",
]

#: ``--small-network``: the hub's CPU-demo classifier size (``train-classifier --small-network``);
#: on two CPU cores an epoch and a class-optimisation step are ~10x cheaper than DenseNet-121.
SMALL_NETWORK: dict[str, Any] = {
    "init_features": 16,
    "growth_rate": 8,
    "block_config": (2, 2, 2, 2),
}

log = logging.getLogger("radshare.site.labeller")


class LabellerTrainOptions(BaseModel):
    """Everything a labeller run depends on (written to ``options.json``)."""

    model_config = ConfigDict(extra="forbid")

    cache_dir: Path
    out_dir: Path
    resolution_px: int = Field(64, description="must equal the generator's resolution")
    class_names: list[str] | None = Field(None, description="None: the cache's label space")
    max_epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_patience_epochs: int = Field(2, ge=0)
    early_stop_patience_epochs: int = Field(5, ge=1)
    max_rotation_deg: float = 10.0
    flip_p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    bootstrap_resamples: int = Field(1000, ge=1)
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    accelerator: str = "auto"
    progress_bar: bool = True
    small_network: bool = Field(
        False, description="a small DenseNet (16, 8, (2, 2, 2, 2)) for CPU demos, not DenseNet-121"
    )


@dataclass(frozen=True)
class LabellerTrainResult:
    """Where the export went, its card, and the per-class evaluation."""

    export_dir: Path
    card: LabellerCard
    evaluations: list[ClassEvaluation]


def _prepare_run_dir(options: LabellerTrainOptions) -> Path | None:
    """Create or reopen the run folder; return the checkpoint to resume from, if any."""
    out = options.out_dir
    if (out / "export" / CARD_FILE).is_file():
        raise ConfigError(f"{out}: this labeller run is finished; choose a new --out")
    options_path = out / "options.json"
    resolved = json.loads(options.model_dump_json())
    if options_path.is_file():
        previous = json.loads(options_path.read_text())
        changed = sorted(k for k in resolved if previous.get(k) != resolved[k])
        if changed:
            raise ConfigError(
                f"{options_path}: run started with other options ({', '.join(changed)}); "
                "choose a new --out"
            )
        last = out / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not a labeller run; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(options_path, json.dumps(resolved, indent=2))
    return None


def _resolve_classes(options: LabellerTrainOptions, cache: SiteCache) -> list[str]:
    names = options.class_names or cache.label_space
    missing = [n for n in names if n not in cache.label_space]
    if missing:
        raise ConfigError(
            f"class_names: {missing} not in the label space of {cache.path}: {cache.label_space}"
        )
    return list(names)


@torch.no_grad()
def predict_logits(
    labeller: Labeller, dataset: CacheSplitDataset, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[n, C]`` and labels ``[n, C]`` of a split, without augmentation."""
    labeller.eval()
    device = next(labeller.parameters()).device
    logits, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(labeller(to_network_range(images.to(device))).float().cpu())
        labels.append(targets)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def _build_trainer(options: LabellerTrainOptions) -> tuple[pl.Trainer, Any]:
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    checkpoint = ModelCheckpoint(
        dirpath=options.out_dir / "checkpoints",
        filename="best",
        monitor=MONITOR,
        mode="max",
        save_last=True,
    )
    stop = EarlyStopping(monitor=MONITOR, mode="max", patience=options.early_stop_patience_epochs)
    loggers = [
        CSVLogger(options.out_dir, name="logs", version=""),
        TensorBoardLogger(options.out_dir, name="logs", version="", default_hp_metric=False),
    ]
    trainer = pl.Trainer(
        accelerator=options.accelerator,
        devices=1,
        max_epochs=options.max_epochs,
        callbacks=[checkpoint, stop],
        logger=loggers,
        log_every_n_steps=1,
        enable_progress_bar=options.progress_bar,
        enable_model_summary=False,
        deterministic=False,
    )
    return trainer, checkpoint


def _card(
    cfg: LabellerConfig,
    evaluations: list[ClassEvaluation],
    train_labels: np.ndarray,
    training: LabellerTrainingSummary,
    data: LabellerDataSummary,
    macro: tuple[float, float],
) -> LabellerCard:
    classes = [
        ClassMetrics(
            name=e.name,
            threshold_logit=e.threshold_logit,
            val_auc=e.val_auc,
            val_auc_ci95=e.val_auc_ci95,
            test_auc=e.test_auc,
            test_auc_ci95=e.test_auc_ci95,
            train_positives=int(train_labels[:, c].sum()),
            val_positives=e.val_positives,
            test_positives=e.test_positives,
        )
        for c, e in enumerate(evaluations)
    ]
    val_macro, test_macro = (None if np.isnan(m) else float(m) for m in macro)
    return LabellerCard(
        labeller_config=cfg,
        classes=classes,
        val_macro_auc=val_macro,
        test_macro_auc=test_macro,
        training=training,
        data=data,
    )


def train_labeller(options: LabellerTrainOptions) -> LabellerTrainResult:
    """Train, pick the best epoch by validation macro AUC, evaluate, export.

    Raises:
        ConfigError: a bad option, a finished or foreign run folder.
        CacheError: a missing cache or resolution.
        TrainingError: a split without images.
    """
    # Open the run folder and the cache.
    resume_from = _prepare_run_dir(options)
    cache = SiteCache(options.cache_dir)
    class_names = _resolve_classes(options, cache)
    network: dict[str, Any] = dict(SMALL_NETWORK) if options.small_network else {}
    cfg = LabellerConfig(
        resolution_px=options.resolution_px, class_names=tuple(class_names), **network
    )
    pl.seed_everything(options.seed, workers=True, verbose=False)

    # Load the splits.
    splits = {
        s: CacheSplitDataset(cache, s, options.resolution_px, class_names)
        for s in ("train", "val", "test")
    }
    for split, dataset in splits.items():
        if len(dataset) == 0:
            raise TrainingError(f"{cache.path}: split {split!r} has no images")
    train_loader = DataLoader(
        splits["train"],
        batch_size=options.batch_size,
        shuffle=True,
        drop_last=len(splits["train"]) > options.batch_size,
        num_workers=options.num_workers,
    )
    val_loader = DataLoader(splits["val"], batch_size=64, num_workers=options.num_workers)

    # Construct the module with Guendel et al.'s class weights from the training split.
    w_pos, w_neg = class_weights(splits["train"].labels)
    augment = {
        "max_rotation_deg": options.max_rotation_deg,
        "flip_p": options.flip_p,
        "brightness": options.brightness,
        "contrast": options.contrast,
    }
    module = LabellerModule(
        cfg,
        w_pos,
        w_neg,
        lr=options.lr,
        lr_patience_epochs=options.lr_patience_epochs,
        augment=augment,
    )

    # Train.
    trainer, checkpoint = _build_trainer(options)
    log.info("training labeller: %s classes at %d px", len(class_names), options.resolution_px)
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from)

    # Reload the best epoch's weights.
    best_path = checkpoint.best_model_path or str(options.out_dir / "checkpoints" / "last.ckpt")
    state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    labeller = module.labeller.cpu().eval()

    # Evaluate: Youden thresholds and AUCs on validation, AUCs with bootstrap CIs on test.
    val_logits, val_labels = predict_logits(labeller, splits["val"])
    test_logits, test_labels = predict_logits(labeller, splits["test"])
    evaluations = evaluate_classes(
        class_names,
        val_logits,
        val_labels,
        test_logits,
        test_labels,
        num_resamples=options.bootstrap_resamples,
        seed=options.seed,
    )
    macro = (macro_roc_auc(val_labels, val_logits), macro_roc_auc(test_labels, test_logits))
    table = format_table(evaluations)
    (options.out_dir / "evaluation.txt").write_text(table + "\n")
    log.info("labeller evaluation:\n%s", table)

    # Export the weights and the card.
    best_score = checkpoint.best_model_score
    training = LabellerTrainingSummary(
        epochs_trained=int(trainer.current_epoch),
        best_val_macro_auc=None if best_score is None else float(best_score),
        lr=options.lr,
        batch_size=options.batch_size,
        seed=options.seed,
        augmentation=augment,
    )
    data = LabellerDataSummary(
        images_per_split={
            "train": len(splits["train"]),
            "val": len(splits["val"]),
            "test": len(splits["test"]),
        }
    )
    card = _card(cfg, evaluations, splits["train"].labels, training, data, macro)
    export_dir = save_labeller_export(options.out_dir / "export", labeller, card)
    return LabellerTrainResult(export_dir=export_dir, card=card, evaluations=evaluations)
