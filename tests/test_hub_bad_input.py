"""Bad input at the hub's edge: absurd manifests, a busy port, TLS failures — one clear line each.

Manifest attacks are sent as a bare publish header through the raw gRPC stub (the
client library would refuse to build them): the hub must refuse the header itself
with INVALID_ARGUMENT naming the field, so nothing is staged and the registry (rows
and blob files, read from disk) is unchanged.
"""

from __future__ import annotations

import json
import socket
import sqlite3

import grpc
import pytest
from test_hub_durability import assert_one_line_error, blob_files, run_cli
from test_registry_grpc import make_bundle, make_consortium, staged_uploads

from hub.certs import create_ca, issue_certificate
from hub.registry.server import start_server
from shared.artifacts.records import ArtifactKind, PublishHeader
from shared.artifacts.signing import parse_json_object, sign_body
from shared.errors import ConfigError, RegistryError
from shared.hub_client import ClientTLS, HubClient
from shared.proto import serde

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("consortium"))


@pytest.fixture
def hub(consortium, tmp_path):
    server = start_server(consortium.hub_config(tmp_path / "hub"))
    yield server
    server.stop(grace_s=None)


def registry_state(root) -> tuple[list, dict, list]:
    with sqlite3.connect(root / "registry.sqlite3") as db:
        rows = db.execute("SELECT * FROM artifacts ORDER BY 1").fetchall()
    return rows, blob_files(root), staged_uploads(root)


def send_header(consortium, port: int, manifest_json: bytes) -> grpc.RpcError:
    """Publish a header alone (no chunks) as site a; the RpcError the hub answers with."""
    with consortium.client(port, "site:a", retries=0) as client:
        request = serde.publish_request_to_proto(
            PublishHeader(ArtifactKind.GENERATOR, manifest_json)
        )
        with pytest.raises(grpc.RpcError) as refused:
            client._stub.PublishGenerator(iter([request]), timeout=60)
    return refused.value


def signed_variant(bundle, key, **config_changes) -> bytes:
    """The bundle's manifest with generator_config (and matching top-level fields) changed."""
    raw = parse_json_object((bundle / "manifest.json").read_bytes(), where="test")
    raw["generator_config"] = {**raw["generator_config"], **config_changes}
    for field in ("resolution_px", "z_dim"):
        raw[field] = raw["generator_config"][field]
    raw.pop("signature", None)
    raw["signature"] = sign_body(raw, key).model_dump()
    return json.dumps(raw).encode()


def test_deeply_nested_manifest_is_refused_naming_the_field(consortium, hub, tmp_path):
    root = hub.state.registry.root
    before = registry_state(root)
    text = (make_bundle(tmp_path / "b", "a", consortium.keys["a"]) / "manifest.json").read_text()
    depth = 100_000  # Python's json would raise RecursionError (an INTERNAL error) long before
    nested = text.replace(
        '"training": {', '"training": {"extra": ' + "[" * depth + "]" * depth + ", ", 1
    )
    error = send_header(consortium, hub.port, nested.encode())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "field 'extra' nests JSON deeper than 32 levels" in error.details()
    assert registry_state(root) == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fmap_base": 2**40, "fmap_max": 2**40}, "generator_config"),  # numel overflows int64
        ({"resolution_px": 2**40}, "generator_config.resolution_px"),
        ({"z_dim": 2**70}, "generator_config.z_dim"),  # overflows 64 bits
        ({"fmap_base": 10**30, "fmap_max": 10**30}, "generator_config.fmap_base"),
    ],
)
def test_overflowing_generator_config_is_refused_from_the_header(
    consortium, hub, tmp_path, changes, field
):
    root = hub.state.registry.root
    bundle = make_bundle(tmp_path / "b", "a", consortium.keys["a"])
    before = registry_state(root)
    error = send_header(
        consortium, hub.port, signed_variant(bundle, consortium.keys["a"], **changes)
    )
    # Before the fix the header was accepted and staged (ABORTED: "resume it"), the bytes
    # then uploaded, and the commit crashed building the network (INTERNAL).
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert f"field '{field}" in error.details()
    assert registry_state(root) == before and staged_uploads(root) == []


def test_busy_port_is_one_line(consortium, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=f"cannot bind 127.0.0.1:{port}: Address already in use"
        ):
            start_server(consortium.hub_config(tmp_path / "hub").model_copy(update={"port": port}))
        cli = run_cli(
            "serve", "--root", str(tmp_path / "hub"), "--tls-dir", str(consortium.tls),
            "--port", str(port),
        )  # fmt: skip
        assert_one_line_error(cli, f"127.0.0.1:{port}", "Address already in use", "--port")
    # The refused start released the root: a server starts on it now.
    start_server(consortium.hub_config(tmp_path / "hub")).stop(grace_s=None)


