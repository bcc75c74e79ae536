"""Train a classifier on the site's real train split: baseline (a), and Han et al.'s Fig. 4B.

The same network and settings as the hub's pooled classifier (the labeller's DenseNet
configuration, masked weighted BCE over the labels the site annotated, Adam), trained
here, inside the hospital; only its evaluation's aggregates leave. The epoch with the
best validation macro AUC is kept.

Rare-class experiment (:class:`~shared.evaluation_records.RareClassSetting`): keep
``keep_fraction`` of one label's positive training images, or of its positive patients
(``unit="patients"``: every positive image of a kept patient), at least one, and drop
the rest, then train with that class as it is (``none``), with its kept positives drawn
again up to exactly the original positive count (``oversample``: whole copies, then a
seeded draw without replacement for the remainder), or with the synthetic images the hub
sent added (``synthetic``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch

from shared.classifier_recipe import augment_batch, to_network_range
from shared.errors import ConfigError, TrainingError
from shared.evaluation_records import RareClassSetting, TrainRecipe
from shared.masked_loss import masked_class_weights, masked_weighted_bce_with_logits
from shared.networks.labeller import Labeller, LabellerConfig
from shared.stats import roc_auc
from site_node.data.cache import SiteCache
from site_node.evaluation.evaluate import images_at, predict_split, split_labels

__all__ = [
    "TrainingSet",
    "rare_class_rows",
    "train_real_classifier",
    "train_real_classifier_epochs",
    "training_set",
]

log = logging.getLogger("radshare.site.evaluation")


class TrainingSet:
    """uint8 images ``[N, R, R]``, labels and masks ``[N, C]`` (real rows, then synthetic)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mask: np.ndarray):
        self.images, self.labels, self.mask = (
            images,
            labels.astype(np.float32),
            mask.astype(np.float32),
        )

    def __len__(self) -> int:
        return len(self.images)


