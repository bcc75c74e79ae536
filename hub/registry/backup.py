"""Consistent backups of a registry root while it serves, and restores that verify every byte.

A backup folder holds::

    registry.sqlite3      a snapshot by SQLite's online backup API (one read transaction:
                          consistent while the hub keeps committing; WAL folded in)
    blobs/<ab>/<sha256>   exactly the blobs that snapshot names, each re-hashed as copied
    archives/<id>/...     every complete pooled archive, each file checked against its manifest
    backup.json           BackupManifest: database sha256, every blob's sha256 and size

``backup.json`` is written last and the folder appears by one rename, so a
folder with a manifest is a complete backup. Blobs are immutable and only
garbage collection (at server start, under the root lock) deletes any, so every
blob the snapshot names is still in place when it is copied; uploads in progress
(``uploads/``) are not part of a backup: their sites resume or re-publish. Pooled
archives (``archives/<id>``) are immutable folders named by their manifest's hash;
each complete one is copied with every file checked against that manifest.

``restore_registry`` verifies the backup (database hash, every blob's hash, and
that the database names exactly the blobs listed), refuses a root that already
holds a registry unless ``force``, holds the root lock, writes the blobs, and
puts the database in place last: an interrupted restore leaves blobs without a
database, which the hub refuses to start on (``refuse_lost_database``) until the
restore is run again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.archives.store import ArchiveStore
from hub.registry.blobstore import BlobStore
from hub.registry.database import connect, unavailable
from shared.artifacts.archive import (
    ARCHIVE_MANIFEST,
    manifest_files,
    parse_pool_manifest,
    pool_archive_id,
)
from shared.artifacts.manifest import FileEntry
from shared.errors import ConfigError, DataLossError, IntegrityError, RegistryUnavailableError
from shared.fileio import atomic_write_text, sha256_file
from shared.locks import hold_exclusive_lock
from shared.validation import field_error

__all__ = [
    "BACKUP_MANIFEST",
    "DB_FILE",
    "BackupManifest",
    "backup_registry",
    "read_backup",
    "restore_registry",
]

#: The manifest of a backup folder.
BACKUP_MANIFEST = "backup.json"
#: The registry database's file name in a root and in a backup.
DB_FILE = "registry.sqlite3"

_BLOCK_BYTES = 2**20


class BackupManifest(BaseModel):
    """What a backup holds: the database's hash, and every blob's sha256 and size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["radshare-hub-backup"] = "radshare-hub-backup"
    schema_version: Literal[1] = 1
    created: datetime
    source_root: str
    database_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    database_bytes: int = Field(ge=0)
    artifacts: int = Field(ge=0)
    blobs: dict[str, int] = Field(description="sha256 → size in bytes")
    archives: dict[str, int] = Field(
        default_factory=dict, description="pooled archive id → bytes (manifest included)"
    )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _snapshot_database(db_path: Path, target: Path) -> None:
    """Copy ``db_path`` consistently into ``target`` (online backup), as one self-contained file."""
    with closing(connect(db_path)) as source, closing(sqlite3.connect(target)) as copy:
        try:
            source.backup(copy)
        except sqlite3.DatabaseError as error:
            raise unavailable(db_path, error) from error
        copy.execute("PRAGMA journal_mode=DELETE")


def _named_blobs(db_path: Path) -> tuple[dict[str, int], int]:
    """The blobs (sha256 → size) and the number of artifacts a registry database names."""
    with closing(connect(db_path)) as db:
        blobs = dict(db.execute("SELECT DISTINCT sha256, size_bytes FROM artifact_files"))
        (artifacts,) = db.execute("SELECT COUNT(*) FROM artifacts").fetchone()
    return blobs, int(artifacts)


