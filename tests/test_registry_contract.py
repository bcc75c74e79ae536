"""Registry storage contract (SQLite + in-memory), roles, and the pure publish handler."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import grpc
import pytest
import torch
from helpers_audit import make_report

from hub.registry import handlers
from hub.registry.auth import Action, Caller, Role, authorize, parse_identity
from hub.registry.base import ArtifactRecord, StagedUpload
from hub.registry.handlers import HubLimits, HubState, UploadGate
from hub.registry.keyring import DirectoryKeyring, StaticKeyring
from hub.registry.memory_registry import InMemoryRegistry
from hub.registry.servicer import HubServicer, status_code_for
from hub.registry.sqlite_registry import SqliteRegistry
from shared.artifacts.generator import GENERATOR_FILE, write_generator_bundle
from shared.artifacts.records import (
    ArtifactKind,
    ArtifactSummary,
    FileChunk,
    FileInfo,
    PublishHeader,
)
from shared.artifacts.signing import generate_signing_key, public_key_pem
from shared.errors import (
    ArtifactError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    QuotaError,
    RegistryError,
    SignatureError,
    UnsafeArtifactError,
    UploadInterruptedError,
)
from shared.networks.generator import Generator, GeneratorConfig
from shared.proto import radshare_hub_pb2 as pb

CFG = GeneratorConfig(resolution_px=8, z_dim=16, fmap_base=32, fmap_max=16)
ID = "ab" * 32


def _upload(artifact_id: str = ID, data: bytes = b"hello world") -> tuple[StagedUpload, bytes]:
    upload = StagedUpload(
        artifact_id, ArtifactKind.GENERATOR, "a", b"{}", {"g.safetensors": len(data)}, time.time()
    )
    return upload, data


def _record(upload: StagedUpload, data: bytes) -> ArtifactRecord:
    info = FileInfo("g.safetensors", hashlib.sha256(data).hexdigest(), len(data))
    summary = ArtifactSummary(
        upload.artifact_id, upload.kind, upload.site_id, "c", "p", len(data), (info,), "0.1"
    )
    return ArtifactRecord(summary, b"{}", b"pem", "site:a")


@pytest.fixture(params=["sqlite", "memory"])
def registry(request, tmp_path):
    return SqliteRegistry(tmp_path / "reg") if request.param == "sqlite" else InMemoryRegistry()


def _read(handle) -> bytes:
    with handle:
        return handle.read()


class TestRegistryContract:
    def test_stage_append_resume_commit(self, registry):
        upload, data = _upload()
        staged = registry.stage(upload)
        assert staged.received == {"g.safetensors": 0} and not staged.complete
        assert registry.append(ID, "g.safetensors", 0, data[:4]) == 4
        again = registry.stage(upload)  # a resumed stream sees what is staged
        assert again.received == {"g.safetensors": 4}
        assert registry.append(ID, "g.safetensors", 4, data[4:]) == len(data)
        assert registry.staged(ID).complete
        assert _read(registry.open_staged(ID, "g.safetensors")) == data
        record, created = registry.commit(_record(upload, data))
        assert created and registry.staged(ID) is None
        assert _read(registry.open_file(ID, "g.safetensors")) == data
        assert registry.find(ID) == record and registry.get(ID[:10]) == record
        assert [s.artifact_id for s in registry.list(kind=ArtifactKind.GENERATOR, site_id="a")] == [
            ID
        ]
        assert registry.list(kind=ArtifactKind.LABELLER) == [] and registry.list(site_id="b") == []

    def test_append_at_wrong_offset_is_refused(self, registry):
        upload, data = _upload()
        registry.stage(upload)
        registry.append(ID, "g.safetensors", 0, data[:4])
        with pytest.raises(RegistryError, match="starts at byte 2 but 4 bytes are staged"):
            registry.append(ID, "g.safetensors", 2, data[2:])
        with pytest.raises(NotFoundError, match="no staged file"):
            registry.append(ID, "other.safetensors", 0, b"x")

    def test_commit_is_idempotent(self, registry):
        upload, data = _upload()
        registry.stage(upload)
        registry.append(ID, "g.safetensors", 0, data)
        first, _ = registry.commit(_record(upload, data))
        registry.stage(upload)
        registry.append(ID, "g.safetensors", 0, data)
        second, created = registry.commit(_record(upload, data))
        assert not created and second == first and len(registry.list()) == 1
        assert registry.staged(ID) is None

    def test_discard_and_purge(self, registry):
        old, _ = _upload("cd" * 32)
        old = StagedUpload(
            old.artifact_id, old.kind, old.site_id, b"{}", old.declared, time.time() - 100
        )
        new, _ = _upload("ef" * 32)
        registry.stage(old)
        registry.stage(new)
        assert registry.purge_stale(time.time() - 50) == [old.artifact_id]
        assert (
            registry.staged(old.artifact_id) is None
            and registry.staged(new.artifact_id) is not None
        )
        registry.discard(new.artifact_id)
        assert registry.staged(new.artifact_id) is None

    def test_unknown_ids(self, registry):
        assert registry.find(ID) is None and registry.staged(ID) is None
        with pytest.raises(NotFoundError, match="no artifact"):
            registry.get(ID)
        with pytest.raises(NotFoundError):
            registry.open_file(ID, "g.safetensors")

    def test_audit_reports_are_kept_newest_first(self, registry):
        upload, data = _upload()
        registry.stage(upload)
        registry.append(ID, "g.safetensors", 0, data)
        registry.commit(_record(upload, data))
        old, new = make_report(ID, "a"), make_report(ID, "a", hours=5, near_copies=1)
        other = make_report(ID, "b", hours=2)
        for report in (new, other, old):
            assert registry.put_audit_report(report, "operator")
        assert registry.put_audit_report(old, "operator") is False  # identical: idempotent
        assert registry.audit_reports(ID) == [new, other, old]
        assert registry.audit_reports(ID, site_id="a") == [new, old]
        assert (
            registry.audit_reports(ID, site_id="c") == []
            and registry.audit_reports("cd" * 32) == []
        )
        with pytest.raises(RegistryError, match="never replaced"):
            registry.put_audit_report(make_report(ID, "a", hours=5), "operator")
        with pytest.raises(NotFoundError, match="no artifact"):
            registry.put_audit_report(make_report("cd" * 32, "a", hours=9), "operator")
        assert registry.audit_reports(ID) == [new, other, old]


def test_sqlite_registry_without_the_reports_table_gains_it_on_open(tmp_path):
    registry = SqliteRegistry(tmp_path / "reg")
    upload, data = _upload()
    registry.stage(upload)
    registry.append(ID, "g.safetensors", 0, data)
    registry.commit(_record(upload, data))
    with sqlite3.connect(tmp_path / "reg" / "registry.sqlite3") as db:  # a pre-reports registry
        db.execute("DROP TABLE audit_reports")
    reopened = SqliteRegistry(tmp_path / "reg")
    assert reopened.find(ID) is not None
    report = make_report(ID, "a")
    assert reopened.put_audit_report(report, "operator")
    assert SqliteRegistry(tmp_path / "reg").audit_reports(ID) == [report]


def _rows(root: Path) -> list[tuple]:
    with sqlite3.connect(root / "registry.sqlite3") as db:
        return db.execute("SELECT artifact_id, name, sha256 FROM artifact_files").fetchall()


def test_sqlite_failed_commit_leaves_no_blob_and_no_row(tmp_path, monkeypatch):
    registry = SqliteRegistry(tmp_path / "reg")
    upload, data = _upload()
    registry.stage(upload)
    registry.append(ID, "g.safetensors", 0, data)

    def broken_insert(record):
        raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(registry, "_insert", broken_insert)
    with pytest.raises(sqlite3.OperationalError, match="injected"):
        registry.commit(_record(upload, data))
    assert registry.blobs.names() == set() and _rows(tmp_path / "reg") == []
    assert registry.find(ID) is None


def test_sqlite_collects_orphan_blobs(tmp_path):
    registry = SqliteRegistry(tmp_path / "reg")
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"left by a crash")
    sha = hashlib.sha256(b"left by a crash").hexdigest()
    registry.blobs.adopt(orphan, sha)
    assert registry.collect_garbage() == [sha] and registry.blobs.names() == set()


@pytest.mark.parametrize(
    ("identity", "role", "site"),
    [
        ("site:a", Role.SITE, "a"),
        ("operator", Role.OPERATOR, None),
        ("auditor:eve", Role.AUDITOR, None),
    ],
)
def test_identities_map_to_roles(identity, role, site):
    assert parse_identity(identity) == Caller(identity, role, site)


@pytest.mark.parametrize(
    "identity", ["nurse", "site:", "site:A", "operators", "admin:operator", ""]
)
def test_unknown_identities_are_refused(identity):
    with pytest.raises(PermissionDeniedError, match="no radshare role"):
        parse_identity(identity)


def test_role_matrix():
    site, operator, auditor = (parse_identity(i) for i in ("site:a", "operator", "auditor"))
    authorize(site, Action.PUBLISH, site_id="a")
    with pytest.raises(PermissionDeniedError, match="only as site 'a', not 'b'"):
        authorize(site, Action.PUBLISH, site_id="b")
    for action in (Action.LIST, Action.READ_REPORT, Action.WRITE_REPORT):
        with pytest.raises(PermissionDeniedError):
            authorize(site, action)
        authorize(operator, action)
    # A site pulls and reads what a federated query names (site_node.flower.registered).
    for action in (Action.PULL, Action.READ_MANIFEST):
        authorize(site, action)
        authorize(operator, action)
    for action in (Action.LIST, Action.READ_MANIFEST, Action.READ_REPORT):
        authorize(auditor, action)
    for action in (Action.PUBLISH, Action.PULL, Action.RUN_JOB, Action.WRITE_REPORT):
        with pytest.raises(PermissionDeniedError):
            authorize(auditor, action)
    with pytest.raises(PermissionDeniedError):
        authorize(operator, Action.PUBLISH)


def test_error_codes_at_the_boundary():
    assert status_code_for(SignatureError("x")) == grpc.StatusCode.UNAUTHENTICATED
    assert status_code_for(PermissionDeniedError("x")) == grpc.StatusCode.PERMISSION_DENIED
    assert status_code_for(IntegrityError("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(UnsafeArtifactError("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(QuotaError("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code_for(UploadInterruptedError("x")) == grpc.StatusCode.ABORTED
    assert status_code_for(NotFoundError("x")) == grpc.StatusCode.NOT_FOUND
    assert status_code_for(KeyError("x")) == grpc.StatusCode.INTERNAL


class _AbortedError(Exception):
    pass


class FakeContext:
    """A ServicerContext with a given auth context; abort raises like grpc's does."""

    def __init__(self, auth: dict):
        self.auth, self.code, self.details = auth, None, None

    def auth_context(self):
        return self.auth

    def abort(self, code, details):
        self.code, self.details = code, details
        raise _AbortedError()


