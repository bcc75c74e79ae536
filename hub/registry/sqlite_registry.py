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
It never creates a database beside a non-empty blob store (a lost database: see
``hub.registry.integrity``), and only the opening creates the file: a database
deleted or overwritten later is a ``RegistryUnavailableError`` naming it
(``hub.registry.database``). ``blob_integrity`` keeps each blob's last verified state.
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
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from hub.registry.base import (
    ArtifactRecord,
    ArtifactRegistry,
    StagedUpload,
    StoredAuditReport,
    refuse_replacement,
    report_key,
)
from hub.registry.blobstore import BlobStore
from hub.registry.database import connect
from hub.registry.integrity import BlobState, refuse_lost_database
from shared.artifacts.audit import AuditReport, parse_audit_report
from shared.artifacts.audit_state import AuditOverrideRecord, WithdrawalRecord
from shared.artifacts.records import ArtifactKind, ArtifactSummary, FileInfo
from shared.errors import ConfigError, NotFoundError, RegistryError

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
# Audit policy state (hub.registry.audit_policy): overrides name any id (an unknown bundle
# can be let through), withdrawals a committed artifact. Rows are only ever added.
_POLICY_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_overrides (
  generator_id TEXT NOT NULL,
  given_by TEXT NOT NULL,
  reason TEXT NOT NULL,
  given_at TEXT NOT NULL,
  record_json BLOB NOT NULL,
  PRIMARY KEY (generator_id, given_by, reason)
);
CREATE TABLE IF NOT EXISTS withdrawals (
  artifact_id TEXT PRIMARY KEY REFERENCES artifacts (artifact_id),
  withdrawn_at TEXT NOT NULL,
  record_json BLOB NOT NULL
);
"""
# Integrity of stored blobs (hub.registry.integrity, `radshare-hub verify`): the last state
# seen per blob; a blob without a row was verified when it was committed and not since.
_INTEGRITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob_integrity (
  sha256 TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  checked_at TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
        refuse_lost_database(self.db_path, self.blobs)
        with closing(connect(self.db_path, mode="rwc")) as db:  # the one place that creates it
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.executescript(_POLICY_SCHEMA)
            db.executescript(_INTEGRITY_SCHEMA)
            db.execute(  # when this database began: garbage collection's age limit
                "INSERT OR IGNORE INTO registry_meta (key, value) VALUES ('created_at', ?)",
                (repr(time.time()),),
            )

    def _connect(self) -> sqlite3.Connection:
        db = connect(self.db_path)  # storage errors → RegistryUnavailableError naming the file
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

    def staged_uploads(self) -> builtins.list[StagedUpload]:
        found = []
        for folder in self.uploads.iterdir():
            if _SHA256.match(folder.name):
                staged = self.staged(folder.name)
                if staged is not None:
                    found.append(staged)
        return found

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
            if existing is not None:  # a re-publish: repair any blob that is missing or corrupt
                repaired = self._adopt_all(record)
                self.discard(artifact_id)
                if repaired:
                    log.warning("re-publish of %s repaired %d blob(s)", artifact_id[:12], repaired)
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
            self.mark_blobs({f.sha256: (BlobState.OK, "committed") for f in record.summary.files})
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

    def _open_blob(self, sha256: str) -> BinaryIO:
        return self.blobs.open(sha256)

    # Audit reports.

    def put_audit_report(
        self, report: AuditReport, submitted_by: str, report_json: bytes | None = None
    ) -> bool:
        key = report_key(report)
        data = report.model_dump_json().encode() if report_json is None else bytes(report_json)
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
                return refuse_replacement(report, bytes(row[0]), data)
            db.execute(
                "INSERT INTO audit_reports "
                "(generator_id, site_id, received, report_json, submitted_by) "
                "VALUES (?, ?, ?, ?, ?)",
                (*key, data, submitted_by),
            )
        return True

    # Audit policy state.

    def audit_report_records(
        self, generator_id: str, site_id: str | None = None
    ) -> builtins.list[StoredAuditReport]:
        query = "SELECT report_json, submitted_by FROM audit_reports WHERE generator_id = ?"
        args = [generator_id]
        if site_id:
            query, args = query + " AND site_id = ?", [*args, site_id]
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY received DESC, site_id", args).fetchall()
        where = f"{self.db_path}: audit report of {generator_id}"
        return [
            StoredAuditReport(parse_audit_report(bytes(data), where=where), bytes(data), by)
            for data, by in rows
        ]

    def put_audit_override(self, override: AuditOverrideRecord) -> AuditOverrideRecord:
        key = (override.generator_id, override.given_by, override.reason)
        with self._transaction() as db:
            row = db.execute(
                "SELECT record_json FROM audit_overrides "
                "WHERE generator_id = ? AND given_by = ? AND reason = ?",
                key,
            ).fetchone()
            if row is not None:
                return AuditOverrideRecord.model_validate_json(bytes(row[0]))
            db.execute(
                "INSERT INTO audit_overrides (generator_id, given_by, reason, given_at, "
                "record_json) VALUES (?, ?, ?, ?, ?)",
                (*key, override.given_at.isoformat(), override.model_dump_json().encode()),
            )
        return override

    def audit_overrides(
        self, generator_id: str | None = None
    ) -> builtins.list[AuditOverrideRecord]:
        query, args = "SELECT record_json FROM audit_overrides", tuple[str, ...]()
        if generator_id is not None:
            query, args = query + " WHERE generator_id = ?", (generator_id,)
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY given_at, given_by", args).fetchall()
        return [AuditOverrideRecord.model_validate_json(bytes(row[0])) for row in rows]

    def withdraw(self, withdrawal: WithdrawalRecord) -> tuple[WithdrawalRecord, bool]:
        with self._transaction() as db:
            found = db.execute(
                "SELECT 1 FROM artifacts WHERE artifact_id = ?", (withdrawal.generator_id,)
            ).fetchone()
            if found is None:
                raise NotFoundError(f"no artifact with id {withdrawal.generator_id!r}")
            row = db.execute(
                "SELECT record_json FROM withdrawals WHERE artifact_id = ?",
                (withdrawal.generator_id,),
            ).fetchone()
            if row is not None:
                return WithdrawalRecord.model_validate_json(bytes(row[0])), False
            db.execute(
                "INSERT INTO withdrawals (artifact_id, withdrawn_at, record_json) VALUES (?, ?, ?)",
                (
                    withdrawal.generator_id,
                    withdrawal.withdrawn_at.isoformat(),
                    withdrawal.model_dump_json().encode(),
                ),
            )
        return withdrawal, True

    def withdrawals(self) -> dict[str, WithdrawalRecord]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT artifact_id, record_json FROM withdrawals").fetchall()
        return {aid: WithdrawalRecord.model_validate_json(bytes(data)) for aid, data in rows}

    def referenced_blobs(self) -> set[str]:
        """Every sha256 some committed artifact references."""
        with closing(self._connect()) as db:
            return {row[0] for row in db.execute("SELECT DISTINCT sha256 FROM artifact_files")}

    def collect_garbage(self) -> builtins.list[str]:
        """Delete blobs no row references (left by a crash between rename and commit).

        Never on a database that cannot be read (RegistryUnavailableError). On one
        that references no blob at all, only blobs younger than the database are
        removed (this database's own crash leftovers); older ones are kept and
        reported: an empty database beside them is a lost or replaced one, and
        deleting would lose every artifact.
        """
        with self._commit_lock:
            referenced, stored = self.referenced_blobs(), self.blobs.names()
            orphans = sorted(stored - referenced)
            if not referenced and orphans:
                orphans, kept = self._younger_than_database(orphans)
                if kept:
                    log.warning(
                        "%s references no blob but %d older blob(s) are stored in %s: kept "
                        "(restore the database: `radshare-hub restore --root %s`)",
                        self.db_path,
                        len(kept),
                        self.blobs.root,
                        self.root,
                    )
            for sha256 in orphans:
                self.blobs.delete(sha256)
        if orphans:
            log.warning("removed %d orphan blob(s) from %s", len(orphans), self.blobs.root)
        return orphans

    # Blob integrity (hub.registry.integrity; `radshare-hub verify`).

    def blob_states(self, sha256s: Iterable[str] | None = None) -> dict[str, BlobState]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT sha256, state FROM blob_integrity").fetchall()
        wanted = None if sha256s is None else set(sha256s)
        return {sha: BlobState(state) for sha, state in rows if wanted is None or sha in wanted}

    def mark_blobs(self, states: Mapping[str, tuple[BlobState, str]]) -> None:
        checked_at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO blob_integrity (sha256, state, checked_at, detail) "
                "VALUES (?, ?, ?, ?)",
                [(sha, state.value, checked_at, detail) for sha, (state, detail) in states.items()],
            )

    def blob_present(self, sha256: str) -> bool:
        return self.blobs.has(sha256)

    def _adopt_all(self, record: ArtifactRecord) -> int:
        """Adopt the staged files of an already committed artifact; returns blobs replaced."""
        replaced = 0
        if self.staged(record.artifact_id) is None:
            return 0
        for info in record.summary.files:
            replaced += self.blobs.adopt(self._part(record.artifact_id, info.name), info.sha256)
        self.mark_blobs({f.sha256: (BlobState.OK, "re-published") for f in record.summary.files})
        return replaced

    @classmethod
    def open_existing(cls, root: Path) -> SqliteRegistry:
        """Open the registry under ``root`` for a CLI; ConfigError if none is there."""
        root = Path(root)
        if not (root / "registry.sqlite3").exists() and not (root / "blobs").is_dir():
            raise ConfigError(f"{root}: no registry here (no registry.sqlite3, no blobs/)")
        return cls(root)

    def _younger_than_database(
        self, names: builtins.list[str]
    ) -> tuple[builtins.list[str], builtins.list[str]]:
        """Split blob names into (written after this database began, older); 2 s of slack."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT value FROM registry_meta WHERE key = 'created_at'").fetchone()
        began_s = float(row[0]) - 2.0 if row is not None else float("inf")
        young = [n for n in names if self.blobs.path(n).stat().st_mtime >= began_s]
        return young, [n for n in names if n not in set(young)]
