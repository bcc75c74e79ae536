"""The archive kinds: a synthetic archive's manifest and a pooled archive's manifest.

Two folders leave the hub as archives, each described by one JSON manifest that
lists every file's sha256 and size:

* a **synthetic archive** (``hub.synthesis``): NIH layout, provenance,
  ``manifest.json`` (:class:`ArchiveManifest`), written last;
* a **pooled archive** (``hub.pooling.writer``, served by ``hub.archives``):
  ``pool_manifest.json`` (:class:`PoolManifest`), whose sha256 is the archive id,
  so a client checks the manifest against the id it asked for and every other
  file against the manifest (``shared.hub_client.HubClient.pull_archive``).

This module holds the models, reading and verification; writing stays with the
hub. No torch: the hub client imports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import __version__
from shared.artifacts.audit_state import AuditDecision
from shared.artifacts.manifest import FileEntry
from shared.artifacts.records import ArchiveChunk
from shared.errors import ArtifactError, IntegrityError
from shared.fileio import safe_relative_path, sha256_bytes, sha256_file
from shared.validation import field_error

__all__ = [
    "ARCHIVE_MANIFEST",
    "ARCHIVE_SCHEMA_VERSION",
    "NIH_DATASET_NOTE",
    "POOL_SCHEMA_VERSION",
    "STAGING_ID_FILE",
    "SYNTHETIC_MANIFEST_FILE",
    "ArchiveManifest",
    "ArchiveReceiver",
    "ClassSummary",
    "PoolManifest",
    "PullProgress",
    "SiteEntry",
    "manifest_files",
    "parse_pool_manifest",
    "pool_archive_id",
    "read_archive_manifest",
    "resume_point",
    "verify_archive_folder",
    "verify_staged_archive",
]

#: The manifest of a synthetic archive (written last: without it the archive is incomplete).
SYNTHETIC_MANIFEST_FILE = "manifest.json"
ARCHIVE_SCHEMA_VERSION = 1

#: The manifest's file name inside a pooled archive.
ARCHIVE_MANIFEST = "pool_manifest.json"
POOL_SCHEMA_VERSION = 1

NIH_DATASET_NOTE = (
    "torchxrayvision: NIH_Dataset(imgpath=<archive>/images, csvpath=<archive>/Data_Entry.csv, "
    "unique_patients=False, views=['*']) loads every image (the defaults keep one image per "
    "patient and only PA views)"
)


class ClassSummary(BaseModel):
    """Per target class: how optimisation and local sampling went (resumed runs included)."""

    model_config = ConfigDict(extra="forbid")

    target_class: str
    patients: int = 0
    images: int = 0
    images_labelled_with_target: int = 0
    starts: int = 0
    converged: int = 0
    gave_up_plateau: int = 0
    gave_up_step_limit: int = 0
    give_up_rate: float | None = None
    mean_steps_to_converge: float | None = None
    sampling_failures: int = 0
    neighbours_drawn: int = 0
    neighbours_rejected: int = 0
    abandoned_patients: int = 0


class ArchiveManifest(BaseModel):
    """``manifest.json`` of a finished archive: what it holds, how it was made, checksums."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = ARCHIVE_SCHEMA_VERSION
    kind: Literal["synthetic_archive"] = "synthetic_archive"
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    radshare_version: str = __version__
    generator_id: str
    labeller_id: str
    resolution_px: int
    labels: str
    unlabelled: bool
    seed: int
    callable_classes: list[str] = Field(description="classes the labeller's calls may name")
    target_weights: dict[str, float]
    settings: dict[str, Any]
    site_id: str | None = Field(None, description="site of the generator, for pooling masks")
    annotated_labels: list[str] = Field(
        default_factory=list,
        description="labels the archive's Finding Labels judge (callable classes and "
        "No Finding); pooling masks the others",
    )
    requested_images: int
    num_images: int
    num_patients: int
    abandoned_patients: int
    images_per_finding: dict[str, int]
    per_class: list[ClassSummary]
    files: dict[str, FileEntry]
    loading: str = NIH_DATASET_NOTE
    audit: AuditDecision | None = Field(
        default=None,
        description="the hub's audit decision that cleared the generator (an operator "
        "override with its reason, who and when); hub.registry.audit_policy",
        exclude_if=lambda value: value is None,
    )


