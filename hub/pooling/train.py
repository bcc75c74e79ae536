"""Train a classifier at the hub on synthetic archives only: one linear procedure.

    radshare-hub train-classifier --archive hub-data/archives/<id> --out runs/pooled-1

Run folder (new, or an unfinished one with the same options, which resumes)::

    options.json                  resolved options, written before work starts
    checkpoints/last.ckpt         Lightning, resumable; checkpoints/best.ckpt
    logs/                         CSV
    bundle/                       the signed classifier bundle (manifest.json,
                                  classifier.safetensors, classifier.json)

Validation: a split of the archive by synthetic patient (a series of one optimised
latent stays on one side); it picks the best epoch and each class's Youden threshold.
No real image is involved anywhere: real data is reached only by federated evaluation.
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

from hub.pooling.dataset import ArchiveImages, TrainingTable, load_training_table, split_by_patient
from hub.pooling.module import PooledClassifierModule, masked_macro_auc
from shared.artifacts.archive import ARCHIVE_MANIFEST
from shared.artifacts.classifier import ClassifierCard, ClassifierClass, write_classifier_bundle
from shared.artifacts.signing import generate_signing_key, load_private_key, write_private_key
from shared.classifier_recipe import MONITOR, to_network_range
from shared.errors import ConfigError, TrainingError
from shared.fileio import atomic_write_text
from shared.masked_loss import masked_class_weights
from shared.networks.labeller import Labeller, LabellerConfig
from shared.stats import roc_auc, youden_threshold

__all__ = ["ClassifierTrainOptions", "ClassifierTrainResult", "predict", "train_classifier"]

log = logging.getLogger("radshare.hub.pooling")


class ClassifierTrainOptions(BaseModel):
    """Everything a pooled-classifier run depends on (written to ``options.json``)."""

    model_config = ConfigDict(extra="forbid")

    archive_dir: Path
    out_dir: Path
    hub_key: Path = Field(description="the hub's Ed25519 signing key (created if missing)")
    site_id: str | None = Field(default=None, description="single-site archive without a manifest")
    label_space: list[str] | None = Field(
        default=None, description="None: the archive's label space"
    )
    resolution_px: int = 32
    init_features: int = 64
    growth_rate: int = 32
    block_config: tuple[int, int, int, int] = (6, 12, 24, 16)
    max_epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    lr_patience_epochs: int = Field(default=2, ge=0)
    early_stop_patience_epochs: int = Field(default=5, ge=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    augment: bool = True
    seed: int = 0
    num_workers: int = Field(default=0, ge=0)
    accelerator: str = "auto"
    progress_bar: bool = False

    def labeller_config(self, class_names: tuple[str, ...]) -> LabellerConfig:
        """The network's config (the labeller's DenseNet)."""
        return LabellerConfig(
            resolution_px=self.resolution_px,
            class_names=class_names,
            init_features=self.init_features,
            growth_rate=self.growth_rate,
            block_config=self.block_config,
        )


@dataclass(frozen=True)
class ClassifierTrainResult:
    """The bundle folder, the network and its card."""

    bundle_dir: Path
    classifier: Labeller
    card: ClassifierCard


def _prepare_run_dir(options: ClassifierTrainOptions) -> Path | None:
    """Create or reopen the run folder; the checkpoint to resume from, if any."""
    out = options.out_dir
    if (out / "bundle" / "manifest.json").is_file():
        raise ConfigError(f"{out}: this classifier run is finished; choose a new --out")
    resolved = json.loads(options.model_dump_json())
    options_path = out / "options.json"
    if options_path.is_file():
        previous = json.loads(options_path.read_text())
        changed = sorted(k for k in resolved if previous.get(k) != resolved[k])
        if changed:
            raise ConfigError(
                f"{options_path}: run started with other options ({', '.join(changed)})"
            )
        last = out / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not a classifier run; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(options_path, json.dumps(resolved, indent=2))
    return None


def hub_signing_key(path: Path):
    """The hub's signing key at ``path``, created on first use."""
    if not path.is_file():
        write_private_key(path, generate_signing_key())
    return load_private_key(path)


@torch.no_grad()
def predict(classifier: Labeller, dataset: ArchiveImages, batch_size: int = 128) -> np.ndarray:
    """Logits ``[N, C]`` without augmentation."""
    classifier.eval()
    out = [
        classifier(to_network_range(images)).float().cpu()
        for images, _, _ in DataLoader(dataset, batch_size=batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(classifier.cfg.class_names)))


