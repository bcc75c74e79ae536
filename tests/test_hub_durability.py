"""Nothing is lost: a lost or corrupt database, corrupt blobs, backup while serving, restore.

Each test is a fault against a real mTLS hub on 127.0.0.1 with the real SQLite
registry. Its database and blob store are read straight from disk (``sqlite3`` and
file bytes, never through the registry) and compared in full before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from test_registry_grpc import make_bundle, make_consortium, staged_uploads
from typer.testing import CliRunner

from hub.cli import app
from hub.registry.backup import backup_registry
from hub.registry.blobstore import BlobStore
from hub.registry.integrity import BlobState, artifact_states, verify_registry
from hub.registry.memory_registry import InMemoryRegistry
from hub.registry.server import start_server
from hub.registry.sqlite_registry import SqliteRegistry
from shared.artifacts.generator import GENERATOR_FILE
from shared.artifacts.keyring import ConsortiumKeyring
from shared.artifacts.signing import public_key_pem
from shared.errors import RegistryError, RegistryUnavailableError
from shared.networks.generator import GeneratorConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[1]
MEDIUM = GeneratorConfig.model_validate(  # ≈1.6 MB
    {"resolution_px": 32, "z_dim": 64, "fmap_base": 512, "fmap_max": 128}
)


def db_rows(root: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the registry database, read with plain sqlite3."""
    with sqlite3.connect(root / "registry.sqlite3") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def blob_files(root: Path) -> dict[str, bytes]:
    """Every file of the blob store: relative path → bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / "blobs").rglob("*"))
        if p.is_file()
    }


def keyring_of(consortium) -> ConsortiumKeyring:
    return ConsortiumKeyring(
        {s: public_key_pem(k.public_key()) for s, k in consortium.keys.items()}
    )


def run_cli(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """``radshare-hub ARGS`` in a subprocess (the real entry point, exit codes and stderr)."""
    return subprocess.run(
        [sys.executable, "-c", "from hub.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout_s,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, no traceback, and one ``error:`` line holding every needle."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("consortium"))


def publish_two(consortium, port: int, tmp_path: Path) -> dict[str, Path]:
    """Publish one generator each from sites a and b; artifact id → bundle folder."""
    bundles = {}
    for site, seed in (("a", 1), ("b", 2)):
        bundle = make_bundle(tmp_path / f"bundle-{site}", site, consortium.keys[site], seed=seed)
        with consortium.client(port, f"site:{site}") as client:
            bundles[client.publish_bundle(bundle).artifact.artifact_id] = bundle
    return bundles


def blob_path(root: Path, bundle: Path) -> Path:
    sha = hashlib.sha256((bundle / GENERATOR_FILE).read_bytes()).hexdigest()
    return root / "blobs" / sha[:2] / sha


def flip_byte(path: Path, offset: int = -9) -> None:
    """Corrupt a read-only blob in place: same size, one byte different."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# Database moved away.


def test_database_moved_away_then_restart_is_refused_and_blobs_survive(consortium, tmp_path):
    root = tmp_path / "hub"
    config = consortium.hub_config(root)
    server = start_server(config)
    try:
        bundles = publish_two(consortium, server.port, tmp_path)
    finally:
        server.stop(grace_s=None)
    rows, blobs = db_rows(root), blob_files(root)
    assert len(rows["artifacts"]) == 2 and len(blobs) == 2
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm"):
        if (root / name).exists():
            shutil.move(root / name, moved / name)

    with pytest.raises(RegistryUnavailableError) as refused:
        start_server(config)
    message = str(refused.value)
    for needle in (str(root), str(root / "registry.sqlite3"), "2 blob(s)", "radshare-hub restore"):
        assert needle in message
    assert "radshare-hub verify" in message and "\n" not in message
    cli = run_cli("serve", "--root", str(root), "--tls-dir", str(consortium.tls), "--port", "0")
    assert_one_line_error(cli, "is missing but 2 blob(s)", "radshare-hub restore")
    assert not (root / "registry.sqlite3").exists()  # no empty database was created
    assert blob_files(root) == blobs

    # The database put back: the hub starts and serves both artifacts, bytes intact.
    for path in moved.iterdir():
        shutil.move(path, root / path.name)
    server = start_server(config)
    try:
        with consortium.client(server.port, "operator") as operator:
            assert sorted(s.artifact_id for s in operator.list()) == sorted(bundles)
            for artifact_id, bundle in bundles.items():
                out = operator.pull(
                    artifact_id, tmp_path / artifact_id, trusted=keyring_of(consortium)
                )
                assert (out / GENERATOR_FILE).read_bytes() == (bundle / GENERATOR_FILE).read_bytes()
    finally:
        server.stop(grace_s=None)
    assert db_rows(root)["artifacts"] == rows["artifacts"] and blob_files(root) == blobs


