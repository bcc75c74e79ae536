"""A content-addressed blob store on disk: ``<root>/<ab>/<sha256>``, files read-only.

Blobs arrive by ``adopt``: a fully written, already verified file is fsynced
and renamed into place, so a blob is either absent or complete; a blob already
in place is re-hashed, never trusted, before an upload of the same content is dropped.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import BinaryIO

from shared.errors import NotFoundError, RegistryError
from shared.fileio import sha256_file

__all__ = ["BlobStore"]

log = logging.getLogger("radshare.hub.registry")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Immutable files named by their sha256."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (whether or not it exists)."""
        if not _SHA256.match(sha256):
            raise RegistryError(f"blob name {sha256!r} is not a lower-case sha256")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether the blob exists."""
        return self.path(sha256).is_file()

    def adopt(self, source: Path, sha256: str) -> bool:
        """Move ``source`` (verified to hash to ``sha256``) into place; False if already stored.

        A blob already at the target is kept only if it still hashes to ``sha256``;
        a corrupt one is replaced (True), so re-publishing a bundle repairs it.
        """
        target = self.path(sha256)
        if target.is_file():
            if sha256_file(target)[0] == sha256:
                os.unlink(source)
                return False
            log.warning("blob %s in %s is corrupt: replacing it", sha256, self.root)
        target.parent.mkdir(exist_ok=True)
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(source, 0o444)
        os.replace(source, target)
        return True

    def open(self, sha256: str) -> BinaryIO:
        """Open a blob for reading; NotFoundError if absent."""
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {sha256} is missing from {self.root}") from None

    def delete(self, sha256: str) -> None:
        """Remove a blob (no-op if absent)."""
        self.path(sha256).unlink(missing_ok=True)

    def names(self) -> set[str]:
        """Every stored blob's sha256."""
        return {p.name for p in self.root.glob("??/*") if _SHA256.match(p.name)}
