"""Ingest a site's label CSV and images into the preprocessing cache, with a report.

``ingest(csv_path, images_dir, out_dir, options)`` is what ``radshare-site ingest``
runs, and what tests and the demo call. In order:

1. read the CSV in its layout (:mod:`site_node.data.layouts`): rows → records/issues;
2. keep frontal views (PA/AP) unless ``all_views``: the CSV says the view, else the
   DICOM header; an unknown view is kept only when the CSV has no view column at all;
3. for each record, locate the file, hash it (sha256), decode it once
   (:mod:`~site_node.data.images`) and build every resolution from 4 px up to
   ``max_resolution_px`` (:mod:`~site_node.data.preprocess`) into staging arrays;
   any failure becomes an issue and the run goes on;
4. check ``rows_read == kept + rejected``;
5. split patients into train/val/test (:mod:`~site_node.data.split`); patients whose
   images hold identical bytes under different ids are split as one group, and each
   such set of ids is a note in the report;
6. write the report (:mod:`~site_node.data.report`), then the cache with
   :func:`~site_node.data.cache.write_cache` (manifest last: a cache is complete
   once ``manifest.json`` exists).

Images are processed one after the other: decoding a 256 px PNG and building its
pyramid takes about a millisecond, so a process pool would not pay for itself on
the 2-core machines this was written on (see the timings in the ingest tests).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from shared.errors import CacheError, ConfigError, DataError, ImageDecodeError, SplitError
from shared.fileio import sha256_file
from shared.labels import NIH_LABELS, labels_to_multi_hot
from site_node.data.cache import CacheManifest, write_cache
from site_node.data.chexpert import UncertaintyPolicy
from site_node.data.images import decode_image_bytes
from site_node.data.layouts import IMAGE_COLUMN, LabelTable, Layout, read_label_table
from site_node.data.locate import ImageLocator
from site_node.data.preprocess import build_pyramid, resolution_ladder
from site_node.data.records import LabelRecord, RowRejectedError, is_frontal
from site_node.data.report import (
    REPORT_JSON,
    IngestCounts,
    IngestReport,
    Issue,
    IssueCategory,
    write_report,
)
from site_node.data.split import (
    DEFAULT_FRACTIONS,
    iterative_stratified_split,
    parse_fractions,
    split_groups,
    split_summary,
)

__all__ = ["IngestOptions", "IngestResult", "ingest"]

logger = logging.getLogger("radshare.site.ingest")

_SITE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VIEW_COLUMN = {
    Layout.NIH: "View Position",
    Layout.CHEXPERT: "Frontal/Lateral",
    Layout.PLAIN: "view",
}
_STAGING = ".staging"
_CACHE_FILE_RE = re.compile(
    r"^(manifest\.json|table\.csv|images_\d+px\.npy|ingest_report\.(json|md))(\.tmp)?$"
)
PREPROCESSING = (
    "grey [0,255] (8-bit kept, deeper min-max, DICOM modality+VOI LUT, MONOCHROME1 inverted); "
    "zero-pad to centred square; Pillow Lanczos to the largest resolution in float32; "
    "2x2 area halving down to 4 px; each level rounded to uint8"
)


@dataclass(frozen=True)
class IngestOptions:
    """Resolved ingest options; invalid values raise ConfigError naming option and value."""

    layout: Layout | None = None  # None: detect from the CSV header
    max_resolution_px: int = 256
    seed: int = 0
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    site_id: str = "site"
    all_views: bool = False
    chexpert_uncertain: UncertaintyPolicy = field(default_factory=UncertaintyPolicy)
    force: bool = False
    show_progress: bool = False

    def __post_init__(self) -> None:
        resolution_ladder(self.max_resolution_px)
        if self.layout is not None and not isinstance(self.layout, Layout):
            valid = [layout.value for layout in Layout]
            if self.layout not in valid:
                raise ConfigError(f"--layout: {self.layout!r} is not one of {valid}")
            object.__setattr__(self, "layout", Layout(self.layout))
        if self.seed < 0:
            raise ConfigError(f"--seed: {self.seed} must be >= 0")
        object.__setattr__(self, "split_fractions", parse_fractions(self.split_fractions))
        if not _SITE_ID_RE.match(self.site_id):
            raise ConfigError(
                f"--site-id: {self.site_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )

    @property
    def resolutions_px(self) -> list[int]:
        """Every cached resolution, 4 px up to ``max_resolution_px``."""
        return resolution_ladder(self.max_resolution_px)

    def to_json_dict(self) -> dict[str, Any]:
        """The options as JSON values, for the report and the manifest."""
        return {
            "layout": self.layout.value if self.layout else None,
            "max_resolution_px": self.max_resolution_px,
            "resolutions_px": self.resolutions_px,
            "seed": self.seed,
            "split_fractions": list(self.split_fractions),
            "site_id": self.site_id,
            "all_views": self.all_views,
            "chexpert_uncertain": str(self.chexpert_uncertain),
            "force": self.force,
        }


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest` wrote: the cache folder, its manifest and the report."""

    cache_dir: Path
    manifest: CacheManifest
    report: IngestReport
    report_json: Path
    report_markdown: Path
    elapsed_s: float

    @property
    def counts(self) -> IngestCounts:
        """rows_read / kept / rejected (they add up)."""
        return self.report.counts


