"""An exclusive, non-blocking file lock held for a process's lifetime (one hub per registry
root, one demo per output folder)."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from shared.errors import ConfigError

__all__ = ["hold_exclusive_lock"]


def hold_exclusive_lock(path: Path, busy: str) -> IO[str]:
    """Open and ``flock`` ``path``; keep the handle open to hold it. ConfigError(busy) if taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")  # noqa: SIM115 (held open: the flock lives with it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(busy) from None
    return handle