def test_servicer_refuses_a_peer_without_verified_certificate():
    servicer = HubServicer(HubState(InMemoryRegistry(), StaticKeyring({})))
    context = FakeContext({"transport_security_type": [b"ssl"]})
    with pytest.raises(_AbortedError):
        servicer.ListGenerators(pb.ListRequest(), context)
    assert context.code == grpc.StatusCode.UNAUTHENTICATED


def test_upload_gate_limits_streams():
    gate = UploadGate(limit=1)
    with gate.slot("x"):
        with pytest.raises(QuotaError, match="limit is 1"):
            gate.slot("y").__enter__()
        with pytest.raises(UploadInterruptedError, match="already streaming"):
            gate.slot("x").__enter__()
    with gate.slot("y"):
        pass


@pytest.fixture
def hub_state():
    key = generate_signing_key()
    state = HubState(
        InMemoryRegistry(),
        StaticKeyring({"a": public_key_pem(key.public_key())}),
        HubLimits(max_upload_bytes=10**6),
    )
    return state, key


def _bundle(tmp_path: Path, key, seed: int = 0) -> tuple[bytes, bytes]:
    torch.manual_seed(seed)
    fields = {
        "site_id": "a",
        "generator_config": CFG.model_dump(),
        "resolution_px": CFG.resolution_px,
        "z_dim": CFG.z_dim,
        "training": {"kimg": 0.1},
        "data": {"num_images": 1, "counts_per_label": {"No Finding": 1}},
    }
    folder = tmp_path / f"bundle{seed}"
    write_generator_bundle(folder, Generator(CFG).state_dict(), fields, key)
    return (folder / "manifest.json").read_bytes(), (folder / GENERATOR_FILE).read_bytes()