@dataclass(frozen=True)
class _Prepared:
    pyramid: dict[int, np.ndarray]
    sha256: str
    source_format: str
    height_px: int
    width_px: int
    view: str | None


def _prepare(path: Path, resolutions_px: list[int]) -> _Prepared:
    """Read, hash, decode once and build the pyramid; RowRejectedError on any failure."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise RowRejectedError(IssueCategory.MISSING_FILE, "", "", str(error)) from error
    except OSError as error:
        raise RowRejectedError(IssueCategory.UNREADABLE_FILE, "", "", str(error)) from error
    try:
        decoded = decode_image_bytes(data, name=str(path))
    except ImageDecodeError as error:
        raise RowRejectedError(IssueCategory.DECODE_ERROR, "", "", str(error)) from error
    pixels = decoded.pixels
    if float(pixels.min()) == float(pixels.max()):
        raise RowRejectedError(
            IssueCategory.BLANK_IMAGE, "", "", f"every pixel is {float(pixels.min()):g}"
        )
    return _Prepared(
        pyramid=build_pyramid(pixels, resolutions_px),
        sha256=hashlib.sha256(data).hexdigest(),
        source_format=decoded.source_format,
        height_px=pixels.shape[0],
        width_px=pixels.shape[1],
        view=decoded.view,
    )


def _check_view(record: LabelRecord, view: str | None, table: LabelTable, all_views: bool) -> None:
    """RowRejectedError(excluded_view) unless the view is frontal, or allowed (module doc, 2)."""
    if all_views:
        return
    field_name = _VIEW_COLUMN[table.layout] if record.view else "ViewPosition (DICOM)"
    if view is None:
        if table.has_view_column:
            raise RowRejectedError(
                IssueCategory.EXCLUDED_VIEW,
                _VIEW_COLUMN[table.layout],
                "",
                "view unknown (empty cell, no DICOM ViewPosition); --all-views keeps it",
            )
        return
    if not is_frontal(view):
        raise RowRejectedError(
            IssueCategory.EXCLUDED_VIEW, field_name, view, "not a frontal (PA/AP) view"
        )


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a complete cache (unless ``force``) or a folder holding anything else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out: {out_dir} exists and is not a folder")
    if out_dir.is_dir():
        foreign = [
            p.name
            for p in out_dir.iterdir()
            if p.name != _STAGING and not _CACHE_FILE_RE.match(p.name)
        ]
        if foreign:
            raise ConfigError(
                f"--out: {out_dir} holds files that are not a radshare cache "
                f"(e.g. {sorted(foreign)[:3]}); choose a new or empty folder"
            )
        manifest = out_dir / "manifest.json"
        if manifest.is_file() and not force:
            raise CacheError(
                f"--out: {out_dir} already holds a complete cache (manifest.json); "
                "pass --force to replace it, or choose a new folder"
            )
        for stale in out_dir.iterdir():  # an incomplete cache, or a complete one with force
            if stale.name == "manifest.json":
                continue
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        manifest.unlink(missing_ok=True)  # last: never a manifest beside half-deleted arrays
    out_dir.mkdir(parents=True, exist_ok=True)


def _issue(
    file: str | Path, record: LabelRecord, rejected: RowRejectedError, image_field: str
) -> Issue:
    """An image-stage issue; without a field of its own it names the row's image column."""
    field_name, value = rejected.field, rejected.value
    if not field_name:
        field_name, value = image_field, record.image_ref
    return Issue(
        category=rejected.category,
        file=str(file),
        row=record.line,
        field=field_name,
        value=value,
        reason=rejected.reason,
    )


