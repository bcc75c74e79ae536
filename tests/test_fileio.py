"""shared.fileio: the one atomic-write helper, the one file hash, the wire-name rules."""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pytest

from shared.fileio import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    safe_file_name,
    safe_relative_path,
    sha256_bytes,
    sha256_file,
)


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "cache.npy"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]


def test_streaming_writers_and_modes(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with atomic_open(tmp_path / "x.npy") as handle:
        np.save(handle, array, allow_pickle=False)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy", allow_pickle=False), array)
    atomic_write_bytes(tmp_path / "key", b"secret", mode=0o600)
    assert stat.S_IMODE(os.stat(tmp_path / "key").st_mode) == 0o600
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "plain.txt", "x")
    assert stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == 0o666 & ~umask


def test_sha256_matches_hashlib_across_block_boundaries(tmp_path):
    data = os.urandom(2**20 * 2 + 17)  # three blocks, the last one short
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == (hashlib.sha256(data).hexdigest(), len(data))
    assert sha256_bytes(b"") == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("name", "relative_ok", "file_ok"),
    [
        ("generator.safetensors", True, True),
        ("shard-00001/images/00000001_000.png", True, False),
        ("../evil", False, False),
        ("a/../../evil", False, False),
        ("/etc/passwd", False, False),
        ("a//b", False, False),
        ("./a", False, False),
        ("a\\..\\b", False, False),
        ("a\x00b", False, False),
        ("", False, False),
        ("..", False, False),
    ],
)
def test_wire_name_rules(name, relative_ok, file_ok):
    assert (safe_relative_path(name), safe_file_name(name)) == (relative_ok, file_ok)