class SiteEntry(BaseModel):
    """One site's share of a pool: annotated labels and counts (no identifiers)."""

    model_config = ConfigDict(extra="forbid")

    annotated_labels: list[str]
    num_images: int
    archives: list[str]
    counts: dict[str, dict[str, int]] = Field(description="label -> positives/negatives/unknown")


class PoolManifest(BaseModel):
    """``pool_manifest.json``: label space, masks, counts, options, and every file's checksum."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = POOL_SCHEMA_VERSION
    kind: str = "pooled-archive"
    created: str
    radshare_version: str
    label_space: list[str]
    sites: dict[str, SiteEntry]
    options: dict[str, Any]
    num_images: int
    resolution_px: int | None = None
    entry_csv: str
    shard_size_images: int
    shards: list[str] = Field(description="shard folders; empty: one images/ folder")
    counts: dict[str, dict[str, int]] = Field(description="label -> positives/negatives/unknown")
    files: dict[str, FileEntry] = Field(description="relative path -> sha256 and size")
    generators: dict[str, AuditDecision] = Field(
        default_factory=dict,
        description="source archive name -> the audit decision of its generator at pooling "
        "(an override with its reason, who and when)",
        exclude_if=lambda value: not value,
    )

    def to_json_bytes(self) -> bytes:
        """Canonical bytes (sorted keys): the archive id is their sha256."""
        return (json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=1) + "\n").encode()


def manifest_files(manifest: PoolManifest) -> list[tuple[str, FileEntry]]:
    """The listed files in stream order (path order)."""
    return sorted(manifest.files.items())


def parse_pool_manifest(data: bytes, *, where: str) -> PoolManifest:
    """Validate ``pool_manifest.json`` bytes; ArtifactError for a bad model or unsafe paths."""
    try:
        manifest = PoolManifest.model_validate_json(data)
    except ValueError as error:
        raise ArtifactError(f"{where}: invalid {ARCHIVE_MANIFEST}: {error}") from error
    unsafe = [p for p in manifest.files if not safe_relative_path(p) or p == ARCHIVE_MANIFEST]
    if unsafe:
        raise ArtifactError(f"{where}: unsafe file paths {unsafe[:3]}")
    return manifest


def read_archive_manifest(folder: Path) -> ArchiveManifest:
    """The validated ``manifest.json`` of a synthetic archive; ArtifactError naming the field."""
    path = Path(folder) / SYNTHETIC_MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; the archive is incomplete")
    try:
        manifest = ArchiveManifest.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise ArtifactError(field_error(error, path, whole="(manifest)")) from None
    unsafe = [p for p in manifest.files if not safe_relative_path(p)]
    if unsafe:
        raise ArtifactError(f"{path}: unsafe file paths {unsafe[:3]}")
    return manifest


def verify_archive_folder(
    folder: Path, files: dict[str, FileEntry], *, allowed_extra: frozenset[str] = frozenset()
) -> None:
    """IntegrityError unless ``folder`` holds exactly ``files`` (plus ``allowed_extra``), each
    with its listed size and sha256 (streamed: archives are large)."""
    folder = Path(folder)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    unexpected = sorted(on_disk - set(files) - allowed_extra)
    if unexpected:
        raise IntegrityError(f"{folder}: files the manifest does not list: {unexpected[:3]}")
    for rel, entry in sorted(files.items()):
        path = folder / rel
        if not path.is_file() or sha256_file(path) != (entry.sha256, entry.size_bytes):
            raise IntegrityError(
                f"{folder}: {rel} is missing or does not match the manifest's sha256"
            )


def pool_archive_id(manifest_bytes: bytes) -> str:
    """A pooled archive's id: the sha256 of its manifest's bytes."""
    return sha256_bytes(manifest_bytes)


# Receiving a pooled archive (the client side of PullArchive).

#: The archive id a partial pull is for, kept in the staging folder.
STAGING_ID_FILE = ".archive_id"

#: ``on_chunk(path, offset)`` before each chunk is written (progress, fault injection).
PullProgress = Callable[[str, int], None]


def _staged_manifest(staging: Path, archive_id: str) -> PoolManifest | None:
    """The staged manifest if complete and matching the id; None if not (yet) there."""
    path = staging / ARCHIVE_MANIFEST
    if not path.is_file():
        return None
    data = path.read_bytes()
    if pool_archive_id(data) != archive_id:
        return None  # partial: resume inside it
    return parse_pool_manifest(data, where=str(path))


def resume_point(staging: Path, archive_id: str | None) -> tuple[str, int]:
    """``(start_path, start_offset)`` to ask for: the first file missing, partial or wrong.

    A complete file whose sha256 does not match is deleted and fetched again;
    ``("", -1)`` means everything is there.
    """
    if archive_id is None:
        return "", 0
    manifest = _staged_manifest(staging, archive_id)
    if manifest is None:
        path = staging / ARCHIVE_MANIFEST
        return ARCHIVE_MANIFEST, path.stat().st_size if path.is_file() else 0
    for rel, entry in manifest_files(manifest):
        path = staging / rel
        size = path.stat().st_size if path.is_file() else 0
        if size < entry.size_bytes:
            return rel, size
        if size > entry.size_bytes or sha256_file(path)[0] != entry.sha256:
            path.unlink()
            return rel, 0
    return "", -1


class ArchiveReceiver:
    """Writes a pull's chunks in order into ``staging``; checks each file when it is complete.

    Every path from the hub is checked as the server checks it (no ``..``, not absolute,
    no empty segment, no backslash or NUL) before anything is written.
    """

    def __init__(self, staging: Path, archive_id: str, on_chunk: PullProgress | None = None):
        self.staging, self.archive_id, self.on_chunk = Path(staging), archive_id, on_chunk
        self.manifest = _staged_manifest(self.staging, archive_id)

    def write(self, chunk: ArchiveChunk) -> None:
        """Append one chunk to its file (IntegrityError for an unsafe path or a gap)."""
        if not safe_relative_path(chunk.path):
            raise IntegrityError(f"the hub sent an unsafe file name {chunk.path!r}; refused")
        if chunk.path != ARCHIVE_MANIFEST:
            if self.manifest is None:
                raise IntegrityError(f"the hub sent {chunk.path!r} before a complete manifest")
            if chunk.path not in self.manifest.files:
                raise IntegrityError(
                    f"the hub sent {chunk.path!r}, which the manifest does not list"
                )
        if self.on_chunk is not None:
            self.on_chunk(chunk.path, chunk.offset)
        target = self.staging / chunk.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if chunk.offset == 0 and target.exists():
            target.unlink()  # a file after the resume point is always fetched whole
        size = target.stat().st_size if target.exists() else 0
        if chunk.offset != size:
            raise IntegrityError(f"{chunk.path}: chunk at byte {chunk.offset}, have {size} bytes")
        with open(target, "ab") as handle:
            handle.write(chunk.data)
        self._check(chunk.path, size + len(chunk.data))

    def _check(self, path: str, size: int) -> None:
        if path == ARCHIVE_MANIFEST:
            self.manifest = _staged_manifest(self.staging, self.archive_id)
            return
        assert self.manifest is not None
        entry = self.manifest.files[path]
        if size < entry.size_bytes:
            return
        if size != entry.size_bytes or sha256_file(self.staging / path)[0] != entry.sha256:
            (self.staging / path).unlink()
            raise IntegrityError(f"{path}: received bytes do not match the manifest's sha256")


def verify_staged_archive(staging: Path, archive_id: str) -> PoolManifest:
    """IntegrityError unless ``staging`` holds the manifest of ``archive_id`` and every file."""
    manifest = _staged_manifest(staging, archive_id)
    if manifest is None:
        raise IntegrityError(f"{staging}: the manifest is missing or does not hash to {archive_id}")
    verify_archive_folder(
        staging, manifest.files, allowed_extra=frozenset({ARCHIVE_MANIFEST, STAGING_ID_FILE})
    )
    return manifest
