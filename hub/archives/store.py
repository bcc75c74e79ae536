"""The hub's archive store: pooled archives by content id, and the ``PullArchive`` stream.

Layout under the hub's root::

    <root>/archives/<archive_id>/pool_manifest.json   PoolManifest (shared.artifacts.archive)
    <root>/archives/<archive_id>/...                  the files it lists

``archive_id`` is the sha256 of the manifest's bytes, so the manifest a client
receives can be checked against the id it asked for, and every other file against
the manifest. :func:`archive_stream` is the pure handler of ``PullArchive``: the
manifest first, then every listed file in path order, as chunks read from disk one at
a time (an archive of 100,000 images is never held in memory), starting anywhere
(``start_path``, ``start_offset``) so that an interrupted pull resumes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.artifacts.archive import (
    ARCHIVE_MANIFEST,
    PoolManifest,
    manifest_files,
    parse_pool_manifest,
    pool_archive_id,
)
from shared.artifacts.records import ArchiveChunk
from shared.errors import ArtifactError, IntegrityError, NotFoundError

__all__ = ["ArchiveInfo", "ArchiveStore", "archive_stream"]

_HEX = set("0123456789abcdef")


@dataclass(frozen=True)
class ArchiveInfo:
    """What ``ArchiveStore.list`` tells about one archive."""

    archive_id: str
    num_images: int
    num_files: int
    total_bytes: int
    sites: tuple[str, ...]


class ArchiveStore:
    """Pooled archives under ``<root>``, one folder per content id."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def list(self) -> list[ArchiveInfo]:
        """Every complete archive, sorted by id."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / ARCHIVE_MANIFEST).is_file():
                continue
            manifest = self.manifest(folder.name)
            out.append(
                ArchiveInfo(
                    folder.name,
                    manifest.num_images,
                    len(manifest.files),
                    sum(f.size_bytes for f in manifest.files.values()),
                    tuple(manifest.sites),
                )
            )
        return out

    def resolve(self, archive_id: str) -> str:
        """The full id of ``archive_id`` (full, or a unique prefix of >= 8 hex digits).

        Raises:
            NotFoundError: no such archive, or an ambiguous or too short prefix.
        """
        archive_id = archive_id.lower()
        if len(archive_id) < 8 or not set(archive_id) <= _HEX:
            raise NotFoundError(f"archive id {archive_id!r}: need >= 8 hex digits")
        matches = [
            p.name
            for p in (self.root.iterdir() if self.root.is_dir() else [])
            if p.name.startswith(archive_id) and (p / ARCHIVE_MANIFEST).is_file()
        ]
        if len(matches) != 1:
            what = "no archive" if not matches else f"{len(matches)} archives"
            raise NotFoundError(f"{what} with id {archive_id!r} in {self.root}")
        return matches[0]

    def folder(self, archive_id: str) -> Path:
        """The folder of an archive (id or unique prefix)."""
        return self.root / self.resolve(archive_id)

    def manifest_bytes(self, archive_id: str) -> bytes:
        """The manifest's bytes, checked against the id (IntegrityError if they differ)."""
        full = self.resolve(archive_id)
        data = (self.root / full / ARCHIVE_MANIFEST).read_bytes()
        if pool_archive_id(data) != full:
            raise IntegrityError(f"{self.root / full}: manifest sha256 does not match its id")
        return data

    def manifest(self, archive_id: str) -> PoolManifest:
        """The validated manifest of an archive."""
        return parse_pool_manifest(self.manifest_bytes(archive_id), where=f"archive {archive_id}")


def _stream_order(manifest_size: int, manifest: PoolManifest) -> list[tuple[str, int]]:
    return [(ARCHIVE_MANIFEST, manifest_size)] + [
        (path, entry.size_bytes) for path, entry in manifest_files(manifest)
    ]


def _start_index(order: list[tuple[str, int]], start_path: str, start_offset: int) -> int:
    if not start_path:
        if start_offset:
            raise ArtifactError("start_offset without start_path")
        return 0
    for i, (path, size) in enumerate(order):
        if path == start_path:
            if not 0 <= start_offset <= size:
                raise ArtifactError(f"start_offset {start_offset} outside {path} ({size} bytes)")
            return i
    raise NotFoundError(f"start_path {start_path!r} is not a file of this archive")


def archive_stream(
    store: ArchiveStore,
    archive_id: str,
    *,
    start_path: str = "",
    start_offset: int = 0,
    chunk_bytes: int = 2**20,
) -> tuple[str, int, Iterator[ArchiveChunk]]:
    """Resolve the archive and return ``(full_id, total_bytes, chunks)``.

    Lookup and argument errors are raised here, before the first chunk. The chunks
    cover the manifest, then every listed file in path order, from ``start_path`` at
    ``start_offset`` on. A file shorter than listed raises IntegrityError; the client
    checks every file's sha256 against the manifest.
    """
    full = store.resolve(archive_id)
    manifest_data = store.manifest_bytes(full)
    manifest = store.manifest(full)
    order = _stream_order(len(manifest_data), manifest)
    first = _start_index(order, start_path, start_offset)
    total = sum(size for _, size in order)
    return (
        full,
        total,
        _chunks(store.root / full, manifest, order[first:], start_offset, chunk_bytes),
    )


def _chunks(
    folder: Path, manifest: PoolManifest, order: list[tuple[str, int]], offset0: int, chunk: int
) -> Iterator[ArchiveChunk]:
    for i, (path, size) in enumerate(order):
        offset = offset0 if i == 0 else 0
        with open(folder / path, "rb") as handle:
            handle.seek(offset)
            while offset < size:
                data = handle.read(min(chunk, size - offset))
                if not data:
                    raise IntegrityError(f"{folder / path}: shorter than the {size} bytes listed")
                yield ArchiveChunk(path, offset, data)
                offset += len(data)