def _items(manifest: bytes, data: bytes, chunk: int = 4096, start: int = 0):
    yield PublishHeader(ArtifactKind.GENERATOR, manifest)
    for offset in range(start, len(data), chunk):
        yield FileChunk(GENERATOR_FILE, offset, data[offset : offset + chunk])


def test_handler_publish_resume_and_idempotence(hub_state, tmp_path):
    state, key = hub_state
    site = parse_identity("site:a")
    manifest, data = _bundle(tmp_path, key)
    half = 8192
    with pytest.raises(UploadInterruptedError, match="incomplete"):
        handlers.publish(site, _items(manifest, data[:half]), state)
    status = handlers.upload_status(site, _id(manifest), state)
    assert status.received == {GENERATOR_FILE: half} and not status.committed
    assert state.registry.list() == []
    result = handlers.publish(site, _items(manifest, data, start=half), state)
    assert result.created and result.artifact.files[0].sha256 == hashlib.sha256(data).hexdigest()
    again = handlers.publish(site, iter([PublishHeader(ArtifactKind.GENERATOR, manifest)]), state)
    assert not again.created and again.artifact == result.artifact
    assert handlers.upload_status(site, _id(manifest), state).committed
    operator = parse_identity("operator")
    pulled = b"".join(
        c.data for c in handlers.get_artifact(operator, state, result.artifact.artifact_id)
    )
    assert pulled == data


