"""The default registry: SQLite (WAL) metadata plus a content-addressed blob store.

Layout under ``root``::

    registry.sqlite3                     artifacts, artifact_files, audit_reports tables (WAL)
    blobs/<ab>/<sha256>                  committed files, read-only, shared by content
    uploads/<artifact_id>/upload.json    a staged upload: kind, site, declared sizes, start time
    uploads/<artifact_id>/manifest.json  its signed manifest, as received
    uploads/<artifact_id>/<name>.part    bytes received so far (their size is the resume offset)

A commit moves each staged file into the blob store (fsync + rename), then
inserts the rows in one transaction; if the transaction fails, the blobs it
placed are removed again, so a failed commit leaves no orphan. Commits are
serialised by a lock; one server process per root (the server holds a lock file).

Opening a root creates missing tables (``CREATE TABLE IF NOT EXISTS``), so a
registry made before audit reports existed gains ``audit_reports`` on its next start.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import BinaryIO

from hub.registry.base import ArtifactRecord, ArtifactRegistry, StagedUpload, received_key
from hub.registry.blobstore import BlobStore
from shared.artifacts.audit import AuditReport, parse_audit_report
from shared.artifacts.records import ArtifactKind, ArtifactSummary, FileInfo
from shared.errors import NotFoundError, RegistryError

__all__ = ["SqliteRegistry"]

log = logging.getLogger("radshare.hub.registry")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
  artifact_id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  site_id TEXT NOT NULL,
  created TEXT NOT NULL,
  published_at TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  radshare_version TEXT NOT NULL,
  manifest_json BLOB NOT NULL,
  signer_public_key_pem BLOB NOT NULL,
  publisher TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_kind_site ON artifacts (kind, site_id);
CREATE TABLE IF NOT EXISTS artifact_files (
  artifact_id TEXT NOT NULL REFERENCES artifacts (artifact_id),
  name TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  PRIMARY KEY (artifact_id, name)
);
CREATE TABLE IF NOT EXISTS audit_reports (
  generator_id TEXT NOT NULL REFERENCES artifacts (artifact_id),
  site_id TEXT NOT NULL,
  received TEXT NOT NULL,
  report_json BLOB NOT NULL,
  submitted_by TEXT NOT NULL,
  PRIMARY KEY (generator_id, site_id, received)
);
"""
_COLUMNS = (
    "artifact_id, kind, site_id, created, published_at, size_bytes, radshare_version, "
    "manifest_json, signer_public_key_pem, publisher"
)


