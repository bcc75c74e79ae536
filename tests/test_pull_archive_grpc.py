"""Show 5: an operator pulls a pooled archive over mTLS gRPC; checksums, resume, refusals."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers_pool import make_archive
from test_registry_grpc import make_consortium

from hub.pooling.archive import read_archive
from hub.pooling.pool import PoolOptions, plan_pool
from hub.pooling.writer import write_pooled_archive
from hub.registry.server import start_server
from shared.artifacts.archive import ARCHIVE_MANIFEST
from shared.errors import IntegrityError, NotFoundError, PermissionDeniedError
from shared.hub_client import ClientTLS, HubClient

pytestmark = pytest.mark.integration


class PullCutError(Exception):
    """Raised by the fault-injection callback to cut a pull short."""


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("consortium"))


@pytest.fixture
def hub(consortium, tmp_path):
    root = tmp_path / "hub"
    sources = [
        read_archive(
            make_archive(
                tmp_path / "a", ["Effusion", "No Finding", "Pneumonia"] * 8, site_id="a", seed=1
            )
        ),
        read_archive(
            make_archive(tmp_path / "b", ["Pneumonia", "No Finding"] * 6, site_id="b", seed=2)
        ),
    ]
    pooled = write_pooled_archive(
        plan_pool(sources, PoolOptions()),
        sources,
        PoolOptions(),
        root / "archives",
        shard_size_images=16,
    )
    server = start_server(consortium.hub_config(root, chunk_bytes=4096))
    yield server, pooled
    server.stop(grace_s=None)


def _puller(consortium, server, identity="operator"):
    return HubClient(
        f"127.0.0.1:{server.port}", ClientTLS.from_dir(consortium.tls, identity), retries=0
    )


def _check_against_manifest(folder, pooled):
    manifest_bytes = (folder / ARCHIVE_MANIFEST).read_bytes()
    assert hashlib.sha256(manifest_bytes).hexdigest() == pooled.archive_id
    files = json.loads(manifest_bytes)["files"]
    pulled = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert pulled == set(files) | {ARCHIVE_MANIFEST}
    for rel, entry in files.items():
        data = (folder / rel).read_bytes()
        assert (
            hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size_bytes"]
        )
        assert data == (pooled.folder / rel).read_bytes()


def test_operator_pulls_a_pooled_archive_matching_its_manifest(consortium, hub, tmp_path):
    server, pooled = hub
    with _puller(consortium, server) as puller:
        folder = puller.pull_archive(pooled.archive_id[:10], tmp_path / "pulled")
    _check_against_manifest(folder, pooled)
    assert (folder / "shard-00001" / "Data_Entry.csv").is_file()  # the sharded form travels as is
    assert not (tmp_path / "pulled.partial").exists()


def test_interrupted_pull_resumes_where_it_stopped(consortium, hub, tmp_path):
    server, pooled = hub
    seen: list[tuple[str, int]] = []

    def cut_after_30(path: str, offset: int) -> None:
        seen.append((path, offset))
        if len(seen) == 30:
            raise PullCutError

    with _puller(consortium, server) as puller, pytest.raises(PullCutError):
        puller.pull_archive(pooled.archive_id, tmp_path / "pulled", on_chunk=cut_after_30)
    assert (tmp_path / "pulled.partial").is_dir() and not (tmp_path / "pulled").exists()
    first_run, cut = list(seen[:29]), seen[29]  # the 30th chunk was never written
    seen.clear()
    with _puller(consortium, server) as puller:
        folder = puller.pull_archive(
            pooled.archive_id, tmp_path / "pulled", on_chunk=lambda p, o: seen.append((p, o))
        )
    _check_against_manifest(folder, pooled)
    # The second stream starts at the chunk that was cut, not at the manifest's first byte.
    assert seen[0] == cut and cut != (ARCHIVE_MANIFEST, 0)
    assert not set(seen) & set(first_run)  # nothing already written was sent again


def test_a_corrupted_file_on_the_hub_is_caught_by_the_checksum(consortium, hub, tmp_path):
    server, pooled = hub
    victim = pooled.folder / "shard-00000" / "Data_Entry.csv"
    data = bytearray(victim.read_bytes())
    data[-2] ^= 1
    victim.write_bytes(bytes(data))
    with (
        _puller(consortium, server) as puller,
        pytest.raises(IntegrityError, match=r"Data_Entry\.csv"),
    ):
        puller.pull_archive(pooled.archive_id, tmp_path / "pulled")


@pytest.mark.parametrize("identity", ["site:a", "auditor"])
def test_site_and_auditor_identities_are_refused(consortium, hub, tmp_path, identity):
    server, pooled = hub
    with _puller(consortium, server, identity) as puller, pytest.raises(PermissionDeniedError):
        puller.pull_archive(pooled.archive_id, tmp_path / "pulled")


def test_unknown_archive_is_not_found(consortium, hub, tmp_path):
    server, _ = hub
    with _puller(consortium, server) as puller, pytest.raises(NotFoundError):
        puller.pull_archive("0123456789abcdef", tmp_path / "pulled")
