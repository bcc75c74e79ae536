"""Write a pooled archive: NIH layout, per-site masks and counts, every file checksummed.

Layout (``shard_size_images`` images or fewer)::

    Data_Entry_pool.csv   NIH columns (Image Index, Finding Labels, Follow-up #, Patient ID,
                          Patient Age, Patient Gender, View Position) + Source Site, Image Path
    images/<8-digit>_<3-digit>.png
    label_masks.csv       site x label, 1 where the site annotated the label
    counts.csv            site x label: positives, negatives, unknown
    provenance.csv        Image Index -> source site, archive, source Image Index, reason
    pool_manifest.json    PoolManifest: label space, sites, options, every file's sha256

A larger pool is sharded: ``shard-00000/images/...`` with ``shard-00000/Data_Entry.csv``
(each shard loads alone in torchxrayvision's ``NIH_Dataset``), the top CSV naming every
image's ``Image Path``. Images get new names: one synthetic patient number per
source (site, archive, Patient ID), follow-ups numbered in order. Files are copied and
hashed one at a time; the folder appears under its content id by one rename.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hub.pooling.archive import ArchiveSource
from hub.pooling.pool import (
    PoolOptions,
    PoolPlan,
    counts_by_site,
    describe,
    label_counts,
    plan_labels,
)
from shared import __version__
from shared.artifacts.archive import ARCHIVE_MANIFEST, PoolManifest, SiteEntry, pool_archive_id
from shared.artifacts.audit_state import AuditDecision
from shared.artifacts.manifest import FileEntry
from shared.errors import ConfigError
from shared.fileio import sha256_file
from shared.labels import NO_FINDING

__all__ = ["ENTRY_CSV", "PooledArchive", "write_pooled_archive"]

log = logging.getLogger("radshare.hub.pooling")

ENTRY_CSV = "Data_Entry_pool.csv"
NIH_COLUMNS = ("Patient Age", "Patient Gender", "View Position")


@dataclass(frozen=True)
class PooledArchive:
    """A written pool: its content id, folder and manifest."""

    archive_id: str
    folder: Path
    manifest: PoolManifest


def _sha256(path: Path) -> FileEntry:
    sha256, size = sha256_file(path)
    return FileEntry(sha256=sha256, size_bytes=size)


def _finding_labels(row: np.ndarray, label_space: Sequence[str]) -> str:
    found = [name for name, v in zip(label_space, row, strict=True) if v > 0 and name != NO_FINDING]
    return "|".join(found) if found else NO_FINDING


def _new_names(plan: PoolPlan, sources: Sequence[ArchiveSource]) -> tuple[list[int], list[int]]:
    """New patient number and follow-up index per selected image."""
    patient_of: dict[tuple[int, str], int] = {}
    follow_ups: dict[int, int] = {}
    patients, follow = [], []
    for s, r in zip(plan.source_index, plan.row_index, strict=True):
        table = sources[s].table
        original = str(table["Patient ID"].iloc[r]) if "Patient ID" in table else str(r)
        patient = patient_of.setdefault((int(s), original), len(patient_of) + 1)
        patients.append(patient)
        follow.append(follow_ups.get(patient, 0))
        follow_ups[patient] = follow[-1] + 1
    return patients, follow


def _entry_table(plan: PoolPlan, sources: Sequence[ArchiveSource], shard_size: int) -> pd.DataFrame:
    labels, _, sites = plan_labels(plan, sources)
    patients, follow = _new_names(plan, sources)
    names = [f"{p:08d}_{f:03d}.png" for p, f in zip(patients, follow, strict=True)]
    sharded = len(names) > shard_size
    folders = [
        f"shard-{i // shard_size:05d}/images" if sharded else "images" for i in range(len(names))
    ]
    table = pd.DataFrame(
        {
            "Image Index": names,
            "Finding Labels": [_finding_labels(row, plan.label_space) for row in labels],
            "Follow-up #": follow,
            "Patient ID": patients,
        }
    )
    for column in NIH_COLUMNS:
        table[column] = [
            sources[s].table[column].iloc[r] if column in sources[s].table else ""
            for s, r in zip(plan.source_index, plan.row_index, strict=True)
        ]
    table["Source Site"] = sites
    table["Image Path"] = [f"{folder}/{name}" for folder, name in zip(folders, names, strict=True)]
    return table


def _provenance(
    plan: PoolPlan, sources: Sequence[ArchiveSource], table: pd.DataFrame
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Image Index": table["Image Index"],
            "Source Site": table["Source Site"],
            "Source Archive": [sources[s].archive_name for s in plan.source_index],
            "Source Image Index": [
                sources[s].table["Image Index"].iloc[r]
                for s, r in zip(plan.source_index, plan.row_index, strict=True)
            ],
            "Reason": plan.reason,
        }
    )


def _copy_images(
    plan: PoolPlan, sources: Sequence[ArchiveSource], table: pd.DataFrame, tmp: Path
) -> int | None:
    resolution = None
    for s, r, rel in zip(plan.source_index, plan.row_index, table["Image Path"], strict=True):
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[s].table["_path"].iloc[r], target)
        if resolution is None:
            with Image.open(target) as image:
                resolution = int(image.size[0])
    return resolution


def _write_tables(
    plan: PoolPlan, sources: Sequence[ArchiveSource], table: pd.DataFrame, tmp: Path
) -> None:
    table.to_csv(tmp / ENTRY_CSV, index=False)
    if table["Image Path"].str.startswith("shard-").any():
        for shard, rows in table.groupby(table["Image Path"].str.split("/").str[0]):
            rows.drop(columns=["Image Path"]).to_csv(
                tmp / str(shard) / "Data_Entry.csv", index=False
            )
    masks = pd.DataFrame(plan.masks, index=list(plan.label_space)).T.astype(int)
    masks.index.name = "site"
    masks.to_csv(tmp / "label_masks.csv")
    counts = counts_by_site(plan, sources)
    rows = [
        {"site": site, "label": label, **numbers}
        for site, by_label in counts.items()
        for label, numbers in by_label.items()
    ]
    pd.DataFrame(rows).to_csv(tmp / "counts.csv", index=False)
    _provenance(plan, sources, table).to_csv(tmp / "provenance.csv", index=False)


def _manifest(
    plan: PoolPlan,
    sources: Sequence[ArchiveSource],
    options: PoolOptions,
    table: pd.DataFrame,
    tmp: Path,
    resolution: int | None,
    shard_size: int,
    generators: dict[str, AuditDecision] | None = None,
) -> PoolManifest:
    labels, mask, _ = plan_labels(plan, sources)
    by_site = counts_by_site(plan, sources)
    annotated = describe(plan.masks, plan.label_space)
    sites = {
        site: SiteEntry(
            annotated_labels=annotated[site],
            num_images=int((table["Source Site"] == site).sum()),
            archives=sorted({s.archive_name for s in sources if s.site_id == site}),
            counts=by_site[site],
        )
        for site in plan.site_ids
    }
    files = {
        p.relative_to(tmp).as_posix(): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
    }
    shards = sorted({p.split("/")[0] for p in table["Image Path"] if p.startswith("shard-")})
    return PoolManifest(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        radshare_version=__version__,
        label_space=list(plan.label_space),
        sites=sites,
        options=options.model_dump(mode="json"),
        num_images=len(table),
        resolution_px=resolution,
        entry_csv=ENTRY_CSV,
        shard_size_images=shard_size,
        shards=shards,
        counts=label_counts(labels, mask, plan.label_space),
        files=files,
        generators=dict(generators or {}),
    )


def write_pooled_archive(
    plan: PoolPlan,
    sources: Sequence[ArchiveSource],
    options: PoolOptions,
    store_root: Path,
    *,
    shard_size_images: int = 10_000,
    out_dir: Path | None = None,
    generators: dict[str, AuditDecision] | None = None,
) -> PooledArchive:
    """Copy the selected images, write the tables and the manifest, then rename into place.

    ``generators``: the audit decision of every source archive's generator
    (``hub.pooling.audit.clear_archives``), recorded in the manifest's provenance.

    The folder is ``store_root / archive_id`` (the hub's store, pullable), or ``out_dir``
    when given (which must not exist).
    """
    store_root = Path(store_root)
    parent = Path(out_dir).parent if out_dir is not None else store_root
    if out_dir is not None and Path(out_dir).exists():
        raise ConfigError(f"{out_dir}: already exists; a pooled archive is never overwritten")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".pool-"))
    try:
        table = _entry_table(plan, sources, shard_size_images)
        resolution = _copy_images(plan, sources, table, tmp)
        _write_tables(plan, sources, table, tmp)
        manifest = _manifest(
            plan, sources, options, table, tmp, resolution, shard_size_images, generators
        )
        data = manifest.to_json_bytes()
        archive_id = pool_archive_id(data)
        (tmp / ARCHIVE_MANIFEST).write_bytes(data)
        final = Path(out_dir) if out_dir is not None else store_root / archive_id
        if final.exists():
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "pooled archive %s: %d images from sites %s",
        archive_id[:12],
        len(table),
        ", ".join(plan.site_ids),
    )
    return PooledArchive(archive_id, final, manifest)
