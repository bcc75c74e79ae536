"""The hub's gRPC service against a real mTLS server on 127.0.0.1: refusals, limits, concurrency.

Every refusal test checks that the registry is unchanged: the same SQLite rows
(read with sqlite3, not through the registry) and the same blob files on disk.
The helpers here are shared with ``test_registry_restart.py`` and ``test_publish_generator.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import torch

from hub.certs import create_ca, ensure_consortium_certs, issue_certificate
from hub.config import LimitsConfig, load_hub_config
from hub.registry.keyring import DirectoryKeyring
from hub.registry.server import HubServer, start_server
from shared.artifacts.generator import GENERATOR_FILE, load_generator, write_generator_bundle
from shared.artifacts.records import ArtifactKind
from shared.artifacts.signing import (
    generate_signing_key,
    parse_json_object,
    public_key_pem,
    sign_body,
)
from shared.errors import (
    ArtifactError,
    PermissionDeniedError,
    QuotaError,
    RegistryError,
    SignatureError,
    UploadInterruptedError,
)
from shared.hub_client import ClientTLS, HubClient
from shared.networks.generator import Generator, GeneratorConfig

pytestmark = pytest.mark.integration

TINY = GeneratorConfig(resolution_px=16, z_dim=32, fmap_base=64, fmap_max=32)  # ≈141 kB
SITES = ("a", "b", "c", "d")
IDENTITIES = [*(f"site:{s}" for s in SITES), "operator", "auditor"]


@dataclass
class Consortium:
    """TLS material and site signing keys of a test consortium (keys registered at ``root``)."""

    base: Path
    tls: Path
    keys: dict = field(default_factory=dict)

    def hub_config(self, root: Path, **limits):
        return load_hub_config(
            None,
            root=root,
            port=0,
            tls_dir=self.tls,
            limits=LimitsConfig(**limits),
            site_keys_dir=self.base / "site_keys",
        )

    def client(self, port: int, identity: str, **options) -> HubClient:
        return HubClient(f"127.0.0.1:{port}", ClientTLS.from_dir(self.tls, identity), **options)

    @property
    def keyring(self) -> DirectoryKeyring:
        """The registered site keys: what a client verifies pulled bundles against."""
        return DirectoryKeyring(self.base / "site_keys")


def make_consortium(base: Path) -> Consortium:
    ensure_consortium_certs(base / "tls", IDENTITIES)
    consortium = Consortium(base, base / "tls")
    keyring = DirectoryKeyring(base / "site_keys")
    for site in SITES:
        consortium.keys[site] = generate_signing_key()
        keyring.register(site, public_key_pem(consortium.keys[site].public_key()))
    return consortium


def make_bundle(out: Path, site: str, key, *, seed: int = 0, cfg: GeneratorConfig = TINY) -> Path:
    """A signed generator bundle of a seeded, untrained G."""
    torch.manual_seed(seed)
    fields = {
        "site_id": site,
        "generator_config": cfg.model_dump(),
        "resolution_px": cfg.resolution_px,
        "z_dim": cfg.z_dim,
        "training": {"kimg": 0.0},
        "data": {"num_images": 0, "counts_per_label": {}},
    }
    write_generator_bundle(out, Generator(cfg).state_dict(), fields, key)
    return out


def snapshot(root: Path) -> tuple[list, list, list]:
    """Registry state read straight from disk: artifact rows, file rows, blob files."""
    with sqlite3.connect(root / "registry.sqlite3") as db:
        artifacts = db.execute(
            "SELECT artifact_id, kind, site_id FROM artifacts ORDER BY 1"
        ).fetchall()
        files = db.execute(
            "SELECT artifact_id, name, sha256 FROM artifact_files ORDER BY 1"
        ).fetchall()
    blobs = sorted(
        p.relative_to(root).as_posix() for p in (root / "blobs").rglob("*") if p.is_file()
    )
    return artifacts, files, blobs


def staged_uploads(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "uploads").iterdir())


def resign(bundle: Path, key, **changes) -> bytes:
    """The bundle's manifest with ``changes``, signed by ``key`` (returned, not written)."""
    raw = parse_json_object((bundle / "manifest.json").read_bytes(), where="test")
    raw.update(changes)
    raw["signature"] = sign_body(raw, key).model_dump()
    return json.dumps(raw).encode()


def file_entry(data: bytes) -> dict:
    return {GENERATOR_FILE: {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}}


@pytest.fixture(scope="module")
def consortium(tmp_path_factory) -> Consortium:
    return make_consortium(tmp_path_factory.mktemp("consortium"))


@pytest.fixture
def hub(consortium, tmp_path):
    server = start_server(consortium.hub_config(tmp_path / "hub", max_upload_bytes=400_000))
    yield server
    server.stop(grace_s=None)


