"""Integrity of what the registry stores: the lost-database guard, verify (fsck), safe pulls.

Three rules keep a stored artifact from being lost or served damaged:

* a root whose database is missing while its blob store is not empty is never
  opened (``refuse_lost_database``): a fresh, empty database would make every blob
  look like garbage;
* ``verify_registry`` re-hashes every blob the database names and records each
  one's state (``ok`` / ``missing`` / ``corrupt``) in the registry; ``radshare-hub
  list --root`` shows it per artifact;
* a pull of an artifact with a blob marked bad is refused with ``DataLossError``
  before a byte is sent, and ``verified_chunks`` hashes every file as it streams
  and withholds a file's last chunk until its sha256 matches, so a blob that rotted
  since its last check is marked and refused too. Re-publishing the same bundle
  replaces the bad blob and clears the mark (``SqliteRegistry.commit``).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from shared.artifacts.records import ArtifactSummary, FileChunk, FileInfo
from shared.errors import DataLossError, RegistryUnavailableError

if TYPE_CHECKING:
    from hub.registry.base import ArtifactRecord, ArtifactRegistry
    from hub.registry.blobstore import BlobStore

__all__ = [
    "ArtifactIntegrity",
    "BlobState",
    "VerifyReport",
    "artifact_states",
    "damaged_files",
    "refuse_damaged",
    "refuse_lost_database",
    "verified_chunks",
    "verify_registry",
    "with_integrity",
]

_BLOCK_BYTES = 2**20


class BlobState(enum.StrEnum):
    """The last integrity state recorded for a blob."""

    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"


#: An artifact none of whose blobs has a recorded state (committed before states existed).
UNCHECKED = "unchecked"
_BAD = (BlobState.MISSING, BlobState.CORRUPT)


def refuse_lost_database(db_path: Path, blobs: BlobStore) -> None:
    """RegistryUnavailableError if ``db_path`` is missing while ``blobs`` holds any blob."""
    if db_path.exists():
        return
    count = len(blobs.names())
    if count:
        root = db_path.parent
        raise RegistryUnavailableError(
            f"{root}: the registry database {db_path} is missing but {count} blob(s) are stored "
            f"in {blobs.root}; refusing to start on an empty database (it would discard them). "
            f"Restore it with `radshare-hub restore --from BACKUP_DIR --root {root} --force`, "
            f"then `radshare-hub verify --root {root}`"
        )


@dataclass(frozen=True)
class ArtifactIntegrity:
    """One artifact's damaged files after a verify: (file name, sha256, state, detail)."""

    artifact_id: str
    problems: tuple[tuple[str, str, BlobState, str], ...]

    @property
    def state(self) -> str:
        """``ok``, or the worst state of its files (``missing`` before ``corrupt``)."""
        states = {p[2] for p in self.problems}
        return next((s.value for s in _BAD if s in states), BlobState.OK.value)


@dataclass
class VerifyReport:
    """What ``verify_registry`` found: every artifact's integrity, blobs hashed, bytes read."""

    artifacts: list[ArtifactIntegrity] = field(default_factory=list)
    blobs_checked: int = 0
    bytes_hashed: int = 0

    @property
    def damaged(self) -> list[ArtifactIntegrity]:
        """Artifacts with at least one missing or corrupt file."""
        return [a for a in self.artifacts if a.problems]


