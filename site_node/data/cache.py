"""The site's preprocessing cache: uint8 image arrays per resolution plus a label table.

Training never decodes a PNG: ``radshare-site ingest`` writes, once,

    <cache>/manifest.json        CacheManifest (pydantic): counts, label space, source hashes
    <cache>/table.csv            one row per kept image: row, image_index, patient_id,
                                 follow_up, view, split, source_sha256, one 0/1 column per label
    <cache>/images_<R>px.npy     uint8 [N, R, R] for every R in manifest.resolutions_px

and everything else opens it read-only with :class:`SiteCache` (arrays memory-mapped).
Row ``i`` of every array is row ``i`` of the table. The cache stays at the site.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import CacheError
from shared.fileio import atomic_open, atomic_write_text

__all__ = ["CACHE_SCHEMA_VERSION", "CacheManifest", "SiteCache", "write_cache"]

CACHE_SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")


class CacheManifest(BaseModel):
    """What a cache holds; written last, so a cache without it is incomplete."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = CACHE_SCHEMA_VERSION
    created_utc: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    site_id: str = "site"
    resolutions_px: list[int]
    label_space: list[str]
    num_images: int
    num_patients: int
    counts_per_split: dict[str, int]
    counts_per_label: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="split -> label -> images carrying it"
    )
    split_seed: int | None = None
    source: dict[str, str] = Field(
        default_factory=dict, description="layout, csv path, csv sha256, ..."
    )


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path) as handle:
        np.save(handle, array, allow_pickle=False)  # never pickle: the cache is plain arrays


def write_cache(
    cache_dir: Path,
    images_by_res: Mapping[int, np.ndarray],
    table: pd.DataFrame,
    label_space: Sequence[str],
    *,
    site_id: str = "site",
    split_seed: int | None = None,
    source: Mapping[str, str] | None = None,
) -> CacheManifest:
    """Write a cache atomically: arrays and table first, the manifest last.

    ``table`` needs columns ``image_index, patient_id, split`` and one 0/1 column
    per label in ``label_space``; its row order matches the arrays' first axis.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for column in ("image_index", "patient_id", "split", *label_space):
        if column not in table.columns:
            raise CacheError(f"{cache_dir}: table lacks column {column!r}")
    for res_px, array in images_by_res.items():
        if array.dtype != np.uint8 or array.shape != (len(table), res_px, res_px):
            raise CacheError(
                f"{cache_dir}: images at {res_px}px must be uint8 {(len(table), res_px, res_px)}, "
                f"got {array.dtype} {array.shape}"
            )
        _atomic_save_npy(cache_dir / f"images_{res_px}px.npy", np.ascontiguousarray(array))
    table = table.reset_index(drop=True)
    if "row" not in table.columns:
        table.insert(0, "row", np.arange(len(table)))
    with atomic_open(cache_dir / "table.csv", text=True) as handle:
        table.to_csv(handle, index=False)
    counts_per_label = {
        split: {label: int(table.loc[table.split == split, label].sum()) for label in label_space}
        for split in SPLITS
    }
    manifest = CacheManifest(
        site_id=site_id,
        resolutions_px=sorted(images_by_res),
        label_space=list(label_space),
        num_images=len(table),
        num_patients=int(table.patient_id.nunique()),
        counts_per_split={s: int((table.split == s).sum()) for s in SPLITS},
        counts_per_label=counts_per_label,
        split_seed=split_seed,
        source=dict(source or {}),
    )
    atomic_write_text(cache_dir / "manifest.json", manifest.model_dump_json(indent=2))
    return manifest


class SiteCache:
    """Read-only view of a cache directory (arrays memory-mapped)."""

    def __init__(self, cache_dir: Path | str):
        self.path = Path(cache_dir)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise CacheError(f"{self.path}: no manifest.json (run `radshare-site ingest` first)")
        try:
            self.manifest = CacheManifest.model_validate(json.loads(manifest_path.read_text()))
        except ValueError as error:
            raise CacheError(f"{manifest_path}: invalid cache manifest: {error}") from error
        self.table = pd.read_csv(self.path / "table.csv", dtype={"image_index": str})
        if len(self.table) != self.manifest.num_images:
            raise CacheError(
                f"{self.path}/table.csv: {len(self.table)} rows, "
                f"manifest says {self.manifest.num_images}"
            )

    @property
    def label_space(self) -> list[str]:
        """Label names, in the order of :meth:`labels`' columns."""
        return list(self.manifest.label_space)

    def images(self, res_px: int) -> np.ndarray:
        """uint8 ``[N, res_px, res_px]`` memory-mapped array of every cached image."""
        if res_px not in self.manifest.resolutions_px:
            raise CacheError(
                f"{self.path}: no images at {res_px}px; cached: {self.manifest.resolutions_px}"
            )
        return np.load(self.path / f"images_{res_px}px.npy", mmap_mode="r", allow_pickle=False)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Row indices of ``split`` (``train``/``val``/``test``), or of all rows if None."""
        if split is None:
            return np.arange(len(self.table))
        if split not in SPLITS:
            raise CacheError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return np.flatnonzero(self.table.split.to_numpy() == split)

    def labels(self, split: str | None = None) -> np.ndarray:
        """float32 multi-hot ``[n, len(label_space)]`` for the rows of ``split``."""
        rows = self.indices(split)
        return self.table.loc[rows, self.label_space].to_numpy(dtype=np.float32)