@pytest.fixture
def bundle_a(consortium, tmp_path) -> Path:
    return make_bundle(tmp_path / "bundle-a", "a", consortium.keys["a"])


def _root(hub: HubServer) -> Path:
    return hub.state.registry.root  # type: ignore[attr-defined]


def test_publish_list_pull_round_trip(consortium, hub, bundle_a, tmp_path):
    with consortium.client(hub.port, "site:a") as site:
        result = site.publish_bundle(bundle_a)
        again = site.publish_bundle(bundle_a)
    assert result.created and not again.created and again.artifact == result.artifact
    with consortium.client(hub.port, "operator") as operator:
        assert (
            operator.health() == "SERVING"
            and operator.health("radshare.hub.v1.RadshareHub") == "SERVING"
        )
        listed = operator.list(ArtifactKind.GENERATOR)
        assert [s.artifact_id for s in listed] == [result.artifact.artifact_id]
        assert operator.list(ArtifactKind.LABELLER) == []
        pulled = operator.pull(
            result.artifact.artifact_id[:12], tmp_path / "pulled", trusted=consortium.keyring
        )
    assert (pulled / GENERATOR_FILE).read_bytes() == (bundle_a / GENERATOR_FILE).read_bytes()
    assert (pulled / "manifest.json").read_bytes() == (bundle_a / "manifest.json").read_bytes()
    G = load_generator(pulled, consortium.keyring)  # the registered key, not signer.pub
    z = torch.randn(3, TINY.z_dim, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(
        G(z), load_generator(bundle_a, consortium.keys["a"].public_key())(z), rtol=0, atol=0
    )
    artifacts, files, blobs = snapshot(_root(hub))
    assert len(artifacts) == 1 and len(files) == 1 and len(blobs) == 1


def test_roles_for_reading(consortium, hub, bundle_a, tmp_path):
    with consortium.client(hub.port, "site:a") as site:
        artifact_id = site.publish_bundle(bundle_a).artifact.artifact_id
        with pytest.raises(PermissionDeniedError) as denied:
            site.list()
        assert denied.value.__cause__.code() == grpc.StatusCode.PERMISSION_DENIED
        # A site may pull a bundle (to verify what a federated query names), not list.
        pulled = site.pull(artifact_id, tmp_path / "x", trusted=consortium.keyring)
        assert (pulled / "manifest.json").is_file()
    with consortium.client(hub.port, "auditor") as auditor:
        assert len(auditor.list()) == 1
        reply = auditor.get_manifest(artifact_id)
        assert reply.manifest_json == (bundle_a / "manifest.json").read_bytes()
        with pytest.raises(PermissionDeniedError, match="may not pull"):
            auditor.pull(artifact_id, tmp_path / "y", trusted=consortium.keyring)
    assert not (tmp_path / "y").exists()


def _refused(hub: HubServer, publish, expected_code: grpc.StatusCode, error_cls=RegistryError):
    """Run ``publish`` and check the refusal code and that the registry did not change."""
    before = snapshot(_root(hub))
    with pytest.raises(error_cls) as refused:
        publish()
    assert refused.value.__cause__.code() == expected_code, refused.value
    assert snapshot(_root(hub)) == before
    return refused.value


def test_no_client_certificate_is_refused_in_the_handshake(consortium, hub, bundle_a):
    creds = grpc.ssl_channel_credentials(root_certificates=(consortium.tls / "ca.crt").read_bytes())
    with HubClient(f"127.0.0.1:{hub.port}", creds, retries=0) as anonymous:
        _refused(hub, lambda: anonymous.publish_bundle(bundle_a), grpc.StatusCode.UNAVAILABLE)


def test_certificate_from_another_ca_is_refused(consortium, hub, bundle_a, tmp_path):
    from cryptography.hazmat.primitives import serialization

    rogue_key, rogue_ca = create_ca("rogue CA")
    key, cert = issue_certificate(rogue_key, rogue_ca, "site:a")
    (tmp_path / "rogue.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rogue.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # Raw credentials: ClientTLS would refuse this certificate before connecting.
    tls = grpc.ssl_channel_credentials(
        (consortium.tls / "ca.crt").read_bytes(),
        (tmp_path / "rogue.key").read_bytes(),
        (tmp_path / "rogue.crt").read_bytes(),
    )
    with HubClient(f"127.0.0.1:{hub.port}", tls, retries=0) as rogue:
        _refused(hub, lambda: rogue.publish_bundle(bundle_a), grpc.StatusCode.UNAVAILABLE)


def test_identity_without_a_role_is_refused(consortium, hub, bundle_a, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_key = serialization.load_pem_private_key((consortium.tls / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((consortium.tls / "ca.crt").read_bytes())
    key, cert = issue_certificate(ca_key, ca_cert, "nurse", check_identity=False)
    (tmp_path / "nurse.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "nurse.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls = ClientTLS(consortium.tls / "ca.crt", tmp_path / "nurse.crt", tmp_path / "nurse.key")
    with HubClient(f"127.0.0.1:{hub.port}", tls, retries=0) as nurse:
        error = _refused(
            hub, lambda: nurse.publish_bundle(bundle_a), grpc.StatusCode.PERMISSION_DENIED
        )
        assert "'nurse' has no radshare role" in str(error)
        with pytest.raises(PermissionDeniedError):
            nurse.list()


def test_site_a_publishing_as_site_b_is_refused(consortium, hub, tmp_path):
    bundle_b = make_bundle(tmp_path / "bundle-b", "b", consortium.keys["b"])
    with consortium.client(hub.port, "site:a", retries=0) as site_a:
        error = _refused(
            hub, lambda: site_a.publish_bundle(bundle_b), grpc.StatusCode.PERMISSION_DENIED
        )
    assert "only as site 'a', not 'b'" in str(error)
    assert staged_uploads(_root(hub)) == []


def test_auditor_publishing_is_refused(consortium, hub, bundle_a):
    with consortium.client(hub.port, "auditor", retries=0) as auditor:
        _refused(hub, lambda: auditor.publish_bundle(bundle_a), grpc.StatusCode.PERMISSION_DENIED)


def test_manifest_hash_not_matching_weights_is_refused(consortium, hub, bundle_a):
    weights = (bundle_a / GENERATOR_FILE).read_bytes()
    other = bytearray(weights)
    other[-4:] = b"\x00\x00\x80\x3f"  # last float := 1.0: same size, other bytes
    manifest = resign(bundle_a, consortium.keys["a"], files=file_entry(bytes(other)))
    with consortium.client(hub.port, "site:a", retries=0) as site:
        error = _refused(
            hub,
            lambda: site.upload(manifest, {GENERATOR_FILE: bundle_a / GENERATOR_FILE}),
            grpc.StatusCode.INVALID_ARGUMENT,
            ArtifactError,
        )
    assert "received sha256" in str(error)
    assert staged_uploads(_root(hub)) == []


def test_bad_signature_is_refused(consortium, hub, bundle_a):
    unregistered = generate_signing_key()
    manifest = resign(bundle_a, unregistered)
    raw = json.loads((bundle_a / "manifest.json").read_text())
    raw["training"]["kimg"] = 999.0  # edited after signing
    with consortium.client(hub.port, "site:a", retries=0) as site:
        for bad in (manifest, json.dumps(raw).encode()):
            _refused(
                hub,
                lambda bad=bad: site.upload(bad, {GENERATOR_FILE: bundle_a / GENERATOR_FILE}),
                grpc.StatusCode.UNAUTHENTICATED,
                SignatureError,
            )
    assert staged_uploads(_root(hub)) == []


def test_truncated_stream_is_refused_and_resumable(consortium, hub, bundle_a, tmp_path):
    weights = (bundle_a / GENERATOR_FILE).read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights[: len(weights) // 3])
    manifest = (bundle_a / "manifest.json").read_bytes()
    with consortium.client(hub.port, "site:a", retries=0, chunk_bytes=8192) as site:
        error = _refused(
            hub,
            lambda: site.upload(manifest, {GENERATOR_FILE: truncated}),
            grpc.StatusCode.ABORTED,
            UploadInterruptedError,
        )
        assert f"has {len(weights) // 3} of {len(weights)} bytes" in str(error)
        sent: list[int] = []
        result = site.upload(
            manifest,
            {GENERATOR_FILE: bundle_a / GENERATOR_FILE},
            on_chunk=lambda name, offset: sent.append(offset),
        )
    assert sent[0] == len(weights) // 3  # resumed where the hub's staged bytes end
    assert result.created and result.artifact.files[0].sha256 == hashlib.sha256(weights).hexdigest()
    assert staged_uploads(_root(hub)) == []


def test_a_failure_on_the_sending_side_is_raised_as_itself(consortium, hub, bundle_a):
    """gRPC turns a request-iterator exception into UNKNOWN; the client raises the real one."""

    class ProgressBarError(RuntimeError):
        pass

    def broken_progress(name: str, offset: int) -> None:
        if offset > 0:
            raise ProgressBarError(f"progress callback failed at {name}@{offset}")

    with (
        consortium.client(hub.port, "site:a", retries=3, chunk_bytes=8192) as site,
        pytest.raises(ProgressBarError, match=r"generator.safetensors@8192"),
    ):
        site.publish_bundle(bundle_a, on_chunk=broken_progress)
    with consortium.client(hub.port, "operator") as operator:
        assert operator.list() == []  # nothing committed


def test_upload_over_size_limit_is_refused(consortium, hub, tmp_path):
    big = make_bundle(
        tmp_path / "big",
        "a",
        consortium.keys["a"],
        cfg=GeneratorConfig(resolution_px=32, z_dim=64, fmap_base=256, fmap_max=64),
    )
    assert (big / GENERATOR_FILE).stat().st_size > 400_000
    with consortium.client(hub.port, "site:a", retries=0) as site:
        error = _refused(
            hub, lambda: site.publish_bundle(big), grpc.StatusCode.RESOURCE_EXHAUSTED, QuotaError
        )
    assert "max_upload_bytes" in str(error)
    assert staged_uploads(_root(hub)) == []


def test_chunks_past_the_declared_size_are_refused(consortium, hub, bundle_a, tmp_path):
    longer = tmp_path / "longer.safetensors"
    longer.write_bytes((bundle_a / GENERATOR_FILE).read_bytes() + b"\0" * 64)
    with consortium.client(hub.port, "site:a", retries=0) as site:
        _refused(
            hub,
            lambda: site.upload(
                (bundle_a / "manifest.json").read_bytes(), {GENERATOR_FILE: longer}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            ArtifactError,
        )
    assert staged_uploads(_root(hub)) == []


class Marker:
    """Unpickling this creates ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_disguised_as_safetensors_is_refused_unread(consortium, hub, bundle_a, tmp_path):
    marker = tmp_path / "unpickled.marker"
    zipped = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "trap": Marker(marker)}, zipped)
    weights_bytes = (bundle_a / GENERATOR_FILE).stat().st_size
    for name, payload in [("pickle", pickle.dumps(Marker(marker))), ("zip", zipped.getvalue())]:
        # Padded to G's size: a smaller file is refused from the header alone (manifest_checks).
        payload += b"\0" * max(0, weights_bytes - len(payload))
        disguised = tmp_path / f"{name}.safetensors"
        disguised.write_bytes(payload)
        manifest = resign(bundle_a, consortium.keys["a"], files=file_entry(payload))
        with consortium.client(hub.port, "site:a", retries=0) as site:
            error = _refused(
                hub,
                lambda m=manifest, d=disguised: site.upload(m, {GENERATOR_FILE: d}),
                grpc.StatusCode.INVALID_ARGUMENT,
                ArtifactError,
            )
        assert name in str(error)
    assert not marker.exists()
    assert staged_uploads(_root(hub)) == []


def test_concurrent_publishes_from_four_sites_all_land(consortium, hub, tmp_path):
    bundles = [  # distinct weights everywhere (identical weights would share one blob)
        make_bundle(tmp_path / f"{site}-{i}{j}", site, consortium.keys[site], seed=10 * i + j)
        for i, site in enumerate(SITES)
        for j in (1, 2)
    ]
    results, errors = {}, []

    def publish(bundle: Path) -> None:
        site = bundle.name.split("-")[0]
        try:
            with consortium.client(hub.port, f"site:{site}", chunk_bytes=16384) as client:
                results[bundle.name] = client.publish_bundle(bundle)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(b,)) for b in bundles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(results) == 8
    artifacts, files, blobs = snapshot(_root(hub))
    assert len(artifacts) == 8 and len(files) == 8 and len(blobs) == 8
    assert sorted(site for _, _, site in artifacts) == sorted(SITES * 2)
    for bundle in bundles:
        sha = hashlib.sha256((bundle / GENERATOR_FILE).read_bytes()).hexdigest()
        assert results[bundle.name].artifact.files[0].sha256 == sha
    assert staged_uploads(_root(hub)) == []


def test_concurrent_upload_limit(consortium, tmp_path, bundle_a):
    server = start_server(consortium.hub_config(tmp_path / "hub1", max_concurrent_uploads=1))
    started, release = threading.Event(), threading.Event()
    outcome = {}

    def hold(name: str, offset: int) -> None:
        started.set()
        release.wait(30)

    def slow_publish() -> None:
        with consortium.client(server.port, "site:a", chunk_bytes=16384) as site:
            outcome["a"] = site.publish_bundle(bundle_a, on_chunk=hold)

    thread = threading.Thread(target=slow_publish)
    thread.start()
    try:
        assert started.wait(30)
        deadline = time.monotonic() + 30
        while not staged_uploads(_root(server)) and time.monotonic() < deadline:
            time.sleep(0.02)  # site a's stream holds the only slot once it is staged
        bundle_b = make_bundle(tmp_path / "bundle-b", "b", consortium.keys["b"])
        site_b = consortium.client(server.port, "site:b", retries=0)
        with site_b, pytest.raises(QuotaError, match="max_concurrent_uploads") as refused:
            site_b.publish_bundle(bundle_b)
        assert refused.value.__cause__.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        release.set()
        thread.join(60)
        server.stop(grace_s=None)
    assert outcome["a"].created