@dataclass
class _Kept:
    record: LabelRecord
    prepared: _Prepared
    view: str | None


def _progress(show: bool) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show,
    )


def _decode_all(
    table: LabelTable,
    locator: ImageLocator,
    options: IngestOptions,
    staging: dict[int, np.ndarray],
) -> tuple[list[_Kept], list[Issue]]:
    """Steps 2-3 of the module docstring: filter views, decode, fill the staging arrays."""
    kept: list[_Kept] = []
    issues: list[Issue] = []
    image_field = IMAGE_COLUMN[table.layout]
    with _progress(options.show_progress) as progress:
        task = progress.add_task("decode + resize", total=len(table.records))
        for record in table.records:
            progress.advance(task)
            path: Path | str = table.csv_path
            try:
                if record.view is not None:
                    _check_view(record, record.view, table, options.all_views)
                path = locator.locate(record.image_ref)
                prepared = _prepare(path, options.resolutions_px)
                view = record.view or prepared.view
                _check_view(record, view, table, options.all_views)
            except RowRejectedError as rejected:
                issues.append(_issue(path, record, rejected, image_field))
                continue
            for res_px, image in prepared.pyramid.items():
                staging[res_px][len(kept)] = image
            kept.append(_Kept(record, prepared, view))
    return kept, issues


def _build_table(kept: list[_Kept], splits: np.ndarray) -> pd.DataFrame:
    rows = []
    for item, split in zip(kept, splits, strict=True):
        record, prepared = item.record, item.prepared
        rows.append(
            {
                "image_index": record.image_ref,
                "patient_id": record.patient_id,
                "follow_up": record.follow_up,
                "view": item.view or "",
                "split": split,
                "source_sha256": prepared.sha256,
                "csv_line": record.line,
                "source_format": prepared.source_format,
                "source_height_px": prepared.height_px,
                "source_width_px": prepared.width_px,
                **dict(zip(NIH_LABELS, labels_to_multi_hot(record.labels), strict=True)),
            }
        )
    table = pd.DataFrame(rows)
    table["follow_up"] = table["follow_up"].astype("Int64")
    return table


