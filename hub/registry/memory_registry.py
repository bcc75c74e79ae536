"""An in-memory registry: the contract's second implementation, for tests and throwaway hubs."""

from __future__ import annotations

import builtins
import io
import threading
from typing import BinaryIO

from hub.registry.base import ArtifactRecord, ArtifactRegistry, StagedUpload, received_key
from shared.artifacts.audit import AuditReport
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
        #: (generator_id, site_id, received) → (report, submitted_by)
        self.reports: dict[tuple[str, str, str], tuple[AuditReport, str]] = {}

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
            if existing is None:
                for info in record.summary.files:
                    self.blobs.setdefault(info.sha256, bytes(self._part(artifact_id, info.name)))
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

    def open_file(self, artifact_id: str, file_name: str) -> BinaryIO:
        record = self.find(artifact_id)
        if record is None:
            raise NotFoundError(f"no artifact with id {artifact_id!r}")
        for info in record.summary.files:
            if info.name == file_name:
                return io.BytesIO(self.blobs[info.sha256])
        raise NotFoundError(f"artifact {artifact_id[:12]}… has no file {file_name!r}")

    def put_audit_report(self, report: AuditReport, submitted_by: str) -> bool:
        key = (report.generator_id, report.site_id, received_key(report))
        with self._lock:
            if report.generator_id not in self._records:
                raise NotFoundError(f"no artifact with id {report.generator_id!r}")
            existing = self.reports.get(key)
            if existing is not None:
                if existing[0].model_dump_json() != report.model_dump_json():
                    raise RegistryError(
                        f"a different report of site {report.site_id!r} received {key[2]} is "
                        f"stored for {report.generator_id[:12]}…; reports are never replaced"
                    )
                return False
            self.reports[key] = (report, submitted_by)
        return True

    def audit_reports(
        self, generator_id: str, site_id: str | None = None
    ) -> builtins.list[AuditReport]:
        with self._lock:
            keys = [
                k for k in self.reports if k[0] == generator_id and (not site_id or k[1] == site_id)
            ]
            keys.sort(key=lambda k: k[1])
            keys.sort(key=lambda k: k[2], reverse=True)  # newest first; sites in order on a tie
            return [self.reports[k][0] for k in keys]
