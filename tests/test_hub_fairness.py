"""Fair uploads on a real mTLS hub (loopback, SQLite registry): per-site slots, stalls, quotas.

Each test is an attack a site could mount on the hub before fairness existed:
holding every upload slot with streams that never finish, or filling the disk
with staged uploads. The attacker speaks raw gRPC (it need not use our client);
honest sites use ``HubClient``. Registry state is read from disk, not through
the registry (``snapshot``), and compared before and after. Two tests (unmarked) are
plain unit tests of the gate and of ``staged_uploads`` in both registries.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from test_registry_grpc import (
    GENERATOR_FILE,
    Consortium,
    make_bundle,
    make_consortium,
    snapshot,
    staged_uploads,
)

from hub.registry.server import HubServer, start_server
from shared.artifacts.records import ArtifactKind, FileChunk, PublishHeader
from shared.artifacts.signing import artifact_id_of, parse_json_object
from shared.errors import QuotaError, UploadInterruptedError
from shared.hub_client import ClientTLS
from shared.proto import radshare_hub_pb2_grpc as pb_grpc
from shared.proto import serde

CHUNK_BYTES = 8192


@pytest.fixture(scope="module")
def consortium(tmp_path_factory) -> Consortium:
    return make_consortium(tmp_path_factory.mktemp("consortium"))


def _root(hub: HubServer) -> Path:
    return hub.state.registry.root  # type: ignore[attr-defined]


def _staged_sizes(root: Path) -> dict[str, int]:
    """Every staged file and its size, read from disk."""
    uploads = root / "uploads"
    return {
        p.relative_to(uploads).as_posix(): p.stat().st_size
        for p in uploads.rglob("*")
        if p.is_file()
    }


class StalledStream:
    """An attacker's raw PublishGenerator stream: the header, ``chunks`` chunks, then silence.

    ``chunks=-1``: not even the header; ``interval_s``: seconds between chunks (a drip).
    """

    def __init__(
        self,
        consortium: Consortium,
        port: int,
        identity: str,
        bundle: Path,
        chunks: int,
        interval_s: float = 0.0,
    ):
        self.interval_s = interval_s
        tls = ClientTLS.from_dir(consortium.tls, identity)
        self.channel = grpc.secure_channel(f"127.0.0.1:{port}", tls.credentials())
        self.release = threading.Event()
        manifest = (bundle / "manifest.json").read_bytes()
        data = (bundle / GENERATOR_FILE).read_bytes()
        self.future = pb_grpc.RadshareHubStub(self.channel).PublishGenerator.future(
            self._messages(manifest, data, chunks), timeout=60
        )

    def _messages(self, manifest: bytes, data: bytes, chunks: int) -> Iterator:
        if chunks < 0:
            self.release.wait(60)
            return
        yield serde.publish_request_to_proto(PublishHeader(ArtifactKind.GENERATOR, manifest))
        for i in range(chunks):
            time.sleep(self.interval_s if i else 0.0)
            block = data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
            yield serde.publish_request_to_proto(FileChunk(GENERATOR_FILE, i * CHUNK_BYTES, block))
        self.release.wait(60)  # the stream stays open and silent

    def close(self) -> None:
        self.release.set()
        self.future.cancel()
        self.channel.close()


def _reader_threads() -> int:
    return sum(t.name == "radshare-upload-reader" for t in threading.enumerate())


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the hub"
        time.sleep(0.02)


@pytest.mark.integration
def test_one_site_holding_every_slot_does_not_block_another(consortium, tmp_path):
    # Two slots; each attacker stream stays silent far longer than the test runs.
    hub = start_server(
        consortium.hub_config(tmp_path / "hub", max_concurrent_uploads=2, upload_stall_timeout_s=60)
    )
    bundles = [make_bundle(tmp_path / f"a{i}", "a", consortium.keys["a"], seed=i) for i in (1, 2)]
    bundle_b = make_bundle(tmp_path / "b", "b", consortium.keys["b"], seed=3)
    attackers = []
    try:
        attackers.append(StalledStream(consortium, hub.port, "site:a", bundles[0], chunks=1))
        _wait_for(lambda: len(staged_uploads(_root(hub))) == 1)
        attackers.append(StalledStream(consortium, hub.port, "site:a", bundles[1], chunks=1))
        # Site a's second stream is refused at once: one site holds at most half the slots.
        with pytest.raises(grpc.RpcError) as refused:
            attackers[1].future.result(timeout=20)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_uploads_per_site" in refused.value.details()
        assert serde.retry_after_from_metadata(refused.value.trailing_metadata()) is not None
        before = snapshot(_root(hub))
        with consortium.client(hub.port, "site:b", busy_wait_s=1.0) as site_b:
            result = site_b.publish_bundle(bundle_b)
        assert result.created
        assert not attackers[0].future.done()  # the first attacker still holds its slot
    finally:
        for attacker in attackers:
            attacker.close()
        hub.stop(grace_s=None)
    artifacts, files, blobs = snapshot(_root(hub))
    sha_b = hashlib.sha256((bundle_b / GENERATOR_FILE).read_bytes()).hexdigest()
    assert before == ([], [], [])
    assert artifacts == [(result.artifact.artifact_id, "generator", "b")]
    assert [sha for _, _, sha in files] == [sha_b] and blobs == [f"blobs/{sha_b[:2]}/{sha_b}"]


@pytest.mark.integration
def test_stalled_stream_times_out_frees_its_slot_and_keeps_its_bytes(consortium, tmp_path):
    hub = start_server(
        consortium.hub_config(tmp_path / "hub", max_concurrent_uploads=1, upload_stall_timeout_s=1)
    )
    bundle_a = make_bundle(tmp_path / "a", "a", consortium.keys["a"], seed=1)
    bundle_b = make_bundle(tmp_path / "b", "b", consortium.keys["b"], seed=2)
    streams: list[StalledStream] = []
    try:
        silent = StalledStream(consortium, hub.port, "site:c", bundle_a, chunks=-1)
        streams.append(silent)
        _wait_for(lambda: hub.state.gate.streams_open("site:c") == 1)
        # Site c's silent streams cannot pin the hub's threads: one per site (here) at most.
        more = StalledStream(consortium, hub.port, "site:c", bundle_a, chunks=-1)
        streams.append(more)
        with pytest.raises(grpc.RpcError) as refused:
            more.future.result(timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_uploads_per_site" in refused.value.details()
        attacker = StalledStream(consortium, hub.port, "site:a", bundle_a, chunks=2)
        streams.append(attacker)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as stalled:
            attacker.future.result(timeout=15)
        assert stalled.value.code() == grpc.StatusCode.ABORTED
        assert "sent nothing for 1 s (upload_stall_timeout_s)" in stalled.value.details()
        assert f"the {2 * CHUNK_BYTES} bytes staged are kept" in stalled.value.details()
        assert time.monotonic() - started < 10
        # The hub's reader of the closed stream ends too (no thread is left per stalled stream).
        _wait_for(lambda: _reader_threads() <= 1, timeout_s=5)  # at most site c's, still open
        with pytest.raises(grpc.RpcError) as no_header:  # site c opens a stream, sends nothing
            silent.future.result(timeout=15)
        assert no_header.value.code() == grpc.StatusCode.ABORTED
        assert "no header within 1 s" in no_header.value.details()
        manifest = parse_json_object((bundle_a / "manifest.json").read_bytes(), where="test")
        with consortium.client(hub.port, "site:a") as site_a:
            status = site_a.upload_status(artifact_id_of(manifest))
        assert not status.committed and status.received == {GENERATOR_FILE: 2 * CHUNK_BYTES}
        # The only slot is free again: site b publishes without waiting.
        with consortium.client(hub.port, "site:b", retries=0) as site_b:
            assert site_b.publish_bundle(bundle_b).created
        # Site a resumes from the bytes the hub kept.
        sent: list[int] = []
        with consortium.client(hub.port, "site:a", chunk_bytes=CHUNK_BYTES) as site_a:
            result = site_a.publish_bundle(bundle_a, on_chunk=lambda _n, o: sent.append(o))
        assert result.created and sent[0] == 2 * CHUNK_BYTES
    finally:
        for stream in streams:
            stream.close()
        hub.stop(grace_s=None)
    _wait_for(lambda: _reader_threads() == 0, timeout_s=5)
    artifacts, _, _ = snapshot(_root(hub))
    assert sorted(site for _, _, site in artifacts) == ["a", "b"]
    assert staged_uploads(_root(hub)) == []


@pytest.mark.integration
def test_staged_bytes_per_site_quota(consortium, tmp_path, caplog):
    bundle_a1 = make_bundle(tmp_path / "a1", "a", consortium.keys["a"], seed=1)
    bundle_a2 = make_bundle(tmp_path / "a2", "a", consortium.keys["a"], seed=2)
    bundle_b = make_bundle(tmp_path / "b", "b", consortium.keys["b"], seed=3)
    size = (bundle_a1 / GENERATOR_FILE).stat().st_size
    quota = size + size // 2  # room for one staged bundle per site, not two
    hub = start_server(consortium.hub_config(tmp_path / "hub", max_staged_bytes_per_site=quota))
    try:
        # Site a leaves one upload half-sent: the hub keeps it staged for resume.
        half = tmp_path / "half.safetensors"
        half.write_bytes((bundle_a1 / GENERATOR_FILE).read_bytes()[: size // 2])
        manifest_a1 = (bundle_a1 / "manifest.json").read_bytes()
        site_a = consortium.client(hub.port, "site:a", retries=0)
        with site_a, pytest.raises(UploadInterruptedError, match="is incomplete"):
            site_a.upload(manifest_a1, {GENERATOR_FILE: half})
        before = snapshot(_root(hub)), _staged_sizes(_root(hub))
        assert len(staged_uploads(_root(hub))) == 1
        # A second upload would stage past the quota: refused, retried with backoff, then a
        # clear error; nothing is stored.
        caplog.set_level(logging.WARNING, logger="radshare.hub_client")
        started = time.monotonic()
        site_a = consortium.client(hub.port, "site:a", backoff_s=0.1, busy_wait_s=1.5)
        with site_a, pytest.raises(QuotaError) as refused:
            site_a.publish_bundle(bundle_a2)
        waited_s = time.monotonic() - started
        message = str(refused.value)
        assert refused.value.__cause__.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_staged_bytes_per_site" in message and f"quota is {quota} bytes" in message
        assert f"reserving {size} bytes ({size // 2} received)" in message
        assert "still busy after" in message and "busy_wait_s=1.5" in message
        retries = [r for r in caplog.records if "RESOURCE_EXHAUSTED" in r.getMessage()]
        assert len(retries) >= 2 and 1.0 <= waited_s < 6.0
        assert (snapshot(_root(hub)), _staged_sizes(_root(hub))) == before
        # The quota is per site: site b is not affected.
        with consortium.client(hub.port, "site:b", retries=0) as site_b:
            assert site_b.publish_bundle(bundle_b).created
        # Site a may always resume what it staged; then there is room again.
        with consortium.client(hub.port, "site:a", retries=0) as site_a:
            assert site_a.publish_bundle(bundle_a1).created
            assert site_a.publish_bundle(bundle_a2).created
    finally:
        hub.stop(grace_s=None)
    assert staged_uploads(_root(hub)) == []


@pytest.mark.integration
def test_a_permanent_limit_is_not_retried(consortium, tmp_path):
    hub = start_server(consortium.hub_config(tmp_path / "hub", max_upload_bytes=1000))
    bundle_a = make_bundle(tmp_path / "a", "a", consortium.keys["a"])
    try:
        started = time.monotonic()
        site_a = consortium.client(hub.port, "site:a", busy_wait_s=30)
        with site_a, pytest.raises(QuotaError, match="max_upload_bytes"):
            site_a.publish_bundle(bundle_a)
        assert time.monotonic() - started < 5  # no backoff on a refusal that does not free itself
    finally:
        hub.stop(grace_s=None)


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_staged_uploads_and_quota_in_both_registries(backend, tmp_path):
    """``staged_uploads`` (the quota's input) is part of the registry contract."""
    from hub.registry.base import StagedUpload
    from hub.registry.fairness import check_staged_quota
    from hub.registry.memory_registry import InMemoryRegistry
    from hub.registry.sqlite_registry import SqliteRegistry

    registry = SqliteRegistry(tmp_path / "r") if backend == "sqlite" else InMemoryRegistry()

    def upload(artifact_id: str, site: str, size: int) -> StagedUpload:
        return StagedUpload(artifact_id, ArtifactKind.GENERATOR, site, b"{}", {"g": size}, 0.0)

    registry.stage(upload("1" * 64, "a", 600))
    registry.append("1" * 64, "g", 0, b"x" * 100)
    registry.stage(upload("2" * 64, "b", 900))
    listed = {(s.artifact_id[0], s.site_id, s.received["g"]) for s in registry.staged_uploads()}
    assert listed == {("1", "a", 100), ("2", "b", 0)}
    check_staged_quota(registry, upload("3" * 64, "a", 400), 1000)  # 600 + 400 fits
    check_staged_quota(registry, upload("1" * 64, "a", 600), 600)  # a resume is not counted twice
    with pytest.raises(QuotaError, match=r"reserving 600 bytes \(100 received\)"):
        check_staged_quota(registry, upload("3" * 64, "a", 401), 1000)


def test_upload_gate_per_site_and_global_limits():
    from hub.registry.fairness import UploadGate

    gate = UploadGate(limit=3, per_site_limit=2)
    with gate.slot("1", "a"), gate.slot("2", "a"):
        with pytest.raises(QuotaError, match="max_uploads_per_site"), gate.slot("3", "a"):
            pass
        with gate.slot("3", "b"):
            with pytest.raises(QuotaError, match="max_concurrent_uploads"), gate.slot("4", "c"):
                pass
            with (
                pytest.raises(UploadInterruptedError, match="already streaming"),
                gate.slot("3", "b"),
            ):
                pass
    with gate.stream("site:a"), gate.stream("site:a"):
        with pytest.raises(QuotaError, match="2 publish streams open"), gate.stream("site:a"):
            pass
        with gate.stream("site:b"):
            assert gate.streams_open("site:a") == 2
    assert gate.streams_open("site:a") == 0
    with gate.slot("1", "a"), gate.slot("2", "a"):  # every slot was released
        pass


@pytest.mark.integration
def test_client_backs_off_while_slots_are_busy_then_publishes(consortium, tmp_path, caplog):
    hub = start_server(consortium.hub_config(tmp_path / "hub", max_concurrent_uploads=1))
    bundle_a = make_bundle(tmp_path / "a", "a", consortium.keys["a"], seed=1)
    bundle_b = make_bundle(tmp_path / "b", "b", consortium.keys["b"], seed=2)
    holder = StalledStream(consortium, hub.port, "site:a", bundle_a, chunks=1)
    try:
        _wait_for(lambda: len(staged_uploads(_root(hub))) == 1)  # site a holds the only slot
        threading.Timer(1.5, holder.close).start()  # ... and lets it go 1.5 s later
        caplog.set_level(logging.WARNING, logger="radshare.hub_client")
        with consortium.client(hub.port, "site:b", backoff_s=0.2, busy_wait_s=20) as site_b:
            assert site_b.publish_bundle(bundle_b).created
        busy = [r for r in caplog.records if "RESOURCE_EXHAUSTED" in r.getMessage()]
        assert busy and "max_concurrent_uploads" in busy[0].getMessage()
    finally:
        holder.close()
        hub.stop(grace_s=None)
    artifacts, _, _ = snapshot(_root(hub))
    assert [site for _, _, site in artifacts] == ["b"]


@pytest.mark.integration
def test_a_dripping_stream_is_closed_and_keeps_its_bytes(consortium, tmp_path):
    limits = {"upload_stall_timeout_s": 1, "min_upload_bytes_per_s": 100_000}
    hub = start_server(consortium.hub_config(tmp_path / "hub", max_concurrent_uploads=1, **limits))
    bundle_a = make_bundle(tmp_path / "a", "a", consortium.keys["a"], seed=1)
    # One 8 KiB chunk every 0.3 s (≈27 kB/s): never silent for 1 s, yet far too slow.
    drip = StalledStream(consortium, hub.port, "site:a", bundle_a, chunks=12, interval_s=0.3)
    try:
        with pytest.raises(grpc.RpcError) as slow:
            drip.future.result(timeout=15)
        assert slow.value.code() == grpc.StatusCode.ABORTED
        assert "below 100000 bytes/s (min_upload_bytes_per_s)" in slow.value.details()
        manifest = parse_json_object((bundle_a / "manifest.json").read_bytes(), where="test")
        with consortium.client(hub.port, "site:a") as site_a:
            kept = site_a.upload_status(artifact_id_of(manifest)).received[GENERATOR_FILE]
            assert 0 < kept < 12 * CHUNK_BYTES and kept % CHUNK_BYTES == 0
            # An honest client at loopback speed resumes and finishes.
            assert site_a.publish_bundle(bundle_a).created
    finally:
        drip.close()
        hub.stop(grace_s=None)