def _copy_verified(source: Path, target: Path, sha256: str, size_bytes: int) -> None:
    """Copy ``source`` to ``target``, hashing it on the way; DataLossError unless ``sha256``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, copied = hashlib.sha256(), 0
    try:
        with open(source, "rb") as reader, open(target, "xb") as writer:
            while block := reader.read(_BLOCK_BYTES):
                digest.update(block)
                writer.write(block)
                copied += len(block)
            writer.flush()
            os.fsync(writer.fileno())
    except FileNotFoundError:
        raise DataLossError(f"{source} is missing (sha256 {sha256[:16]}…)") from None
    if digest.hexdigest() != sha256 or copied != size_bytes:
        raise DataLossError(
            f"{source} is corrupt (hashes to {digest.hexdigest()[:16]}…, {copied} bytes)"
        )
    os.chmod(target, 0o444)


def _archive_files(folder: Path, archive_id: str) -> tuple[bytes, list[tuple[str, FileEntry]]]:
    """An archive's manifest bytes (IntegrityError unless they hash to its id) and its files."""
    data = (folder / ARCHIVE_MANIFEST).read_bytes()
    if pool_archive_id(data) != archive_id:
        raise IntegrityError(f"{folder}: {ARCHIVE_MANIFEST} does not hash to the archive's id")
    return data, manifest_files(parse_pool_manifest(data, where=str(folder)))


def _copy_archives(store_root: Path, target: Path) -> dict[str, int]:
    """Copy every complete pooled archive (files verified against its manifest); id → bytes."""
    copied = {}
    for info in ArchiveStore(store_root).list():
        folder = store_root / info.archive_id
        data, files = _archive_files(folder, info.archive_id)
        (target / info.archive_id).mkdir(parents=True)
        (target / info.archive_id / ARCHIVE_MANIFEST).write_bytes(data)
        for path, entry in files:
            destination = target / info.archive_id / path
            _copy_verified(folder / path, destination, entry.sha256, entry.size_bytes)
        copied[info.archive_id] = len(data) + sum(entry.size_bytes for _, entry in files)
    return copied


def _verify_archive(folder: Path, archive_id: str) -> None:
    _data, files = _archive_files(folder, archive_id)
    for path, entry in files:
        found = sha256_file(folder / path) if (folder / path).is_file() else ("missing", 0)
        if found != (entry.sha256, entry.size_bytes):
            raise IntegrityError(f"{folder / path}: missing or corrupt in the backup")


