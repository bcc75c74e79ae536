"""The registry interface every storage backend implements (SQLite+blobs, in-memory, ...).

A registry holds three things: *staged uploads* (bytes received so far, kept
across restarts so a client can resume), *committed artifacts* (an
immutable row per content-hash id, its files in content-addressed storage) and
*audit reports* (every ``AuditReport`` stored for a committed generator, keyed by
generator, auditing site and ``received``; a re-audit adds one, none is replaced;
a site-signed report is kept as the exact bytes the site signed), and the audit policy's
state (``hub.registry.audit_policy``): operator overrides and withdrawals, only ever added.
It stores and retrieves; it does not judge: the handlers verify hashes,
signatures and tensors before they call ``commit``. ``tests/test_registry_contract.py``
runs every implementation through the same contract.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import BinaryIO

from hub.registry.integrity import BlobState
from shared.artifacts.audit import AuditReport
from shared.artifacts.audit_state import AuditOverrideRecord, WithdrawalRecord
from shared.artifacts.records import ArtifactKind, ArtifactSummary
from shared.errors import NotFoundError, RegistryError

__all__ = [
    "ArtifactRecord",
    "ArtifactRegistry",
    "GeneratorRegistry",
    "StagedUpload",
    "StoredAuditReport",
    "refuse_replacement",
    "report_key",
]


def report_key(report: AuditReport) -> tuple[str, str, str]:
    """(generator id, site id, received): the key of a stored report.

    ``received`` is sortable UTC ISO text (a naive time is taken as UTC).
    """
    received = report.received
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    received_utc = received.astimezone(UTC).isoformat(timespec="microseconds")
    return report.generator_id, report.site_id, received_utc


def refuse_replacement(report: AuditReport, stored: bytes, data: bytes) -> bool:
    """False if ``data`` is the report stored under its key already (idempotent).

    Raises RegistryError if it differs: reports are never replaced.
    """
    if stored != data:
        raise RegistryError(
            f"a different report of site {report.site_id!r} received {report_key(report)[2]} "
            f"is stored for {report.generator_id[:12]}…; reports are never replaced"
        )
    return False


@dataclass(frozen=True)
class ArtifactRecord:
    """A committed artifact: its summary, manifest bytes as published, signer key, publisher."""

    summary: ArtifactSummary
    manifest_json: bytes
    signer_public_key_pem: bytes
    publisher: str

    @property
    def artifact_id(self) -> str:
        """The content-hash id."""
        return self.summary.artifact_id


@dataclass(frozen=True)
class StagedUpload:
    """An upload in progress: the signed manifest, declared file sizes, bytes received."""

    artifact_id: str
    kind: ArtifactKind
    site_id: str
    manifest_json: bytes
    declared: dict[str, int]
    started_at: float
    received: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every declared byte has arrived."""
        return all(self.received.get(name, 0) == size for name, size in self.declared.items())


@dataclass(frozen=True)
class StoredAuditReport:
    """An audit report as stored: the exact bytes the site signed, parsed, and who submitted it."""

    report: AuditReport
    report_json: bytes
    submitted_by: str