class SqliteRegistry(ArtifactRegistry):
    """SQLite metadata + on-disk blobs + on-disk staging, all under one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "registry.sqlite3"
        self.blobs = BlobStore(self.root / "blobs")
        self.uploads = self.root / "uploads"
        self.uploads.mkdir(exist_ok=True)
        self._commit_lock = threading.Lock()
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=FULL")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # Staged uploads.

    def _stage_dir(self, artifact_id: str) -> Path:
        if not _SHA256.match(artifact_id):
            raise RegistryError(f"artifact id {artifact_id!r} is not a lower-case sha256")
        return self.uploads / artifact_id

    def _part(self, artifact_id: str, file_name: str) -> Path:
        staged = self.staged(artifact_id)
        if staged is None or file_name not in staged.declared:
            raise NotFoundError(f"upload {artifact_id[:12]}… has no staged file {file_name!r}")
        return self._stage_dir(artifact_id) / f"{file_name}.part"

    def stage(self, upload: StagedUpload) -> StagedUpload:
        folder = self._stage_dir(upload.artifact_id)
        if not folder.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=self.uploads, prefix=".staging-"))
            meta = {
                "kind": upload.kind.value,
                "site_id": upload.site_id,
                "declared": upload.declared,
                "started_at": upload.started_at,
            }
            (tmp / "upload.json").write_text(json.dumps(meta))
            (tmp / "manifest.json").write_bytes(upload.manifest_json)
            for name in upload.declared:
                (tmp / f"{name}.part").touch()
            try:
                os.rename(tmp, folder)
            except OSError:  # another stream staged it first
                shutil.rmtree(tmp, ignore_errors=True)
        staged = self.staged(upload.artifact_id)
        assert staged is not None
        return staged

    def staged(self, artifact_id: str) -> StagedUpload | None:
        folder = self._stage_dir(artifact_id)
        try:
            meta = json.loads((folder / "upload.json").read_text())
            manifest = (folder / "manifest.json").read_bytes()
        except FileNotFoundError:
            return None
        received = {}
        for name in meta["declared"]:
            part = folder / f"{name}.part"
            received[name] = part.stat().st_size if part.is_file() else 0
        return StagedUpload(
            artifact_id,
            ArtifactKind(meta["kind"]),
            meta["site_id"],
            manifest,
            meta["declared"],
            meta["started_at"],
            received,
        )

    def append(self, artifact_id: str, file_name: str, offset: int, data: bytes) -> int:
        part = self._part(artifact_id, file_name)
        with open(part, "r+b", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if offset != size:
                raise RegistryError(
                    f"chunk of {file_name!r} starts at byte {offset} but {size} bytes are staged"
                )
            handle.seek(size)
            view = memoryview(data)
            while view:
                written = handle.write(view) or 0
                view = view[written:]
        return size + len(data)

    def open_staged(self, artifact_id: str, file_name: str) -> BinaryIO:
        return open(self._part(artifact_id, file_name), "rb")

    def discard(self, artifact_id: str) -> None:
        shutil.rmtree(self._stage_dir(artifact_id), ignore_errors=True)

    def purge_stale(self, older_than: float) -> list[str]:
        purged = []
        for folder in self.uploads.iterdir():
            if folder.name.startswith(".staging-"):
                if folder.stat().st_mtime < older_than:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            staged = self.staged(folder.name) if _SHA256.match(folder.name) else None
            if staged is None or staged.started_at < older_than:
                shutil.rmtree(folder, ignore_errors=True)
                purged.append(folder.name)
        return purged

    # Committed artifacts.

    def commit(self, record: ArtifactRecord) -> tuple[ArtifactRecord, bool]:
        artifact_id = record.artifact_id
        with self._commit_lock:
            existing = self.find(artifact_id)
            if existing is not None:
                self.discard(artifact_id)
                return existing, False
            placed: list[str] = []
            try:
                for info in record.summary.files:
                    if self.blobs.adopt(self._part(artifact_id, info.name), info.sha256):
                        placed.append(info.sha256)
                self._insert(record)
            except BaseException:
                for sha256 in placed:
                    self.blobs.delete(sha256)
                raise
            self.discard(artifact_id)
        return record, True

    def _insert(self, record: ArtifactRecord) -> None:
        s = record.summary
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    s.artifact_id,
                    s.kind.value,
                    s.site_id,
                    s.created,
                    s.published_at,
                    s.size_bytes,
                    s.radshare_version,
                    record.manifest_json,
                    record.signer_public_key_pem,
                    record.publisher,
                ),
            )
            db.executemany(
                "INSERT INTO artifact_files (artifact_id, name, sha256, size_bytes) "
                "VALUES (?, ?, ?, ?)",
                [(s.artifact_id, f.name, f.sha256, f.size_bytes) for f in s.files],
            )

    def _files(self, db: sqlite3.Connection, artifact_id: str) -> tuple[FileInfo, ...]:
        rows = db.execute(
            "SELECT name, sha256, size_bytes FROM artifact_files "
            "WHERE artifact_id = ? ORDER BY name",
            (artifact_id,),
        )
        return tuple(FileInfo(*row) for row in rows)

    def _record(self, db: sqlite3.Connection, row: tuple) -> ArtifactRecord:
        aid, kind, site, created, published, size, version, manifest, pem, publisher = row
        summary = ArtifactSummary(
            aid, ArtifactKind(kind), site, created, published, size, self._files(db, aid), version
        )
        return ArtifactRecord(summary, bytes(manifest), bytes(pem), publisher)

    def find(self, artifact_id: str) -> ArtifactRecord | None:
        with closing(self._connect()) as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM artifacts WHERE artifact_id = ?", (artifact_id,)
            ).fetchone()
            return None if row is None else self._record(db, row)

    def list(
        self, kind: ArtifactKind | None = None, site_id: str | None = None
    ) -> list[ArtifactSummary]:
        query, args = f"SELECT {_COLUMNS} FROM artifacts WHERE 1=1", tuple[str, ...]()
        if kind is not None:
            query, args = query + " AND kind = ?", (*args, kind.value)
        if site_id:
            query, args = query + " AND site_id = ?", (*args, site_id)
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY published_at, artifact_id", args).fetchall()
            return [self._record(db, row).summary for row in rows]

    def open_file(self, artifact_id: str, file_name: str) -> BinaryIO:
        record = self.find(artifact_id)
        if record is None:
            raise NotFoundError(f"no artifact with id {artifact_id!r}")
        for info in record.summary.files:
            if info.name == file_name:
                return self.blobs.open(info.sha256)
        raise NotFoundError(f"artifact {artifact_id[:12]}… has no file {file_name!r}")

    # Audit reports.

    def put_audit_report(self, report: AuditReport, submitted_by: str) -> bool:
        key = (report.generator_id, report.site_id, received_key(report))
        data = report.model_dump_json().encode()
        with self._transaction() as db:
            found = db.execute(
                "SELECT 1 FROM artifacts WHERE artifact_id = ?", (report.generator_id,)
            ).fetchone()
            if found is None:
                raise NotFoundError(f"no artifact with id {report.generator_id!r}")
            row = db.execute(
                "SELECT report_json FROM audit_reports "
                "WHERE generator_id = ? AND site_id = ? AND received = ?",
                key,
            ).fetchone()
            if row is not None:
                if bytes(row[0]) != data:
                    raise RegistryError(
                        f"a different report of site {report.site_id!r} received {key[2]} is "
                        f"stored for {report.generator_id[:12]}…; reports are never replaced"
                    )
                return False
            db.execute(
                "INSERT INTO audit_reports "
                "(generator_id, site_id, received, report_json, submitted_by) "
                "VALUES (?, ?, ?, ?, ?)",
                (*key, data, submitted_by),
            )
        return True

    def audit_reports(
        self, generator_id: str, site_id: str | None = None
    ) -> builtins.list[AuditReport]:
        query, args = "SELECT report_json FROM audit_reports WHERE generator_id = ?", [generator_id]
        if site_id:
            query, args = query + " AND site_id = ?", [*args, site_id]
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY received DESC, site_id", args).fetchall()
        return [
            parse_audit_report(
                bytes(row[0]), where=f"{self.db_path}: audit report of {generator_id}"
            )
            for row in rows
        ]

    def referenced_blobs(self) -> set[str]:
        """Every sha256 some committed artifact references."""
        with closing(self._connect()) as db:
            return {row[0] for row in db.execute("SELECT DISTINCT sha256 FROM artifact_files")}

    def collect_garbage(self) -> builtins.list[str]:
        """Delete blobs no row references (left by a crash between rename and commit)."""
        with self._commit_lock:
            orphans = sorted(self.blobs.names() - self.referenced_blobs())
            for sha256 in orphans:
                self.blobs.delete(sha256)
        if orphans:
            log.warning("removed %d orphan blob(s) from %s", len(orphans), self.blobs.root)
        return orphans