def _id(manifest: bytes) -> str:
    from shared.artifacts.signing import artifact_id_of, parse_json_object

    return artifact_id_of(parse_json_object(manifest, where="m"))


def test_handler_refusals_discard_staging(hub_state, tmp_path):
    state, key = hub_state
    site = parse_identity("site:a")
    manifest, data = _bundle(tmp_path, key)
    corrupted = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(IntegrityError, match="received sha256"):
        handlers.publish(site, _items(manifest, corrupted), state)
    assert state.registry.staged(_id(manifest)) is None and state.registry.list() == []
    with pytest.raises(ArtifactError, match="past its declared size"):
        handlers.publish(site, _items(manifest, data + b"extra"), state)
    assert state.registry.staged(_id(manifest)) is None
    with pytest.raises(ArtifactError, match="first message must be a header"):
        handlers.publish(site, iter([FileChunk(GENERATOR_FILE, 0, b"x")]), state)
    with pytest.raises(ArtifactError, match="publishes 'labeller'"):
        handlers.publish(site, _items(manifest, data), state, only_kind=ArtifactKind.LABELLER)
    with pytest.raises(PermissionDeniedError):
        handlers.publish(parse_identity("operator"), _items(manifest, data), state)
    with pytest.raises(PermissionDeniedError):
        handlers.list_artifacts(site, state)
    assert state.registry.blobs == {}


def test_handler_audit_reports_check_role_before_reading_bytes(hub_state, tmp_path):
    state, key = hub_state
    manifest, data = _bundle(tmp_path, key)
    generator_id = handlers.publish(
        parse_identity("site:a"), _items(manifest, data), state
    ).artifact.artifact_id
    operator, auditor = parse_identity("operator"), parse_identity("auditor")
    report = make_report(generator_id, "a")
    for identity in ("site:a", "site:b", "auditor"):
        with pytest.raises(PermissionDeniedError, match="may not write_report"):
            handlers.put_audit_report(parse_identity(identity), state, b"not json")
    for identity in ("site:a", "site:b"):
        with pytest.raises(PermissionDeniedError, match="may not read_report"):
            handlers.audit_reports(parse_identity(identity), state, generator_id)
    with pytest.raises(ArtifactError, match="report_json: field '\\(report\\)'"):
        handlers.put_audit_report(operator, state, b"not json")
    assert handlers.put_audit_report(operator, state, report.model_dump_json().encode())
    assert handlers.audit_reports(auditor, state, generator_id[:8]) == [report]
    with pytest.raises(NotFoundError, match="no artifact"):
        handlers.audit_reports(auditor, state, "cd" * 32)


def test_directory_keyring_registers_and_refuses_silent_replacement(tmp_path):
    keyring = DirectoryKeyring(tmp_path / "keys")
    first, second = generate_signing_key(), generate_signing_key()
    with pytest.raises(SignatureError, match="register-site a"):
        keyring.public_key_pem("a")
    fingerprint = keyring.register("a", public_key_pem(first.public_key()))
    assert keyring.register("a", public_key_pem(first.public_key())) == fingerprint
    with pytest.raises(ConfigError, match="already has key"):
        keyring.register("a", public_key_pem(second.public_key()))
    keyring.register("a", public_key_pem(second.public_key()), replace=True)
    assert keyring.public_key_pem("a") == public_key_pem(second.public_key())
    with pytest.raises(ConfigError, match="not valid"):
        keyring.public_key_pem("../etc")