class ArtifactRegistry(ABC):
    """Storage of staged uploads and committed artifacts, keyed by content-hash id and kind."""

    # Staged uploads.

    @abstractmethod
    def stage(self, upload: StagedUpload) -> StagedUpload:
        """Start staging ``upload``, or return the one already staged under its id."""

    @abstractmethod
    def staged(self, artifact_id: str) -> StagedUpload | None:
        """The staged upload with this id, or None."""

    @abstractmethod
    def staged_uploads(self) -> builtins.list[StagedUpload]:
        """Every staged upload (for per-site quotas), in no particular order."""

    @abstractmethod
    def append(self, artifact_id: str, file_name: str, offset: int, data: bytes) -> int:
        """Append ``data`` at ``offset`` (must equal the bytes staged); returns the new size."""

    @abstractmethod
    def open_staged(self, artifact_id: str, file_name: str) -> BinaryIO:
        """Read a staged file from its start."""

    @abstractmethod
    def discard(self, artifact_id: str) -> None:
        """Drop a staged upload (no-op if absent)."""

    @abstractmethod
    def purge_stale(self, older_than: float) -> list[str]:
        """Drop staged uploads started before ``older_than`` (epoch s); returns their ids."""

    # Committed artifacts.

    @abstractmethod
    def commit(self, record: ArtifactRecord) -> tuple[ArtifactRecord, bool]:
        """Atomically turn the staged upload ``record.artifact_id`` into a committed artifact.

        Returns ``(record, True)``, or ``(existing, False)`` if the id was already
        committed (idempotent). Either way the staged upload is gone afterwards; on
        failure nothing committed changes (no row, no new blob).
        """

    @abstractmethod
    def find(self, artifact_id: str) -> ArtifactRecord | None:
        """The committed artifact with this exact id, or None."""

    @abstractmethod
    def list(
        self, kind: ArtifactKind | None = None, site_id: str | None = None
    ) -> list[ArtifactSummary]:
        """Committed artifacts, oldest first, filtered by kind and site when given."""

    def open_file(self, artifact_id: str, file_name: str) -> BinaryIO:
        """Read one file of a committed artifact; NotFoundError if absent."""
        record = self.find(artifact_id)
        if record is None:
            raise NotFoundError(f"no artifact with id {artifact_id!r}")
        for info in record.summary.files:
            if info.name == file_name:
                return self._open_blob(info.sha256)
        raise NotFoundError(f"artifact {artifact_id[:12]}… has no file {file_name!r}")

    @abstractmethod
    def _open_blob(self, sha256: str) -> BinaryIO:
        """Read the committed file whose content hash is ``sha256``."""

    # Audit reports.

    @abstractmethod
    def put_audit_report(
        self, report: AuditReport, submitted_by: str, report_json: bytes | None = None
    ) -> bool:
        """Store ``report`` for the committed artifact ``report.generator_id`` (exact id).

        ``report_json``: the bytes to keep verbatim (a site-signed report, which the
        caller has verified and parsed into ``report``); default the report's JSON.

        Returns True, or False if a report with the same generator, site and
        ``received`` is stored already and is identical (idempotent); a different
        report under that key is a RegistryError, an uncommitted id a NotFoundError.
        Either refusal leaves the stored reports unchanged.
        """

    def audit_reports(
        self, generator_id: str, site_id: str | None = None
    ) -> builtins.list[AuditReport]:
        """Reports stored for this exact artifact id (and site, when given), newest first."""
        return [r.report for r in self.audit_report_records(generator_id, site_id)]

    # Audit policy state: stored report bytes, overrides, withdrawals (hub.registry.audit_policy).

    @abstractmethod
    def audit_report_records(
        self, generator_id: str, site_id: str | None = None
    ) -> builtins.list[StoredAuditReport]:
        """Like :meth:`audit_reports`, with the stored bytes and the submitter, newest first."""

    @abstractmethod
    def put_audit_override(self, override: AuditOverrideRecord) -> AuditOverrideRecord:
        """Record an override; the stored one if this generator, giver and reason exist already.

        Any generator id may be named (an override can let an unknown bundle through);
        overrides are never deleted or replaced.
        """

    @abstractmethod
    def audit_overrides(
        self, generator_id: str | None = None
    ) -> builtins.list[AuditOverrideRecord]:
        """Overrides (of one generator, when given), oldest first."""

    @abstractmethod
    def withdraw(self, withdrawal: WithdrawalRecord) -> tuple[WithdrawalRecord, bool]:
        """Withdraw a committed artifact: ``(record, True)``, or ``(earlier, False)`` if it was.

        NotFoundError for an id that is not committed; a withdrawal is never undone.
        """

    @abstractmethod
    def withdrawals(self) -> dict[str, WithdrawalRecord]:
        """Every withdrawal by artifact id."""

    def withdrawal(self, artifact_id: str) -> WithdrawalRecord | None:
        """The withdrawal of this exact id, or None."""
        return self.withdrawals().get(artifact_id)

    def get(self, artifact_id: str) -> ArtifactRecord:
        """The committed artifact with this id or unique prefix (>= 8 hex digits); NotFoundError."""
        record = self.find(artifact_id)
        if record is not None:
            return record
        if len(artifact_id) >= 8:
            matches = [s.artifact_id for s in self.list() if s.artifact_id.startswith(artifact_id)]
            if len(matches) == 1:
                found = self.find(matches[0])
                if found is not None:
                    return found
            if len(matches) > 1:
                raise NotFoundError(
                    f"artifact id prefix {artifact_id!r} is ambiguous ({len(matches)} match)"
                )
        raise NotFoundError(f"no artifact with id {artifact_id!r}")

    # Blob integrity (hub.registry.integrity, `radshare-hub verify`).

    @abstractmethod
    def blob_states(self, sha256s: Iterable[str] | None = None) -> dict[str, BlobState]:
        """sha256 → its last recorded state (of ``sha256s`` when given); unrecorded: absent."""

    @abstractmethod
    def mark_blobs(self, states: Mapping[str, tuple[BlobState, str]]) -> None:
        """Record ``sha256 → (state, detail)`` (replacing earlier states of those blobs)."""

    @abstractmethod
    def blob_present(self, sha256: str) -> bool:
        """Whether the blob's bytes are stored (whatever their state)."""


#: The name the issue uses: generators are one kind of artifact in the same registry.
GeneratorRegistry = ArtifactRegistry
