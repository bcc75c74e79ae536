"""Training data of a pooled classifier: archive rows with labels and label masks, read lazily.

:func:`load_training_table` reads a pooled archive (its ``Source Site`` column and
``label_masks.csv`` give each image's mask) or a single-site archive (every annotated
label unmasked). :class:`ArchiveImages` decodes one PNG per item, so an archive of any
size trains without being held in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from hub.pooling.archive import read_archive
from shared.artifacts.archive import ARCHIVE_MANIFEST, PoolManifest
from shared.errors import DataError
from shared.labels import NIH_LABELS

__all__ = ["ArchiveImages", "TrainingTable", "load_training_table", "split_by_patient"]


@dataclass(frozen=True)
class TrainingTable:
    """Image paths, labels ``[N, C]``, masks ``[N, C]``, sites and patients of an archive."""

    label_space: tuple[str, ...]
    paths: list[str]
    labels: np.ndarray
    mask: np.ndarray
    sites: np.ndarray
    patients: np.ndarray

    def subset(self, rows: np.ndarray) -> TrainingTable:
        """The rows ``rows``."""
        return TrainingTable(
            self.label_space,
            [self.paths[i] for i in rows],
            self.labels[rows],
            self.mask[rows],
            self.sites[rows],
            self.patients[rows],
        )


def _pooled(folder: Path) -> TrainingTable:
    manifest = PoolManifest.model_validate_json((folder / ARCHIVE_MANIFEST).read_bytes())
    source = read_archive(folder, site_id="pool", annotated_labels=manifest.label_space)
    columns = [NIH_LABELS.index(name) for name in manifest.label_space]
    sites = source.table["Source Site"].astype(str).to_numpy()
    masks = {
        site: np.array([n in entry.annotated_labels for n in manifest.label_space], np.float32)
        for site, entry in manifest.sites.items()
    }
    mask = np.stack([masks[s] for s in sites]) if len(sites) else np.zeros((0, len(columns)))
    return TrainingTable(
        tuple(manifest.label_space),
        list(source.table["_path"]),
        source.labels[:, columns] * mask,
        mask.astype(np.float32),
        sites,
        source.table["Patient ID"].astype(str).to_numpy(),
    )


def load_training_table(
    folder: Path | str,
    *,
    site_id: str | None = None,
    annotated_labels: Sequence[str] | None = None,
    label_space: Sequence[str] | None = None,
) -> TrainingTable:
    """Rows of a pooled or single-site archive over ``label_space`` (default: the archive's).

    Labels outside an image's annotated set are masked (mask 0, label 0).
    """
    folder = Path(folder)
    if (folder / ARCHIVE_MANIFEST).is_file():
        table = _pooled(folder)
    else:
        source = read_archive(folder, site_id=site_id or "site", annotated_labels=annotated_labels)
        columns = [NIH_LABELS.index(name) for name in source.annotated_labels]
        table = TrainingTable(
            source.annotated_labels,
            list(source.table["_path"]),
            source.labels[:, columns],
            np.ones((len(source), len(columns)), np.float32),
            np.full(len(source), source.site_id, dtype=object),
            source.table["Patient ID"].astype(str).to_numpy(),
        )
    return table if label_space is None else _reindex(table, label_space)


def _reindex(table: TrainingTable, label_space: Sequence[str]) -> TrainingTable:
    """The same rows over another label space; labels the archive lacks are masked."""
    labels = np.zeros((len(table.paths), len(label_space)), np.float32)
    mask = np.zeros_like(labels)
    for c, name in enumerate(label_space):
        if name in table.label_space:
            k = table.label_space.index(name)
            labels[:, c], mask[:, c] = table.labels[:, k], table.mask[:, k]
    return TrainingTable(tuple(label_space), table.paths, labels, mask, table.sites, table.patients)


def split_by_patient(
    patients: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices, no (synthetic) patient in both."""
    unique = np.unique(patients)
    if len(unique) < 2:
        raise DataError(
            f"need at least 2 patients to split off a validation set, got {len(unique)}"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    num_val = min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
    val_patients = set(unique[order[:num_val]])
    is_val = np.array([p in val_patients for p in patients])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _read_u8(path: str, resolution_px: int) -> np.ndarray:
    with Image.open(path) as image:
        grey = image.convert("L")
        if grey.size != (resolution_px, resolution_px):
            grey = grey.resize((resolution_px, resolution_px), Image.Resampling.BOX)
        return np.asarray(grey, dtype=np.uint8)


class ArchiveImages(Dataset):
    """``(uint8 [1, R, R], labels float32 [C], mask float32 [C])`` per archive row."""

    def __init__(self, table: TrainingTable, resolution_px: int):
        self.table = table
        self.resolution_px = resolution_px

    def __len__(self) -> int:
        return len(self.table.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(_read_u8(self.table.paths[i], self.resolution_px).copy())
        return (
            image[None],
            torch.from_numpy(self.table.labels[i].astype(np.float32)),
            torch.from_numpy(self.table.mask[i].astype(np.float32)),
        )


def read_frame(folder: Path) -> pd.DataFrame:
    """The archive's entry table (for reports)."""
    return read_archive(folder, site_id="pool", check_images=False).table
