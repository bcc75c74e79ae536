"""The synthetic archive on disk: NIH layout, provenance, a journal for resume, a manifest.

Layout (loads unchanged in torchxrayvision's ``NIH_Dataset``; since an archive is
patient series of unknown view, load it with ``unique_patients=False, views=["*"]``)::

    <out>/images/<8-digit patient>_<3-digit follow-up>.png   8-bit grey PNGs
    <out>/Data_Entry.csv      Image Index, Finding Labels, Follow-up #, Patient ID,
                              Patient Age, Patient Gender, View Position (unknown: empty)
    <out>/provenance.csv      per image: generator id, labeller id, target class,
                              threshold, achieved logit, steps, seed, attempt
    <out>/images_sha256.txt   "<sha256>  images/<file>" per image (sha256sum format)
    <out>/plan.json           options and the deterministic plan, written first
    <out>/journal.jsonl       one JSON line per finished patient or failed start
    <out>/manifest.json       ArchiveManifest, written last: without it the archive is
                              incomplete, and running the same synthesis again resumes it

Resume: a patient's PNGs are written (atomically) before its journal line, and a
patient counts as done only once its line is there; a torn last line is dropped,
images no line refers to are removed at the end. So an interrupted run, restarted
with the same options, finishes the plan without duplicates.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from shared.artifacts.archive import (
    ARCHIVE_SCHEMA_VERSION,
    SYNTHETIC_MANIFEST_FILE,
    ArchiveManifest,
    ClassSummary,
    read_archive_manifest,
)
from shared.artifacts.audit_state import AuditDecision
from shared.artifacts.manifest import FileEntry
from shared.errors import ArtifactError, ConfigError
from shared.fileio import atomic_write_bytes, sha256_bytes, sha256_file
from shared.labels import NO_FINDING

__all__ = [
    "DATA_ENTRY_COLUMNS",
    "ArchivePlan",
    "ArchiveWriter",
    "ImageRecord",
    "JournalState",
    "PatientRecord",
    "PlannedPatient",
    "image_index",
]

log = logging.getLogger("radshare.hub.synthesis")

IMAGES_DIR = "images"
DATA_ENTRY_FILE = "Data_Entry.csv"
PROVENANCE_FILE = "provenance.csv"
CHECKSUMS_FILE = "images_sha256.txt"
PLAN_FILE = "plan.json"
JOURNAL_FILE = "journal.jsonl"
DATA_ENTRY_COLUMNS = (
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID",
    "Patient Age", "Patient Gender", "View Position",
)  # fmt: skip
PROVENANCE_COLUMNS = (
    "Image Index", "Patient ID", "Follow-up #", "generator_id", "labeller_id", "target_class",
    "threshold_logit", "achieved_logit", "solution_logit", "steps", "seed", "attempt",
)  # fmt: skip


def image_index(patient_id: int, follow_up: int) -> str:
    """NIH file name: ``00000042_003.png``."""
    return f"{patient_id:08d}_{follow_up:03d}.png"


class PlannedPatient(BaseModel):
    """One synthetic patient of the plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: int = Field(ge=1, le=99_999_999)
    target_class: str | None
    num_images: int = Field(ge=1, le=999)
    #: The whole target label vector (``match-site``): its findings, or ["No Finding"];
    #: every other callable finding must be absent. None: ``target_class`` alone.
    target_labels: list[str] | None = None


