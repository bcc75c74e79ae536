"""The project's one atomic-write helper and one file-hash helper (no torch, no pickle).

Atomic: the bytes go to a uniquely named temporary file in the target's folder,
which then replaces the target by one ``os.replace``; a reader sees the old
file or the new one, never half of either, and a crash leaves at most a
``.<name>.*.tmp`` file behind. Hashing streams the file in 1 MiB blocks, so a
multi-gigabyte blob is never held in memory.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "safe_file_name",
    "safe_relative_path",
    "sha256_bytes",
    "sha256_file",
    "sha256_stream",
]

_BLOCK_BYTES = 2**20


@contextmanager
def atomic_open(
    path: Path | str, *, mode: int | None = None, fsync: bool = False, text: bool = False
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; it replaces ``path`` on success.

    For writers that stream (``np.save``, ``DataFrame.to_csv``, ``savefig``): nothing
    is held in memory, and an exception leaves ``path`` as it was. ``mode`` sets the
    permission bits; ``fsync`` flushes to disk before the rename; ``text`` opens in
    UTF-8 text mode.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        handle: IO[Any] = (
            os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb")
        )
        with handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(
    path: Path | str, data: bytes, *, mode: int | None = None, fsync: bool = False
) -> None:
    """Write ``data`` to ``path`` atomically (replacing any file there).

    ``mode`` sets the file's permission bits (default: 0666 less the umask);
    ``fsync`` flushes the data to disk before the rename (for records that
    must survive a power cut, not for every image).
    """
    with atomic_open(path, mode=mode, fsync=fsync) as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode(encoding))


def sha256_bytes(data: bytes) -> str:
    """sha256 (hex) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_stream(handle: IO[bytes]) -> tuple[str, int]:
    """sha256 (hex) and length of what ``handle`` yields from its position, 1 MiB at a time."""
    digest, size = hashlib.sha256(), 0
    while block := handle.read(_BLOCK_BYTES):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def sha256_file(path: Path | str) -> tuple[str, int]:
    """sha256 (hex) and size in bytes of a file, read in 1 MiB blocks."""
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def safe_relative_path(path: str) -> bool:
    """Whether ``path`` (from the wire or a manifest) is a plain relative POSIX path.

    Refused: empty, absolute, a ``..``, ``.`` or empty segment, a backslash, a NUL.
    """
    if not path or "\x00" in path or "\\" in path or path.startswith("/"):
        return False
    return all(segment not in ("", ".", "..") for segment in path.split("/"))


def safe_file_name(name: str) -> bool:
    """Whether ``name`` is one plain file name: a safe relative path with no separator."""
    return safe_relative_path(name) and "/" not in name