def rare_class_rows(
    labels: np.ndarray,
    column: int,
    setting: RareClassSetting,
    patient_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions kept, and the kept positives' positions drawn again for oversampling.

    Returns ``(kept, repeats)``: ``kept`` drops all positives but ``keep_fraction`` of
    them (of the positive images, or with ``setting.unit == "patients"`` every positive
    image of ``keep_fraction`` of the positive patients, ``patient_ids`` per row); at
    least one is kept. ``repeats`` is empty unless the strategy is ``oversample``; then
    kept positives plus repeats number exactly the original positives.
    """
    positives = np.flatnonzero(labels[:, column] > 0)
    if len(positives) == 0:
        raise ConfigError(f"rare_class: the site's train split has no {setting.label!r} image")
    rng = np.random.default_rng(setting.seed)
    if setting.unit == "patients":
        if patient_ids is None or len(patient_ids) != len(labels):
            raise ConfigError("rare_class unit 'patients' needs one patient id per train image")
        patients = np.unique(np.asarray(patient_ids)[positives])
        num_keep = max(1, round(setting.keep_fraction * len(patients)))
        chosen = rng.choice(patients, size=num_keep, replace=False)
        keep = positives[np.isin(np.asarray(patient_ids)[positives], chosen)]
    else:
        num_keep = max(1, round(setting.keep_fraction * len(positives)))
        keep = np.sort(rng.choice(positives, size=num_keep, replace=False))
    dropped = np.setdiff1d(positives, keep)
    kept = np.setdiff1d(np.arange(len(labels)), dropped)
    if setting.strategy != "oversample":
        return kept, np.array([], dtype=np.int64)
    missing = len(positives) - len(keep)
    whole, rest = divmod(missing, len(keep))
    extra = np.sort(rng.choice(keep, size=rest, replace=False))
    return kept, np.concatenate([np.tile(keep, whole), extra]).astype(np.int64)


def training_set(
    cache: SiteCache,
    cfg: LabellerConfig,
    site_labels: Sequence[str],
    rare: RareClassSetting | None = None,
    synthetic: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[TrainingSet, dict[str, int]]:
    """The real train split (rare-class reduced if asked), plus synthetic images, and counts."""
    names = list(cfg.class_names)
    rows = cache.indices("train")
    labels = split_labels(cache, "train", names)
    mask = np.tile(np.array([n in set(site_labels) for n in names], np.float32), (len(rows), 1))
    positions = np.arange(len(rows))
    counts: dict[str, int] = {"real_train_images": len(rows)}
    if rare is not None:
        if rare.label not in names:
            raise ConfigError(f"rare_class.label {rare.label!r} is not a class of {names}")
        patient_ids = cache.table.patient_id.to_numpy()[rows]
        kept, repeats = rare_class_rows(labels, names.index(rare.label), rare, patient_ids)
        positions = np.concatenate([kept, repeats]).astype(np.int64)
        counts["rare_positives_before"] = int(labels[:, names.index(rare.label)].sum())
        counts["rare_positives_kept"] = int(labels[kept, names.index(rare.label)].sum())
        positive = labels[:, names.index(rare.label)] > 0
        counts["rare_patients_before"] = len(np.unique(patient_ids[positive]))
        counts["rare_patients_kept"] = len(np.unique(patient_ids[kept][positive[kept]]))
        counts["oversampled_copies"] = len(repeats)
    images = np.asarray(images_at(cache, cfg.resolution_px))[rows[positions]]
    out = TrainingSet(images, labels[positions], mask[positions])
    if synthetic is not None:
        out = TrainingSet(
            *(
                np.concatenate([a, b])
                for a, b in zip((out.images, out.labels, out.mask), synthetic, strict=True)
            )
        )
        counts["synthetic_images"] = len(synthetic[0])
    counts["train_images"] = len(out)
    return out, counts


def _val_macro_auc(net: Labeller, cache: SiteCache, site_labels: Sequence[str]) -> float:
    names = list(net.cfg.class_names)
    rows = cache.indices("val")
    logits = predict_split(net, images_at(cache, net.cfg.resolution_px), rows)
    labels = split_labels(cache, "val", names)
    aucs = [
        roc_auc(labels[:, c], logits[:, c])
        for c, n in enumerate(names)
        if n in set(site_labels) and 0 < labels[:, c].sum() < len(rows)
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def _epoch(
    net: Labeller,
    data: TrainingSet,
    recipe: TrainRecipe,
    optimiser,
    weights,
    rng: np.random.Generator,
) -> float:
    net.train()
    order = rng.permutation(len(data))
    losses = []
    for start in range(0, len(order), recipe.batch_size):
        batch = order[start : start + recipe.batch_size]
        if len(batch) < 2:
            continue  # BatchNorm needs two images
        x = to_network_range(torch.from_numpy(data.images[batch])[:, None])
        if recipe.augment:
            x = augment_batch(x)
        loss = masked_weighted_bce_with_logits(
            net(x),
            torch.from_numpy(data.labels[batch]),
            torch.from_numpy(data.mask[batch]),
            *weights,
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def train_real_classifier(
    cache: SiteCache,
    cfg: LabellerConfig,
    recipe: TrainRecipe,
    data: TrainingSet,
    site_labels: Sequence[str],
) -> Labeller:
    """Train on ``data``; keep the epoch with the best validation macro AUC (site labels only)."""
    if len(data) < 2 or not data.mask.any():
        raise TrainingError(f"{cache.path}: nothing to train a real-only classifier on")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    net = Labeller(cfg)
    optimiser = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    weights = masked_class_weights(data.labels, data.mask)
    best, best_score = copy.deepcopy(net.state_dict()), -np.inf
    for epoch in range(recipe.max_epochs):
        loss = _epoch(net, data, recipe, optimiser, weights, rng)
        auc = _val_macro_auc(net, cache, site_labels)
        log.info("real-only classifier epoch %d: loss %.4f, val macro AUC %.3f", epoch, loss, auc)
        score = auc if np.isfinite(auc) else -np.inf  # no defined AUC: the latest epoch wins
        if score >= best_score:
            best, best_score = copy.deepcopy(net.state_dict()), score
    net.load_state_dict(best)
    return net.eval()


def train_real_classifier_epochs(
    net: Labeller, data: TrainingSet, recipe: TrainRecipe, epochs: int
) -> float:
    """Train ``net`` in place for ``epochs`` on ``data`` (no epoch selection); the last loss."""
    if len(data) < 2 or not data.mask.any():
        raise TrainingError("nothing to train on (fewer than 2 images or no annotated label)")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    weights = masked_class_weights(data.labels, data.mask)
    loss = float("nan")
    for _ in range(epochs):
        loss = _epoch(net, data, recipe, optimiser, weights, rng)
    return loss