class ArchivePlan(BaseModel):
    """Everything that decides an archive's content; a resumed run must match it exactly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = ARCHIVE_SCHEMA_VERSION
    generator_id: str
    labeller_id: str
    resolution_px: int
    requested_images: int
    labels: str
    unlabelled: bool
    seed: int
    callable_classes: list[str]
    target_weights: dict[str, float]
    settings: dict[str, Any]
    patients: list[PlannedPatient]
    site_id: str | None = None  # the generator's site (None for a training export)
    annotated_labels: list[str] = Field(default_factory=list)  # what the CSV's labels judge
    #: The audit decision that cleared the generator (provenance, not content: a resumed
    #: run is cleared again and its decision goes into the manifest).
    audit: AuditDecision | None = None
    #: ``match-site``: each annotated label's target prevalence (the site's) and a note
    #: where the joint model could not meet it (``hub.synthesis.joint_labels``).
    target_prevalence: dict[str, float] = Field(default_factory=dict)
    target_note: str = ""

    def differences(self, other: ArchivePlan) -> list[str]:
        """Names of the fields where ``other`` differs (the audit decision aside)."""
        mine, theirs = self.model_dump(mode="json"), other.model_dump(mode="json")
        return [name for name in mine if name != "audit" and mine[name] != theirs[name]]


class ImageRecord(BaseModel):
    """One kept follow-up."""

    model_config = ConfigDict(extra="forbid")

    image_index: str
    follow_up: int
    finding_labels: str
    achieved_logit: float | None
    sha256: str = ""


class PatientRecord(BaseModel):
    """One finished synthetic patient, as its journal line."""

    model_config = ConfigDict(extra="forbid")

    event: Literal["patient"] = "patient"
    patient_id: int
    target_class: str | None
    attempt: int = 0
    seed: int
    threshold_logit: float | None = None
    solution_logit: float | None = None
    steps: int = 0
    neighbours_drawn: int = 0
    neighbours_rejected: int = 0
    images: list[ImageRecord]
    target_labels: list[str] | None = None
    severity_logit: dict[str, float] = Field(default_factory=dict)  # drawn: T_c - Youden
    centre_minus_youden_logit: dict[str, float] = Field(default_factory=dict)  # achieved


@dataclass
class JournalState:
    """What the journal says so far."""

    patients: dict[int, PatientRecord] = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)  # patient id → failed starts
    abandoned: set[int] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)  # every non-patient line

    @property
    def finished(self) -> set[int]:
        """Patients needing no more work (written or abandoned)."""
        return set(self.patients) | self.abandoned


def _png_bytes(image: np.ndarray) -> bytes:
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"archive images are uint8 [R, R], got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _digest(path: Path) -> FileEntry:
    sha256, size = sha256_file(path)
    return FileEntry(sha256=sha256, size_bytes=size)


class ArchiveWriter:
    """Creates or reopens an archive folder for ``plan`` and writes it patient by patient."""

    def __init__(self, out_dir: Path | str, plan: ArchivePlan):
        self.out_dir = Path(out_dir)
        self.plan = plan
        self.images_dir = self.out_dir / IMAGES_DIR
        self._open()

    @property
    def complete(self) -> bool:
        """Whether the manifest has been written."""
        return (self.out_dir / SYNTHETIC_MANIFEST_FILE).is_file()

    def _open(self) -> None:
        plan_path = self.out_dir / PLAN_FILE
        if plan_path.is_file():
            try:
                stored = ArchivePlan.model_validate_json(plan_path.read_text())
            except ValueError as error:
                raise ArtifactError(f"{plan_path}: invalid archive plan: {error}") from error
            changed = stored.differences(self.plan)
            if changed:
                raise ConfigError(
                    f"{plan_path}: this archive was started with other options "
                    f"({', '.join(changed)}); use a new --out or the same options"
                )
            return
        if self.out_dir.exists() and any(self.out_dir.iterdir()):
            raise ConfigError(f"{self.out_dir}: exists and is not an archive; use a new --out")
        self.images_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(plan_path, self.plan.model_dump_json(indent=1).encode())

    def replay(self) -> JournalState:
        """Read the journal (dropping a torn last line) into a :class:`JournalState`."""
        state = JournalState()
        path = self.out_dir / JOURNAL_FILE
        if not path.is_file():
            return state
        data = path.read_bytes()
        lines = data.split(b"\n")
        good_bytes = 0
        for number, line in enumerate(lines[:-1], start=1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines) - 1:
                    break  # torn last line (no newline was written after it in a crash)
                raise ArtifactError(f"{path}: line {number} is not JSON") from None
            self._apply(state, event)
            good_bytes += len(line) + 1
        if good_bytes != len(data):
            with open(path, "r+b") as handle:
                handle.truncate(good_bytes)
        return state

    @staticmethod
    def _apply(state: JournalState, event: dict[str, Any]) -> None:
        kind, pid = event.get("event"), int(event["patient_id"])
        if kind == "patient":
            state.patients[pid] = PatientRecord.model_validate(event)
            return
        state.events.append(event)
        if kind in ("gave_up", "sampling_failure"):
            state.failures[pid] += 1
        elif kind == "abandoned":
            state.abandoned.add(pid)

    def _append(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, allow_nan=False) + "\n").encode()
        with open(self.out_dir / JOURNAL_FILE, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def log_event(self, event: dict[str, Any]) -> None:
        """Journal a failed start (``gave_up``, ``sampling_failure``) or ``abandoned``."""
        if event.get("event") not in ("gave_up", "sampling_failure", "abandoned"):
            raise ValueError(f"unknown journal event {event.get('event')!r}")
        self._append(event)

    def write_patient(self, record: PatientRecord, images: Sequence[np.ndarray]) -> PatientRecord:
        """Write a patient's PNGs atomically, then its journal line (what makes it done)."""
        if len(images) != len(record.images):
            raise ValueError(f"{len(images)} images for {len(record.images)} records")
        for image, entry in zip(images, record.images, strict=True):
            data = _png_bytes(image)
            entry.sha256 = sha256_bytes(data)
            atomic_write_bytes(self.images_dir / entry.image_index, data)
        self._append(record.model_dump(mode="json"))
        return record

    def finalise(
        self,
        state: JournalState,
        per_class: list[ClassSummary],
        reports: dict[str, Any] | None = None,
    ) -> ArchiveManifest:
        """Write the CSVs, checksums, ``reports`` (name → JSON) and manifest (last)."""
        patients = [state.patients[pid] for pid in sorted(state.patients)]
        self._remove_strays({im.image_index for p in patients for im in p.images})
        for name, content in (reports or {}).items():
            data = json.dumps(content, indent=1, allow_nan=True).encode()
            atomic_write_bytes(self.out_dir / name, data)
        files = {
            **{name: _digest(self.out_dir / name) for name in (reports or {})},
            DATA_ENTRY_FILE: self._write_csv(
                DATA_ENTRY_FILE, DATA_ENTRY_COLUMNS, _entry_rows(patients)
            ),
            PROVENANCE_FILE: self._write_csv(
                PROVENANCE_FILE, PROVENANCE_COLUMNS, _provenance_rows(patients, self.plan)
            ),
            CHECKSUMS_FILE: self._write_checksums(patients),
        }
        findings = Counter(
            label for p in patients for im in p.images for label in im.finding_labels.split("|")
        )
        manifest = ArchiveManifest(
            **self.plan.model_dump(
                exclude={"schema_version", "patients", "target_prevalence", "target_note"}
            ),
            num_images=sum(len(p.images) for p in patients),
            num_patients=len(patients),
            abandoned_patients=len(state.abandoned),
            images_per_finding=dict(sorted(findings.items())),
            per_class=per_class,
            files=files,
        )
        atomic_write_bytes(
            self.out_dir / SYNTHETIC_MANIFEST_FILE, manifest.model_dump_json(indent=2).encode()
        )
        return manifest

    def read_manifest(self) -> ArchiveManifest:
        """The manifest of a complete archive."""
        return read_archive_manifest(self.out_dir)

    def _remove_strays(self, keep: set[str]) -> None:
        for path in self.images_dir.iterdir():
            if path.name not in keep:
                path.unlink()

    def _write_csv(self, name: str, columns: Sequence[str], rows: Iterable[list[Any]]) -> FileEntry:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        atomic_write_bytes(self.out_dir / name, buffer.getvalue().encode())
        return _digest(self.out_dir / name)

    def _write_checksums(self, patients: Sequence[PatientRecord]) -> FileEntry:
        lines = [
            f"{im.sha256}  {IMAGES_DIR}/{im.image_index}\n" for p in patients for im in p.images
        ]
        atomic_write_bytes(self.out_dir / CHECKSUMS_FILE, "".join(lines).encode())
        return _digest(self.out_dir / CHECKSUMS_FILE)


def _entry_rows(patients: Sequence[PatientRecord]) -> Iterable[list[Any]]:
    for p in patients:
        for im in p.images:
            yield [
                im.image_index,
                im.finding_labels or NO_FINDING,
                im.follow_up,
                p.patient_id,
                "",
                "",
                "",
            ]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _provenance_rows(patients: Sequence[PatientRecord], plan: ArchivePlan) -> Iterable[list[Any]]:
    for p in patients:
        for im in p.images:
            yield [
                im.image_index, p.patient_id, im.follow_up, plan.generator_id, plan.labeller_id,
                p.target_class or "", _fmt(p.threshold_logit), _fmt(im.achieved_logit),
                _fmt(p.solution_logit), p.steps, p.seed, p.attempt,
            ]  # fmt: skip
