"""One hub per registry root, one demo per output folder: ``shared.locks``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.errors import ConfigError
from shared.locks import hold_exclusive_lock


def test_a_held_lock_refuses_a_second_holder_until_released(tmp_path):
    path = tmp_path / "nested" / ".lock"
    held = hold_exclusive_lock(path, "busy: test")
    with pytest.raises(ConfigError, match="busy: test"):
        hold_exclusive_lock(path, "busy: test")
    probe = f"import fcntl; fcntl.flock(open({str(path)!r}, 'w'), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0
    held.close()
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
    hold_exclusive_lock(path, "busy: test").close()
