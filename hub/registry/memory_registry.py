"""An in-memory registry: the contract's second implementation, for tests and throwaway hubs."""

from __future__ import annotations

import builtins
import hashlib
import io
import threading
from collections.abc import Iterable, Mapping
from typing import BinaryIO

from hub.registry.base import (
    ArtifactRecord,
    ArtifactRegistry,
    StagedUpload,
    StoredAuditReport,
    refuse_replacement,
    report_key,
)
from hub.registry.integrity import BlobState
from shared.artifacts.audit import AuditReport
from shared.artifacts.audit_state import AuditOverrideRecord, WithdrawalRecord
from shared.artifacts.records import ArtifactKind, ArtifactSummary
from shared.errors import NotFoundError, RegistryError

__all__ = ["InMemoryRegistry"]


class InMemoryRegistry(ArtifactRegistry):
    """Dicts and bytearrays behind one lock; nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._staged: dict[str, StagedUpload] = {}
        self._parts: dict[str, dict[str, bytearray]] = {}
        self._records: dict[str, ArtifactRecord] = {}
        self._order: list[str] = []
        self.blobs: dict[str, bytes] = {}
        #: (generator_id, site_id, received) → (report, submitted_by, stored bytes)
        self.reports: dict[tuple[str, str, str], tuple[AuditReport, str, bytes]] = {}
        self.overrides: list[AuditOverrideRecord] = []
        self._withdrawals: dict[str, WithdrawalRecord] = {}
        self._blob_states: dict[str, tuple[BlobState, str]] = {}

    def stage(self, upload: StagedUpload) -> StagedUpload:
        with self._lock:
            if upload.artifact_id not in self._staged:
                self._staged[upload.artifact_id] = upload
                self._parts[upload.artifact_id] = {name: bytearray() for name in upload.declared}
        staged = self.staged(upload.artifact_id)
        assert staged is not None
        return staged

    def staged(self, artifact_id: str) -> StagedUpload | None:
        with self._lock:
            upload = self._staged.get(artifact_id)
            if upload is None:
                return None
            received = {name: len(data) for name, data in self._parts[artifact_id].items()}
        return StagedUpload(
            upload.artifact_id,
            upload.kind,
            upload.site_id,
            upload.manifest_json,
            dict(upload.declared),
            upload.started_at,
            received,
        )

    def staged_uploads(self) -> builtins.list[StagedUpload]:
        with self._lock:
            ids = list(self._staged)
        return [s for s in map(self.staged, ids) if s is not None]

    def _part(self, artifact_id: str, file_name: str) -> bytearray:
        try:
            return self._parts[artifact_id][file_name]
        except KeyError:
            raise NotFoundError(
                f"upload {artifact_id[:12]}… has no staged file {file_name!r}"
            ) from None

    def append(self, artifact_id: str, file_name: str, offset: int, data: bytes) -> int:
        with self._lock:
            part = self._part(artifact_id, file_name)
            if offset != len(part):
                raise RegistryError(
                    f"chunk of {file_name!r} starts at byte {offset} "
                    f"but {len(part)} bytes are staged"
                )
            part.extend(data)
            return len(part)

    def open_staged(self, artifact_id: str, file_name: str) -> BinaryIO:
        with self._lock:
            return io.BytesIO(bytes(self._part(artifact_id, file_name)))

    def discard(self, artifact_id: str) -> None:
        with self._lock:
            self._staged.pop(artifact_id, None)
            self._parts.pop(artifact_id, None)

    def purge_stale(self, older_than: float) -> list[str]:
        stale = [a for a, u in list(self._staged.items()) if u.started_at < older_than]
        for artifact_id in stale:
            self.discard(artifact_id)
        return stale

    def commit(self, record: ArtifactRecord) -> tuple[ArtifactRecord, bool]:
        artifact_id = record.artifact_id
        with self._lock:
            existing = self._records.get(artifact_id)
            repairable = existing is None or artifact_id in self._parts
            for info in record.summary.files if repairable else ():
                stored = self.blobs.get(info.sha256)  # kept only if it still hashes to its name
                if stored is None or hashlib.sha256(stored).hexdigest() != info.sha256:
                    self.blobs[info.sha256] = bytes(self._part(artifact_id, info.name))
                self._blob_states[info.sha256] = (BlobState.OK, "committed")
            if existing is None:
                self._records[artifact_id] = record
                self._order.append(artifact_id)
            self._staged.pop(artifact_id, None)
            self._parts.pop(artifact_id, None)
        return (record, True) if existing is None else (existing, False)

    def find(self, artifact_id: str) -> ArtifactRecord | None:
        with self._lock:
            return self._records.get(artifact_id)

    def list(
        self, kind: ArtifactKind | None = None, site_id: str | None = None
    ) -> list[ArtifactSummary]:
        with self._lock:
            summaries = [self._records[a].summary for a in self._order]
        return [
            s
            for s in summaries
            if (kind is None or s.kind == kind) and (not site_id or s.site_id == site_id)
        ]

    def _open_blob(self, sha256: str) -> BinaryIO:
        return io.BytesIO(self.blobs[sha256])

    def put_audit_report(
        self, report: AuditReport, submitted_by: str, report_json: bytes | None = None
    ) -> bool:
        key = report_key(report)
        data = report.model_dump_json().encode() if report_json is None else bytes(report_json)
        with self._lock:
            if report.generator_id not in self._records:
                raise NotFoundError(f"no artifact with id {report.generator_id!r}")
            existing = self.reports.get(key)
            if existing is not None:
                return refuse_replacement(report, existing[2], data)
            self.reports[key] = (report, submitted_by, data)
        return True

    def _report_keys(
        self, generator_id: str, site_id: str | None
    ) -> builtins.list[tuple[str, str, str]]:
        keys = [
            k for k in self.reports if k[0] == generator_id and (not site_id or k[1] == site_id)
        ]
        keys.sort(key=lambda k: k[1])
        keys.sort(key=lambda k: k[2], reverse=True)  # newest first; sites in order on a tie
        return keys

    def audit_report_records(
        self, generator_id: str, site_id: str | None = None
    ) -> builtins.list[StoredAuditReport]:
        with self._lock:
            found = [self.reports[k] for k in self._report_keys(generator_id, site_id)]
        return [StoredAuditReport(report, data, by) for report, by, data in found]

    def put_audit_override(self, override: AuditOverrideRecord) -> AuditOverrideRecord:
        with self._lock:
            for earlier in self.overrides:
                if (earlier.generator_id, earlier.given_by, earlier.reason) == (
                    override.generator_id,
                    override.given_by,
                    override.reason,
                ):
                    return earlier
            self.overrides.append(override)
        return override

    def audit_overrides(
        self, generator_id: str | None = None
    ) -> builtins.list[AuditOverrideRecord]:
        with self._lock:
            found = [o for o in self.overrides if generator_id in (None, o.generator_id)]
        return sorted(found, key=lambda o: (o.given_at, o.given_by))

    def withdraw(self, withdrawal: WithdrawalRecord) -> tuple[WithdrawalRecord, bool]:
        with self._lock:
            if withdrawal.generator_id not in self._records:
                raise NotFoundError(f"no artifact with id {withdrawal.generator_id!r}")
            earlier = self._withdrawals.get(withdrawal.generator_id)
            if earlier is not None:
                return earlier, False
            self._withdrawals[withdrawal.generator_id] = withdrawal
        return withdrawal, True

    def withdrawals(self) -> dict[str, WithdrawalRecord]:
        with self._lock:
            return dict(self._withdrawals)

    # Blob integrity: tests may damage ``self.blobs`` to exercise verify and repair.

    def blob_states(self, sha256s: Iterable[str] | None = None) -> dict[str, BlobState]:
        wanted = None if sha256s is None else set(sha256s)
        with self._lock:
            return {s: v[0] for s, v in self._blob_states.items() if wanted is None or s in wanted}

    def mark_blobs(self, states: Mapping[str, tuple[BlobState, str]]) -> None:
        with self._lock:
            self._blob_states.update(states)

    def blob_present(self, sha256: str) -> bool:
        with self._lock:
            return sha256 in self.blobs