def _rogue_tls(tmp_path, identity: str = "operator"):
    from cryptography.hazmat.primitives import serialization

    rogue_key, rogue_ca = create_ca("rogue CA")
    key, cert = issue_certificate(rogue_key, rogue_ca, identity)
    (tmp_path / "rogue.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rogue.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tmp_path / "rogue.crt", tmp_path / "rogue.key"


def test_tls_failures_are_one_line_with_the_reason(consortium, hub, tmp_path):
    cert, key = _rogue_tls(tmp_path)
    # A certificate from another CA: named before any connection is made.
    with pytest.raises(ConfigError, match="issued by 'rogue CA', not by the consortium CA"):
        HubClient(f"127.0.0.1:{hub.port}", ClientTLS(consortium.tls / "ca.crt", cert, key))
    # Sent anyway (raw credentials): the hub drops the handshake; the client says so, once.
    raw = grpc.ssl_channel_credentials(
        (consortium.tls / "ca.crt").read_bytes(), key.read_bytes(), cert.read_bytes()
    )
    with (
        HubClient(f"127.0.0.1:{hub.port}", raw, retries=3) as rogue,
        pytest.raises(RegistryError, match="did not accept this client's certificate") as refused,
    ):
        rogue.list()
    assert refused.value.__cause__.code() == grpc.StatusCode.UNAVAILABLE
    # The hub's certificate does not name the host dialled.
    tls = ClientTLS.from_dir(consortium.tls, "operator")
    client = HubClient(f"127.0.0.1:{hub.port}", tls, server_name="hub.elsewhere.org")
    with client, pytest.raises(RegistryError, match="does not name the address dialled") as refused:
        client.list()
    assert "Hostname Verification" in str(refused.value)  # gRPC's own reason is kept
    # At the CLI: exit code 2, one line.
    rogue_dir = tmp_path / "rogue-tls"
    rogue_dir.mkdir()
    (rogue_dir / "ca.crt").write_bytes((consortium.tls / "ca.crt").read_bytes())
    (rogue_dir / "operator.crt").write_bytes(cert.read_bytes())
    (rogue_dir / "operator.key").write_bytes(key.read_bytes())
    cli = run_cli("list", "--hub", f"127.0.0.1:{hub.port}", "--tls-dir", str(rogue_dir))
    assert_one_line_error(cli, "operator.crt", "issued by 'rogue CA'")
    # Another consortium's complete TLS folder: the handshake itself fails, said in one line.
    other = make_consortium(tmp_path / "other")
    cli = run_cli("list", "--hub", f"127.0.0.1:{hub.port}", "--tls-dir", str(other.tls))
    assert_one_line_error(cli, "TLS handshake with the hub failed", "CERTIFICATE_VERIFY_FAILED")
    assert cli.stderr.strip().count("\n") == 0, cli.stderr  # not even gRPC's own log line


def test_deep_json_anywhere_is_an_artifact_error_not_a_recursion_error():
    """Bundle files (.json cards) and pulled manifests go through the same strict parser."""
    from shared.errors import ArtifactError

    deep = b'{"card": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ArtifactError, match=r"labeller\.json: JSON nested too deeply"):
        parse_json_object(deep, where="labeller.json")


def test_size_bounds_never_exceed_the_real_networks():
    """The header check may only refuse the impossible: its bound <= the real tensors' bytes."""
    import math
    import random

    from hub.registry.manifest_checks import generator_min_weight_bytes, labeller_min_weight_bytes
    from shared.artifacts.generator import generator_tensor_spec
    from shared.artifacts.labeller import labeller_tensor_spec
    from shared.networks.generator import GeneratorConfig
    from shared.networks.labeller import LabellerConfig

    def f32_bytes(spec) -> int:
        return sum(4 * math.prod(t.shape) for t in spec.values())

    rng = random.Random(0)
    for _ in range(30):
        cfg = GeneratorConfig.model_validate(
            {
                "resolution_px": 2 ** rng.randint(2, 8),
                "z_dim": rng.randint(1, 600),
                "fmap_base": rng.randint(1, 9000),
                "fmap_max": rng.randint(1, 600),
                "fmap_min": rng.randint(1, 40),
                "num_channels": rng.randint(1, 3),
            }
        )
        assert 0 < generator_min_weight_bytes(cfg) <= f32_bytes(generator_tensor_spec(cfg)), cfg
    for _ in range(5):
        cfg_l = LabellerConfig.model_validate(
            {
                "resolution_px": 64,
                "init_features": rng.randint(1, 64),
                "growth_rate": rng.randint(1, 32),
                "block_config": tuple(rng.randint(1, 12) for _ in range(4)),
            }
        )
        assert 0 < labeller_min_weight_bytes(cfg_l) <= f32_bytes(labeller_tensor_spec(cfg_l))