def _images_digest(hashes: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def _open_staging(staging_dir: Path, rows: int, resolutions_px: list[int]) -> dict[int, np.ndarray]:
    """uint8 ``[rows, R, R]`` memory-mapped arrays: RAM stays flat for any site size."""
    staging_dir.mkdir(exist_ok=True)
    return {
        res_px: np.lib.format.open_memmap(
            staging_dir / f"{res_px}px.npy",
            mode="w+",
            dtype=np.uint8,
            shape=(max(rows, 1), res_px, res_px),
        )
        for res_px in resolutions_px
    }


def _new_report(
    table: LabelTable,
    kept: list[_Kept],
    issues: list[Issue],
    images_dir: Path,
    options: IngestOptions,
) -> IngestReport:
    counts = IngestCounts.from_issues(table.rows_read, len(kept), issues)  # checks they add up
    return IngestReport(
        site_id=options.site_id,
        csv_file=str(table.csv_path),
        csv_sha256=sha256_file(table.csv_path)[0],
        images_dir=str(images_dir),
        layout=table.layout.value,
        options=options.to_json_dict(),
        counts=counts,
        issues=issues,
        notes=list(table.notes),
    )


def _duplicate_notes(kept: list[_Kept]) -> list[str]:
    """One note per set of ids whose image files hold identical bytes (kept in one split)."""
    by_sha256: dict[str, list[_Kept]] = {}
    for item in kept:
        by_sha256.setdefault(item.prepared.sha256, []).append(item)
    notes = []
    for digest, items in by_sha256.items():
        if len(items) > 1:
            names = ", ".join(f"{i.record.image_ref} (row {i.record.line})" for i in items)
            notes.append(
                f"identical image bytes (sha256 {digest[:12]}…) under {len(items)} ids: "
                f"{names}; their patients are kept in one split"
            )
    if notes:
        logger.warning("%d sets of identical image bytes under different ids", len(notes))
    return notes


def _split(
    kept: list[_Kept], report: IngestReport, options: IngestOptions, out_dir: Path
) -> np.ndarray:
    """Split names per kept image; on failure write the report first, then raise."""
    if not kept:
        write_report(out_dir, report)
        raise DataError(
            f"{report.csv_file}: no usable image among {report.counts.rows_read} rows; "
            f"see {out_dir / REPORT_JSON}"
        )
    patient_ids = [item.record.patient_id for item in kept]
    labels = np.array([labels_to_multi_hot(item.record.labels) for item in kept], np.int64)
    report.notes += _duplicate_notes(kept)
    groups = split_groups(patient_ids, [item.prepared.sha256 for item in kept])
    try:
        splits = iterative_stratified_split(groups, labels, options.split_fractions, options.seed)
    except SplitError:
        write_report(out_dir, report)
        raise
    summary = split_summary(patient_ids, labels, splits, NIH_LABELS)
    report.split = {"seed": options.seed, "fractions": list(options.split_fractions), **summary}
    return splits


def _manifest_source(
    report: IngestReport, cache_table: pd.DataFrame, report_json: Path
) -> dict[str, str]:
    return {
        "layout": report.layout,
        "csv_file": report.csv_file,
        "csv_sha256": report.csv_sha256,
        "images_dir": report.images_dir,
        "images_sha256": _images_digest(cache_table["source_sha256"]),
        "report": REPORT_JSON,
        "report_sha256": sha256_file(report_json)[0],
        "rows_read": str(report.counts.rows_read),
        "rejected": str(report.counts.rejected),
        "preprocessing": PREPROCESSING,
        "options": json.dumps(report.options, sort_keys=True),
    }


def ingest(
    csv_path: Path | str,
    images_dir: Path | str,
    out_dir: Path | str,
    options: IngestOptions | None = None,
) -> IngestResult:
    """Validate, preprocess, split and cache a site's images; see the module docstring.

    Returns an :class:`IngestResult`. Rejected rows are reported, not raised. Raises
    ConfigError for bad options or an ``out_dir`` holding other files, CacheError for
    an existing complete cache without ``force``, LabelError for an unusable CSV,
    DataError when no image survives (the report is written first), SplitError when
    the kept patients cannot fill the splits.
    """
    started = time.perf_counter()
    options = options or IngestOptions()
    csv_path, images_dir, out_dir = Path(csv_path), Path(images_dir), Path(out_dir)
    if not csv_path.is_file():
        raise ConfigError(f"--csv: {csv_path} is not a file")
    if not images_dir.is_dir():
        raise ConfigError(f"--images: {images_dir} is not a folder")
    _prepare_out_dir(out_dir, options.force)

    # Read the label table.
    table = read_label_table(csv_path, options.layout, options.chexpert_uncertain)
    logger.info("read %d rows (%s layout)", table.rows_read, table.layout.value)

    staging_dir = out_dir / _STAGING
    try:
        # Decode every image once, building all resolutions.
        staging = _open_staging(staging_dir, len(table.records), options.resolutions_px)
        kept, image_issues = _decode_all(table, ImageLocator(images_dir), options, staging)
        issues = sorted([*table.issues, *image_issues], key=lambda issue: issue.row)
        report = _new_report(table, kept, issues, images_dir, options)
        logger.info(
            "kept %d of %d rows; rejected by reason: %s",
            report.counts.kept,
            report.counts.rows_read,
            report.counts.rejected_by_category,
        )

        # Split patients into train / val / test.
        splits = _split(kept, report, options, out_dir)

        # Write the report, then the cache (its manifest last).
        report.elapsed_s = round(time.perf_counter() - started, 3)
        report_json, report_md = write_report(out_dir, report)
        cache_table = _build_table(kept, splits)
        manifest = write_cache(
            out_dir,
            {res_px: array[: len(kept)] for res_px, array in staging.items()},
            cache_table,
            NIH_LABELS,
            site_id=options.site_id,
            split_seed=options.seed,
            source=_manifest_source(report, cache_table, report_json),
        )
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    elapsed_s = time.perf_counter() - started
    logger.info("cache of %d images written in %.1f s", manifest.num_images, elapsed_s)
    return IngestResult(out_dir, manifest, report, report_json, report_md, elapsed_s)