def _hash_blob(registry: ArtifactRegistry, artifact_id: str, info: FileInfo) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with registry.open_file(artifact_id, info.name) as handle:
        while block := handle.read(_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _check_blob(
    registry: ArtifactRegistry, artifact_id: str, info: FileInfo
) -> tuple[BlobState, str, int]:
    if not registry.blob_present(info.sha256):
        return BlobState.MISSING, "no such file in the blob store", 0
    sha256, size = _hash_blob(registry, artifact_id, info)
    if sha256 != info.sha256 or size != info.size_bytes:
        detail = (
            f"hashes to {sha256[:16]}… ({size} bytes); the database says "
            f"{info.sha256[:16]}… ({info.size_bytes} bytes)"
        )
        return BlobState.CORRUPT, detail, size
    return BlobState.OK, "verified", size


def verify_registry(registry: ArtifactRegistry) -> VerifyReport:
    """Re-hash every blob every committed artifact names; record and return each state.

    Each distinct blob is read once; its state is stored (``mark_blobs``) so that
    ``list`` shows it and pulls of damaged artifacts are refused.
    """
    report, seen = VerifyReport(), dict[str, tuple[BlobState, str]]()
    for summary in registry.list():
        problems = []
        for info in summary.files:
            if info.sha256 not in seen:
                state, detail, size = _check_blob(registry, summary.artifact_id, info)
                seen[info.sha256] = (state, detail)
                report.blobs_checked += 1
                report.bytes_hashed += size
            state, detail = seen[info.sha256]
            if state is not BlobState.OK:
                problems.append((info.name, info.sha256, state, detail))
        report.artifacts.append(ArtifactIntegrity(summary.artifact_id, tuple(problems)))
    registry.mark_blobs(seen)
    return report


def _state_of(summary: ArtifactSummary, states: dict[str, BlobState]) -> str:
    recorded = {states.get(f.sha256) for f in summary.files}
    bad = next((s.value for s in _BAD if s in recorded), None)
    return bad or (BlobState.OK.value if recorded == {BlobState.OK} else UNCHECKED)


def artifact_states(registry: ArtifactRegistry) -> dict[str, str]:
    """Artifact id → ``ok`` / ``missing`` / ``corrupt`` / ``unchecked`` from the recorded states."""
    states = registry.blob_states()
    return {s.artifact_id: _state_of(s, states) for s in registry.list()}


def with_integrity(
    registry: ArtifactRegistry, summaries: list[ArtifactSummary]
) -> list[ArtifactSummary]:
    """``summaries`` with their ``integrity`` filled in from the recorded states (for ``List``)."""
    states = registry.blob_states()
    return [replace(s, integrity=_state_of(s, states)) for s in summaries]


def damaged_files(
    registry: ArtifactRegistry, record: ArtifactRecord
) -> list[tuple[FileInfo, BlobState]]:
    """Files of ``record`` whose blob is absent or marked missing/corrupt (absent: marked now)."""
    states = registry.blob_states(f.sha256 for f in record.summary.files)
    damaged = []
    for info in record.summary.files:
        state = states.get(info.sha256)
        if not registry.blob_present(info.sha256):
            state = BlobState.MISSING
            if states.get(info.sha256) is not BlobState.MISSING:
                registry.mark_blobs({info.sha256: (state, "no such file in the blob store")})
        if state in _BAD:
            damaged.append((info, state))
    return damaged


def _loss(record: ArtifactRecord, info: FileInfo, state: str) -> DataLossError:
    return DataLossError(
        f"artifact {record.artifact_id[:12]}… file {info.name} (blob {info.sha256[:12]}…) is "
        f"{state} at the hub; it is not served. Publishing the same bundle again repairs it "
        "(`radshare-site publish`), or the operator restores a backup (`radshare-hub restore`)"
    )


def refuse_damaged(registry: ArtifactRegistry, record: ArtifactRecord) -> None:
    """DataLossError naming the first damaged file of ``record``, if any."""
    damaged = damaged_files(registry, record)
    if damaged:
        info, state = damaged[0]
        raise _loss(record, info, state.value)


def verified_chunks(
    registry: ArtifactRegistry, record: ArtifactRecord, chunk_bytes: int
) -> Iterator[FileChunk]:
    """Every file of ``record`` in chunks; a file's last chunk only once its sha256 matches.

    A mismatch marks the blob corrupt and raises DataLossError: the client never
    receives a complete damaged file.
    """
    for info in record.summary.files:
        digest, pending = hashlib.sha256(), None
        with registry.open_file(record.artifact_id, info.name) as handle:
            offset = 0
            while block := handle.read(chunk_bytes):
                if pending is not None:
                    yield pending
                digest.update(block)
                pending, offset = FileChunk(info.name, offset, block), offset + len(block)
        if digest.hexdigest() != info.sha256 or offset != info.size_bytes:
            detail = f"hashed to {digest.hexdigest()[:16]}… ({offset} bytes) while served"
            registry.mark_blobs({info.sha256: (BlobState.CORRUPT, detail)})
            raise _loss(record, info, BlobState.CORRUPT.value)
        if pending is not None:
            yield pending