def backup_registry(root: Path, out: Path) -> BackupManifest:
    """Back up the registry under ``root`` into the new folder ``out`` (safe while serving).

    Raises ConfigError (``out`` exists), RegistryUnavailableError (no or a corrupt
    database) and DataLossError naming a blob that is missing or corrupt (run
    ``radshare-hub verify``; the backup is not written).
    """
    root, out = Path(root), Path(out)
    db_path = root / DB_FILE
    if not db_path.is_file():
        raise RegistryUnavailableError(f"{root}: no registry database {db_path} to back up")
    if out.exists():
        raise ConfigError(f"{out}: already exists; a backup never overwrites")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        _snapshot_database(db_path, tmp / DB_FILE)
        blobs, artifacts = _named_blobs(tmp / DB_FILE)
        store = root / "blobs"
        for sha256, size_bytes in sorted(blobs.items()):
            try:
                _copy_verified(
                    store / sha256[:2] / sha256,
                    tmp / "blobs" / sha256[:2] / sha256,
                    sha256,
                    size_bytes,
                )
            except DataLossError as error:
                raise DataLossError(
                    f"{error}; backup of {root} stopped: run `radshare-hub verify --root {root}`"
                ) from None
        archives = _copy_archives(root / "archives", tmp / "archives")
        database_sha256, database_bytes = sha256_file(tmp / DB_FILE)
        manifest = BackupManifest(
            created=datetime.now(UTC),
            source_root=str(root.resolve()),
            database_sha256=database_sha256,
            database_bytes=database_bytes,
            artifacts=artifacts,
            blobs=blobs,
            archives=archives,
        )
        atomic_write_text(tmp / BACKUP_MANIFEST, manifest.model_dump_json(indent=2) + "\n")
        _fsync_dir(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_backup(source: Path) -> BackupManifest:
    """Read and fully verify a backup folder: database hash, blob hashes, blobs named by the DB."""
    source = Path(source)
    path = source / BACKUP_MANIFEST
    try:
        manifest = BackupManifest.model_validate_json(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the backup manifest ({error.strerror})") from None
    except ValidationError as error:
        raise ConfigError(field_error(error, path, whole="(manifest)")) from None
    db_sha256, db_bytes = sha256_file(source / DB_FILE)
    if (db_sha256, db_bytes) != (manifest.database_sha256, manifest.database_bytes):
        raise IntegrityError(f"{source / DB_FILE}: does not match {path} (hash or size)")
    named, _ = _named_blobs(source / DB_FILE)
    if named != manifest.blobs:
        raise IntegrityError(f"{source / DB_FILE}: names other blobs than {path} lists")
    for sha256, size_bytes in manifest.blobs.items():
        blob = source / "blobs" / sha256[:2] / sha256
        found = sha256_file(blob) if blob.is_file() else ("missing", 0)
        if found != (sha256, size_bytes):
            raise IntegrityError(f"{blob}: missing or corrupt in the backup ({found[0][:16]}…)")
    for archive_id in manifest.archives:
        _verify_archive(source / "archives" / archive_id, archive_id)
    return manifest


def _holds_registry(root: Path) -> str | None:
    blobs = BlobStore(root / "blobs").names() if (root / "blobs").is_dir() else set()
    if (root / DB_FILE).exists() or blobs:
        return f"a database: {(root / DB_FILE).exists()}, {len(blobs)} blob(s)"
    return None


def restore_registry(source: Path, root: Path, *, force: bool = False) -> BackupManifest:
    """Restore the backup ``source`` into ``root`` (no server may be running on it).

    ``root`` may hold other things (``tls/``, ``site_keys/``); if it already holds a
    registry (a database or blobs) this refuses unless ``force``, which replaces the
    database and adds the backup's blobs (a blob already there is re-hashed and
    replaced if it differs). Raises ConfigError, IntegrityError (a damaged backup).
    """
    source, root = Path(source), Path(root)
    manifest = read_backup(source)
    root.mkdir(parents=True, exist_ok=True)
    lock = hold_exclusive_lock(
        root / ".lock", f"{root}: a hub server is using this root; stop it before restoring"
    )
    with lock:
        present = _holds_registry(root)
        if present is not None and not force:
            raise ConfigError(
                f"{root}: already holds a registry ({present}); restore never overwrites it "
                "unless --force is given"
            )
        store = BlobStore(root / "blobs")
        for sha256 in sorted(manifest.blobs):
            staging = Path(tempfile.mkdtemp(dir=store.root, prefix=".restore-"))
            try:
                shutil.copyfile(source / "blobs" / sha256[:2] / sha256, staging / sha256)
                store.adopt(staging / sha256, sha256)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        for archive_id in sorted(manifest.archives):  # content-addressed: one present is kept
            if not (root / "archives" / archive_id).exists():
                (root / "archives").mkdir(exist_ok=True)
                staging = Path(tempfile.mkdtemp(dir=root / "archives", prefix=".restore-"))
                shutil.copytree(source / "archives" / archive_id, staging / archive_id)
                os.rename(staging / archive_id, root / "archives" / archive_id)
                shutil.rmtree(staging)
        staged_db = root / f".{DB_FILE}.restore"
        shutil.copyfile(source / DB_FILE, staged_db)
        with open(staged_db, "rb") as handle:
            os.fsync(handle.fileno())
        for leftover in (root / f"{DB_FILE}-wal", root / f"{DB_FILE}-shm"):
            leftover.unlink(missing_ok=True)  # a stale WAL would be replayed into the new file
        os.replace(staged_db, root / DB_FILE)
        _fsync_dir(root)
    return manifest