def _classes(
    table: TrainingTable, train_rows: np.ndarray, val_rows: np.ndarray, val_logits: np.ndarray
) -> list[ClassifierClass]:
    out = []
    for c, name in enumerate(table.label_space):
        annotated = table.mask[val_rows, c] > 0
        y, s = table.labels[val_rows[annotated], c], val_logits[annotated, c]
        defined = 0 < y.sum() < len(y)
        out.append(
            ClassifierClass(
                name=name,
                threshold_logit=youden_threshold(y, s) if defined else None,
                val_auc=roc_auc(y, s) if defined else None,
                train_positives=int(table.labels[train_rows, c].sum()),
                train_annotated=int(table.mask[train_rows, c].sum()),
                val_positives=int(y.sum()),
            )
        )
    return out


def _trainer(options: ClassifierTrainOptions):
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    checkpoint = ModelCheckpoint(
        dirpath=options.out_dir / "checkpoints",
        filename="best",
        monitor=MONITOR,
        mode="max",
        save_last=True,
    )
    stop = EarlyStopping(monitor=MONITOR, mode="max", patience=options.early_stop_patience_epochs)
    trainer = pl.Trainer(
        accelerator=options.accelerator,
        devices=1,
        max_epochs=options.max_epochs,
        callbacks=[checkpoint, stop],
        logger=CSVLogger(options.out_dir, name="logs", version=""),
        log_every_n_steps=1,
        enable_progress_bar=options.progress_bar,
        enable_model_summary=False,
    )
    return trainer, checkpoint


def _trained_on(options: ClassifierTrainOptions, table: TrainingTable) -> dict[str, Any]:
    archive = options.archive_dir
    manifest = archive / ARCHIVE_MANIFEST
    sites = sorted(set(table.sites.tolist()))
    return {
        "archive": archive.name,
        "pooled": manifest.is_file(),
        "sites": sites,
        "num_images": len(table.paths),
        "masks": {
            s: [n for c, n in enumerate(table.label_space) if table.mask[table.sites == s, c].any()]
            for s in sites
        },
    }


def train_classifier(options: ClassifierTrainOptions) -> ClassifierTrainResult:
    """Train on the archive, pick the best epoch, threshold on validation, write the bundle.

    Raises:
        ConfigError: a finished or foreign run folder. TrainingError: nothing to train on.
    """
    # Open the run folder and read the archive (paths and labels; images are read lazily).
    resume_from = _prepare_run_dir(options)
    table = load_training_table(
        options.archive_dir, site_id=options.site_id, label_space=options.label_space
    )
    if not table.paths or not table.mask.any():
        raise TrainingError(f"{options.archive_dir}: no annotated image to train on")
    cfg = options.labeller_config(table.label_space)
    pl.seed_everything(options.seed, workers=True, verbose=False)

    # Split by synthetic patient; loaders.
    train_rows, val_rows = split_by_patient(table.patients, options.val_fraction, options.seed)
    train_set = ArchiveImages(table.subset(train_rows), options.resolution_px)
    val_set = ArchiveImages(table.subset(val_rows), options.resolution_px)
    train_loader = DataLoader(
        train_set,
        batch_size=options.batch_size,
        shuffle=True,
        drop_last=len(train_set) > options.batch_size,
        num_workers=options.num_workers,
    )
    val_loader = DataLoader(val_set, batch_size=128, num_workers=options.num_workers)

    # Construct the module with class weights over annotated entries of the training rows.
    w_pos, w_neg = masked_class_weights(table.labels[train_rows], table.mask[train_rows])
    module = PooledClassifierModule(
        cfg,
        w_pos,
        w_neg,
        lr=options.lr,
        lr_patience_epochs=options.lr_patience_epochs,
        use_augmentation=options.augment,
    )

    # Train.
    trainer, checkpoint = _trainer(options)
    log.info(
        "training classifier: %d images, %d classes at %d px",
        len(train_set),
        len(cfg.class_names),
        cfg.resolution_px,
    )
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from)

    # Reload the best epoch; thresholds and AUCs on the validation rows.
    best = checkpoint.best_model_path or str(options.out_dir / "checkpoints" / "last.ckpt")
    module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    classifier = module.classifier.cpu().eval()
    val_logits = predict(classifier, val_set)
    classes = _classes(table, train_rows, val_rows, val_logits)
    macro = masked_macro_auc(table.labels[val_rows], table.mask[val_rows], val_logits)

    # Export the signed bundle.
    card = ClassifierCard(
        labeller_config=cfg,
        classes=classes,
        trained_on=_trained_on(options, table),
        training={
            "epochs_trained": int(trainer.current_epoch),
            "lr": options.lr,
            "batch_size": options.batch_size,
            "seed": options.seed,
            "augment": options.augment,
            "loss": "masked weighted binary cross entropy",
            "val_fraction": options.val_fraction,
        },
        val_macro_auc=None if np.isnan(macro) else float(macro),
    )
    bundle_dir = options.out_dir / "bundle"
    write_classifier_bundle(bundle_dir, classifier, card, hub_signing_key(options.hub_key))
    log.info("classifier bundle %s (val macro AUC %.3f)", bundle_dir, macro)
    return ClassifierTrainResult(bundle_dir, classifier, card)