def test_garbage_collection_keeps_blobs_an_empty_database_does_not_name(tmp_path):
    """An empty database beside older blobs (a replaced one): collection deletes none of them."""
    root = tmp_path / "reg"
    store = BlobStore(root / "blobs")
    for payload in (b"generator one", b"generator two"):
        source = tmp_path / "part"
        source.write_bytes(payload)
        store.adopt(source, hashlib.sha256(payload).hexdigest())
    old_s = time.time() - 3600
    for sha in store.names():
        os.utime(store.path(sha), (old_s, old_s))
    (root / "registry.sqlite3").touch()  # an empty file where the database was: not "missing"
    before = blob_files(root)
    registry = SqliteRegistry(root)
    assert registry.collect_garbage() == []
    assert blob_files(root) == before


# Corrupt blobs: verify, list, refused pulls, repair by re-publishing.


def test_corrupt_blob_is_found_by_verify_shown_by_list_refused_and_repaired(consortium, tmp_path):
    root = tmp_path / "hub"
    server = start_server(consortium.hub_config(root))
    runner, trusted = CliRunner(), keyring_of(consortium)
    try:
        bundles = publish_two(consortium, server.port, tmp_path)
        (id_a, bundle_a), (id_b, bundle_b) = sorted(bundles.items(), key=lambda kv: kv[1].name)
        rows, blobs = db_rows(root), blob_files(root)
        flip_byte(blob_path(root, bundle_a))

        verified = runner.invoke(app, ["verify", "--root", str(root)])
        assert verified.exit_code == 1, verified.output
        assert f"CORRUPT  {id_a}  {GENERATOR_FILE}" in verified.output
        assert id_b not in verified.output and "1 of 2 artifact(s) damaged" in verified.output
        sha_a = blob_path(root, bundle_a).name
        states = dict((r[0], r[1]) for r in db_rows(root)["blob_integrity"])
        assert states[sha_a] == "corrupt" and states[blob_path(root, bundle_b).name] == "ok"

        listed = runner.invoke(
            app,
            ["list", "--kind", "all", "--hub", f"127.0.0.1:{server.port}",
             "--tls-dir", str(consortium.tls), "--hub-root", str(root)],
        )  # fmt: skip
        assert listed.exit_code == 0, listed.output
        line_a = next(line for line in listed.output.splitlines() if line.startswith(id_a))
        line_b = next(line for line in listed.output.splitlines() if line.startswith(id_b))
        assert "integrity corrupt" in line_a and "integrity ok" in line_b
        with consortium.client(server.port, "auditor") as auditor:  # over gRPC, no root
            remote = {x.artifact_id: x.integrity for x in auditor.list()}
        assert remote == {id_a: "corrupt", id_b: "ok"}

        with consortium.client(server.port, "operator") as operator:
            with pytest.raises(RegistryError, match="is corrupt at the hub") as refused:
                operator.pull(id_a, tmp_path / "pulled-a", trusted=trusted)
            assert refused.value.__cause__.code() == grpc.StatusCode.DATA_LOSS
            # Rot after the last verify: B is marked ok, but the hash is checked as it streams.
            flip_byte(blob_path(root, bundle_b), offset=100)
            with pytest.raises(RegistryError, match="is corrupt at the hub") as refused:
                operator.pull(id_b, tmp_path / "pulled-b", trusted=trusted)
            assert refused.value.__cause__.code() == grpc.StatusCode.DATA_LOSS
        assert not (tmp_path / "pulled-a").exists() and not (tmp_path / "pulled-b").exists()
        assert (
            dict((r[0], r[1]) for r in db_rows(root)["blob_integrity"])[
                blob_path(root, bundle_b).name
            ]
            == "corrupt"
        )

        # Re-publishing the same bundles replaces the corrupt blobs and clears the marks.
        for artifact_id, bundle, site in ((id_a, bundle_a, "a"), (id_b, bundle_b, "b")):
            with consortium.client(server.port, f"site:{site}") as client:
                again = client.publish_bundle(bundle)
            assert again.artifact.artifact_id == artifact_id and not again.created
        assert blob_files(root) == blobs
        after = db_rows(root)
        assert {t: r for t, r in after.items() if t != "blob_integrity"} == {
            t: r for t, r in rows.items() if t != "blob_integrity"
        }
        assert {r[1] for r in after["blob_integrity"]} == {"ok"}
        with consortium.client(server.port, "operator") as operator:
            out = operator.pull(id_a, tmp_path / "pulled-a", trusted=trusted)
        assert (out / GENERATOR_FILE).read_bytes() == (bundle_a / GENERATOR_FILE).read_bytes()
        assert staged_uploads(root) == []
        assert runner.invoke(app, ["verify", "--root", str(root)]).exit_code == 0
    finally:
        server.stop(grace_s=None)


