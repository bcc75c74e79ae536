"""Test helper: a :class:`SiteCache` built straight from a sample site's PNGs.

Until ingestion lands, PGGAN tests build their cache here: every image of the site,
box-downsampled from 256 px (exact block means), with a seeded patient-level
70/15/15 split. The cache lives in pytest's temp folder, never in the repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from skimage import io

from shared.labels import NIH_LABELS, parse_finding_labels
from site_node.data.cache import SiteCache, write_cache

__all__ = ["build_site_cache", "built_once"]


@contextmanager
def built_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """``name`` in the session's temp folder, locked while the caller builds it.

    Under pytest-xdist each worker has its own temp folder below one the whole session
    shares; models several files use (a site's cache, labeller, generator) are built there
    once, and a worker that asks while another builds waits for it (pytest-xdist's
    documented pattern for session fixtures). Without xdist it is the session's own folder.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / name
    with FileLock(f"{path}.lock"):
        yield path


def _box_downsample(image: np.ndarray, res_px: int) -> np.ndarray:
    factor = image.shape[0] // res_px
    blocks = image.reshape(res_px, factor, res_px, factor).astype(np.float64)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _patient_splits(patient_ids: np.ndarray, seed: int) -> np.ndarray:
    patients = np.unique(patient_ids)
    order = np.random.default_rng(seed).permutation(len(patients))
    n_train, n_val = int(0.7 * len(patients)), int(0.15 * len(patients))
    split_of = {}
    for rank, index in enumerate(order):
        split_of[patients[index]] = (
            "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        )
    return np.array([split_of[p] for p in patient_ids])


def build_site_cache(
    site_dir: Path, cache_dir: Path, resolutions_px: Sequence[int] = (8, 16, 32, 64), seed: int = 0
) -> SiteCache:
    """A cache of every image of ``site_dir`` (reused if ``cache_dir`` already holds one)."""
    if (Path(cache_dir) / "manifest.json").is_file():
        return SiteCache(cache_dir)
    labels = pd.read_csv(Path(site_dir) / "labels.csv")
    images = [io.imread(Path(site_dir) / "images" / name) for name in labels["Image Index"]]
    table = pd.DataFrame(
        {
            "image_index": labels["Image Index"].astype(str),
            "patient_id": labels["Patient ID"].astype(str),
            "split": _patient_splits(labels["Patient ID"].to_numpy(), seed),
        }
    )
    findings = [parse_finding_labels(text) for text in labels["Finding Labels"]]
    for label in NIH_LABELS:
        table[label] = [int(label in found) for found in findings]
    by_res = {r: np.stack([_box_downsample(image, r) for image in images]) for r in resolutions_px}
    write_cache(Path(cache_dir), by_res, table, NIH_LABELS, site_id="test-site", split_seed=seed)
    return SiteCache(cache_dir)