def test_adopting_an_upload_rehashes_the_blob_already_in_place(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    payload = b"the real generator weights"
    sha = hashlib.sha256(payload).hexdigest()
    (tmp_path / "first").write_bytes(payload)
    assert store.adopt(tmp_path / "first", sha)
    flip_byte(store.path(sha), offset=0)
    (tmp_path / "second").write_bytes(payload)
    assert store.adopt(tmp_path / "second", sha)  # replaced, not kept
    assert store.path(sha).read_bytes() == payload
    (tmp_path / "third").write_bytes(payload)
    assert not store.adopt(tmp_path / "third", sha)  # intact: kept, the upload dropped
    assert not (tmp_path / "third").exists() and store.path(sha).read_bytes() == payload


# Backup while publishing, restore, serve.


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def add_pooled_archive(root: Path, tmp_path: Path) -> str:
    """A small real pooled archive under ``root/archives`` (as `radshare-hub pool` writes it)."""
    from helpers_pool import make_archive

    from hub.pooling.archive import read_archive
    from hub.pooling.pool import PoolOptions, plan_pool
    from hub.pooling.writer import write_pooled_archive

    source = read_archive(
        make_archive(tmp_path / "src", ["Effusion", "No Finding"] * 4, site_id="a")
    )
    pooled = write_pooled_archive(
        plan_pool([source], PoolOptions()), [source], PoolOptions(), root / "archives"
    )
    return pooled.archive_id


def test_backup_while_publishing_then_restore_serves_the_same_registry(consortium, tmp_path):
    root = tmp_path / "hub"
    archive_id = add_pooled_archive(root, tmp_path)
    server = start_server(consortium.hub_config(root, chunk_bytes=65536))
    trusted = keyring_of(consortium)
    try:
        bundles = publish_two(consortium, server.port, tmp_path)
        slow = make_bundle(tmp_path / "slow", "c", consortium.keys["c"], cfg=MEDIUM)
        streaming, backup_done, outcome = threading.Event(), threading.Event(), {}

        def hold_mid_stream(name: str, offset: int) -> None:
            if offset >= 4 * 65536:
                streaming.set()
                backup_done.wait(60)

        def publish_slow() -> None:
            with consortium.client(server.port, "site:c", chunk_bytes=65536) as client:
                outcome["slow"] = client.publish_bundle(slow, on_chunk=hold_mid_stream)

        def publish_many() -> None:  # commits racing the backup
            for seed in range(3, 9):
                bundle = make_bundle(tmp_path / f"d{seed}", "d", consortium.keys["d"], seed=seed)
                with consortium.client(server.port, "site:d") as client:
                    outcome[seed] = client.publish_bundle(bundle)

        threads = [threading.Thread(target=publish_slow), threading.Thread(target=publish_many)]
        for thread in threads:
            thread.start()
        assert streaming.wait(60)
        deadline = time.monotonic() + 30
        while not staged_uploads(root) and time.monotonic() < deadline:
            time.sleep(0.02)  # the hub stages site c's upload once its header arrives
        assert staged_uploads(root) != []  # site c's upload is in progress
        manifest = backup_registry(root, tmp_path / "backup")
        backup_done.set()
        for thread in threads:
            thread.join(120)
        assert outcome["slow"].created and len(outcome) == 7
        source_rows = db_rows(root)
        with sqlite3.connect(root / "registry.sqlite3") as db:  # rowid: the commit order
            order = [r[0] for r in db.execute("SELECT artifact_id FROM artifacts ORDER BY rowid")]
    finally:
        backup_done.set()
        server.stop(grace_s=None)

    # The backup is the source as of one moment: a prefix of the commits, rows identical.
    backup_rows = db_rows(tmp_path / "backup")
    backed_up = {r[0] for r in backup_rows["artifacts"]}
    assert set(bundles) <= backed_up and outcome["slow"].artifact.artifact_id not in backed_up
    assert set(order[: len(backed_up)]) == backed_up and manifest.artifacts == len(backed_up)
    for table, rows in backup_rows.items():
        assert set(rows) <= set(source_rows[table]), table
    assert backup_rows["artifact_files"] == [
        r for r in source_rows["artifact_files"] if r[0] in backed_up
    ]
    source_blobs = blob_files(root)
    assert blob_files(tmp_path / "backup") == {
        f"blobs/{r[2][:2]}/{r[2]}": source_blobs[f"blobs/{r[2][:2]}/{r[2]}"]
        for r in backup_rows["artifact_files"]
    }

    # Restore into a new root, serve it, list and pull every artifact.
    restored = tmp_path / "restored"
    result = CliRunner().invoke(
        app, ["restore", "--from", str(tmp_path / "backup"), "--root", str(restored)]
    )
    assert result.exit_code == 0, result.output
    assert db_rows(restored) == backup_rows
    assert manifest.archives.keys() == {archive_id}
    assert files_under(restored / "archives") == files_under(root / "archives")
    assert blob_files(restored) == blob_files(tmp_path / "backup")
    again = CliRunner().invoke(
        app, ["restore", "--from", str(tmp_path / "backup"), "--root", str(restored)]
    )
    assert again.exit_code != 0 and "already holds a registry" in str(again.exception)
    server = start_server(consortium.hub_config(restored))
    try:
        with consortium.client(server.port, "operator") as operator:
            assert {s.artifact_id for s in operator.list()} == backed_up
            for row in backup_rows["artifact_files"]:
                out = operator.pull(row[0], tmp_path / "pulls" / row[0], trusted=trusted)
                blob = source_blobs[f"blobs/{row[2][:2]}/{row[2]}"]
                assert (out / row[1]).read_bytes() == blob
    finally:
        server.stop(grace_s=None)


def test_restore_refuses_a_damaged_backup(consortium, tmp_path):
    root = tmp_path / "hub"
    server = start_server(consortium.hub_config(root))
    try:
        publish_two(consortium, server.port, tmp_path)
    finally:
        server.stop(grace_s=None)
    backup_registry(root, tmp_path / "backup")
    victim = next(p for p in (tmp_path / "backup" / "blobs").rglob("*") if p.is_file())
    flip_byte(victim)
    cli = run_cli("restore", "--from", str(tmp_path / "backup"), "--root", str(tmp_path / "new"))
    assert_one_line_error(cli, victim.name, "corrupt in the backup")
    assert not (tmp_path / "new" / "registry.sqlite3").exists()


# A corrupt database.


def test_corrupt_database_answers_unavailable_and_clis_say_one_line(consortium, tmp_path):
    root = tmp_path / "hub"
    server = start_server(consortium.hub_config(root))
    try:
        bundles = publish_two(consortium, server.port, tmp_path)
        blobs = blob_files(root)
        db = root / "registry.sqlite3"
        db.write_bytes(os.urandom(64 * 1024))  # garbage over the database while serving
        garbage = db.read_bytes()
        with consortium.client(server.port, "operator", retries=0) as operator:
            for call in (
                operator.list,
                lambda: operator.pull(
                    next(iter(bundles)), tmp_path / "p", trusted=keyring_of(consortium)
                ),
            ):
                with pytest.raises(RegistryError) as refused:
                    call()
                assert refused.value.__cause__.code() == grpc.StatusCode.UNAVAILABLE
                for needle in (str(db), "radshare-hub restore", "radshare-hub verify"):
                    assert needle in str(refused.value)
                assert "internal error" not in str(refused.value)
    finally:
        server.stop(grace_s=None)
    for args in (
        ["serve", "--root", str(root), "--tls-dir", str(consortium.tls), "--port", "0"],
        ["verify", "--root", str(root)],
        ["backup", "--root", str(root), "--out", str(tmp_path / "backup")],
    ):
        assert_one_line_error(run_cli(*args), str(db), "file is not a database", "restore")
    assert db.read_bytes() == garbage and blob_files(root) == blobs
    assert not (tmp_path / "backup").exists()


def test_database_deleted_while_serving_is_reported_never_recreated(consortium, tmp_path):
    root = tmp_path / "hub"
    config = consortium.hub_config(root)
    server = start_server(config)
    try:
        publish_two(consortium, server.port, tmp_path)
        blobs = blob_files(root)
        for name in ("registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm"):
            (root / name).unlink(missing_ok=True)
        operator = consortium.client(server.port, "operator")
        with operator, pytest.raises(RegistryError, match="database cannot be used") as refused:
            operator.list()
        assert refused.value.__cause__.code() == grpc.StatusCode.UNAVAILABLE
        with consortium.client(server.port, "site:c", retries=0) as site:  # nothing committed
            bundle = make_bundle(tmp_path / "c", "c", consortium.keys["c"], seed=5)
            with pytest.raises(RegistryError, match="registry database cannot be used"):
                site.publish_bundle(bundle)
        assert not (root / "registry.sqlite3").exists()  # no empty database took its place
    finally:
        server.stop(grace_s=None)
    with pytest.raises(RegistryUnavailableError, match="is missing but 2 blob"):
        start_server(config)
    assert blob_files(root) == blobs


# The integrity part of the registry interface, for both implementations.


def _corrupt_stored(registry, sha256: str) -> None:
    if isinstance(registry, InMemoryRegistry):
        registry.blobs[sha256] = b"rotten" + registry.blobs[sha256][6:]
    else:
        flip_byte(registry.blobs.path(sha256), offset=0)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_registry_contract_integrity_states_and_repair(kind, tmp_path):
    from test_registry_contract import _record, _upload

    registry = SqliteRegistry(tmp_path / "reg") if kind == "sqlite" else InMemoryRegistry()
    upload, data = _upload()
    record = _record(upload, data)
    sha = record.summary.files[0].sha256
    registry.stage(upload)
    registry.append(upload.artifact_id, "g.safetensors", 0, data)
    registry.commit(record)
    assert registry.blob_present(sha) and registry.blob_states() == {sha: BlobState.OK}

    _corrupt_stored(registry, sha)
    report = verify_registry(registry)
    assert [a.state for a in report.artifacts] == ["corrupt"] and report.blobs_checked == 1
    assert registry.blob_states([sha]) == {sha: BlobState.CORRUPT}
    assert artifact_states(registry) == {upload.artifact_id: "corrupt"}

    registry.stage(upload)  # the same bundle again: commit keeps the row, replaces the blob
    registry.append(upload.artifact_id, "g.safetensors", 0, data)
    assert registry.commit(record) == (record, False)
    with registry.open_file(upload.artifact_id, "g.safetensors") as handle:
        assert handle.read() == data
    assert registry.blob_states() == {sha: BlobState.OK}
    assert [a.state for a in verify_registry(registry).artifacts] == ["ok"]
