"""The hub enforces the audit policy: attacks on synthesize, pool and pull-for-synthesis.

A real mTLS hub on 127.0.0.1 with its SQLite registry; site a publishes tiny generators
whose federated audit reports (signed with site a's key, as a site's ClientApp signs
them) passed, failed, audited other weights, are missing or unsigned. Every refused
attack compares the whole registry (every row of every table, read with sqlite3, and
every blob file's bytes) before and after, and checks that no archive was written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers_audit import make_report
from helpers_pool import make_archive
from test_registry_grpc import TINY, make_bundle, make_consortium
from typer.testing import CliRunner

from hub.audit.gate import LocalAuditGate, RemoteAuditGate
from hub.cli import app as hub_app
from hub.config import load_hub_config
from hub.pooling.archive import read_archive
from hub.pooling.audit import clear_archives
from hub.registry.audit_policy import decide
from hub.registry.keyring import DirectoryKeyring
from hub.registry.server import start_server
from hub.synthesis.pipeline import SynthesisOptions, prepare_synthesis
from shared.artifacts.audit import sign_audit_report
from shared.artifacts.keyring import ConsortiumKeyring
from shared.artifacts.labeller import ClassMetrics, LabellerCard, save_labeller_export
from shared.artifacts.signing import generate_signing_key
from shared.errors import (
    AuditPolicyError,
    PermissionDeniedError,
    RegistryError,
    SignatureError,
)
from shared.hub_client import ClientTLS, HubClient
from shared.labels import NIH_LABELS
from shared.networks.generator import GeneratorConfig
from shared.networks.labeller import Labeller, LabellerConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
GEN32 = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)
REASON = "reader study on synthetic images only, approved by the board"
runner = CliRunner()


@dataclass
class World:
    """The hub, its root, the consortium, and generator ids by name."""

    base: Path
    root: Path
    consortium: object
    address: str
    server: object
    ids: dict[str, str] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    bundles: dict[str, Path] = field(default_factory=dict)

    def client(self, identity: str = "operator") -> HubClient:
        return HubClient(self.address, ClientTLS.from_dir(self.consortium.tls, identity), retries=0)  # type: ignore[attr-defined]

    @property
    def keys(self) -> DirectoryKeyring:
        """The hub's own site keys (what pulls and local synthesis verify bundles with)."""
        return DirectoryKeyring(self.root / "site_keys")

    @property
    def tls(self) -> Path:
        return self.consortium.tls  # type: ignore[attr-defined]

    def key(self, site: str):
        return self.consortium.keys[site]  # type: ignore[attr-defined]


def snapshot(root: Path) -> dict:
    """The whole registry as stored: every row of every table, every blob's bytes, staging."""
    with sqlite3.connect(root / "registry.sqlite3") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in sorted(tables)}
    blobs = {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "blobs").rglob("*"))
        if p.is_file()
    }
    uploads = sorted(p.name for p in (root / "uploads").iterdir())
    return {"rows": rows, "blobs": blobs, "uploads": uploads}


def signed(world: World, name: str, site: str = "a", *, weights: str | None = None, **kw) -> bytes:
    report = make_report(world.ids[name], site, **kw)
    report = report.model_copy(update={"weights_sha256": weights or world.weights[name]})
    return sign_audit_report(report, world.key(site))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("policy")
    consortium = make_consortium(base)
    root = base / "hub"
    root.mkdir()
    shutil.copytree(base / "site_keys", root / "site_keys")  # the hub's own key folder
    config = load_hub_config(
        None, root=root, port=0, tls_dir=consortium.tls, site_keys_dir=root / "site_keys"
    )
    server = start_server(config)
    w = World(base, root, consortium, f"127.0.0.1:{server.port}", server)
    names = ["passed", "failed", "stale", "missing", "unsigned", "withdrawn", "override", "forged"]
    with w.client("site:a") as site:
        for seed, name in enumerate(names):
            cfg = GEN32 if name == "override" else TINY  # the synthesized one fits a labeller
            bundle = make_bundle(base / f"bundle-{name}", "a", w.key("a"), seed=seed, cfg=cfg)
            w.ids[name] = site.publish_bundle(bundle).artifact.artifact_id
            manifest = json.loads((bundle / "manifest.json").read_text())
            w.weights[name] = manifest["files"]["generator.safetensors"]["sha256"]
    with w.client() as operator:
        for name in ("passed", "withdrawn", "forged"):
            operator.put_audit_report(signed(w, name))
        # failed: an older passing audit, then a failing one (the latest counts)
        operator.put_audit_report(signed(w, "failed"))
        operator.put_audit_report(signed(w, "failed", hours=2, near_copies=3))
        operator.put_audit_report(signed(w, "override", near_copies=2))
        operator.put_audit_report(signed(w, "stale", weights="00" * 32))  # other weights
        operator.put_audit_report(signed(w, "missing", site="b"))  # a cross-site audit only
        unsigned = make_report(w.ids["unsigned"], "a")
        operator.put_audit_report(
            unsigned.model_copy(update={"weights_sha256": w.weights["unsigned"]})
        )
    yield w
    server.stop(grace_s=None)


EXPECTED = {
    "passed": "passed",
    "failed": "failed",
    "stale": "stale",
    "missing": "missing",
    "unsigned": "unverified",
}


def test_one_policy_decides_the_same_everywhere(world):
    """decide() on the registry, the local gate, the server's list and AuthorizeSynthesis."""
    keyring = DirectoryKeyring(world.root / "site_keys")
    registry = world.server.state.registry  # type: ignore[attr-defined]
    with world.client("auditor") as auditor:
        listed = {d.generator_id: d for d in auditor.audit_states()}
    for name, state in EXPECTED.items():
        decision = decide(registry, keyring, world.ids[name])
        assert (decision.state, decision.allowed) == (state, state == "passed"), decision.reason
        assert listed[world.ids[name]].state == state
        assert decision.weights_sha256 == world.weights[name]
    assert "FAILED" in decide(registry, keyring, world.ids["failed"]).reason
    assert "audited 0000000000000000" in decide(registry, keyring, world.ids["stale"]).reason
    assert (
        "no federated audit report of site 'a'"
        in decide(registry, keyring, world.ids["missing"]).reason
    )
    unknown = decide(registry, keyring, "cd" * 32)
    assert (unknown.state, unknown.allowed) == ("unknown", False)
    assert LocalAuditGate(world.root).clear(world.ids["passed"]).state == "passed"
    assert (
        RemoteAuditGate(world.address, world.tls).clear(world.ids["passed"][:10]).state == "passed"
    )


@pytest.mark.parametrize("name", ["failed", "stale", "missing", "unsigned"])
def test_refused_at_the_servers_pull_for_synthesis(world, tmp_path, name):
    before = snapshot(world.root)
    out = tmp_path / "pulled"
    with world.client() as operator:
        with pytest.raises(RegistryError, match="FAILED_PRECONDITION") as caught:
            operator.pull(world.ids[name], out, for_synthesis=True, trusted=world.keys)
        assert EXPECTED[name] in str(caught.value)
        with pytest.raises(RegistryError, match="FAILED_PRECONDITION"):
            operator.authorize_synthesis(world.ids[name])
    assert not out.exists() and not list(tmp_path.iterdir())
    assert snapshot(world.root) == before
    # A plain pull (inspection, audit) is not for synthesis and still works.
    with world.client() as operator:
        assert (
            operator.pull(world.ids[name], tmp_path / "inspect", trusted=world.keys)
            / "manifest.json"
        ).is_file()


def test_a_passed_generator_is_pulled_for_synthesis_without_a_record(world, tmp_path):
    before = snapshot(world.root)
    with world.client() as operator:
        folder = operator.pull(
            world.ids["passed"], tmp_path / "g", for_synthesis=True, trusted=world.keys
        )
    assert (folder / "generator.safetensors").is_file()
    assert snapshot(world.root) == before  # nothing to record for a passing audit


def _synthesize(world: World, generator: str, out: Path, *extra: object):
    args = ["synthesize", "--generator", generator, "--labeller", str(world.base / "no-labeller"),
            "--out", str(out), "--size", "4", "--unlabelled", "--device", "cpu",
            "--tls-dir", str(world.tls), "--pull-dir", str(out.parent / "pull"),
            "--hub-root", str(world.root), *map(str, extra)]  # fmt: skip
    return runner.invoke(hub_app, args)


@pytest.mark.parametrize("name", ["failed", "stale", "missing", "unsigned"])
def test_synthesize_refuses_by_registry_id_and_by_local_bundle(world, tmp_path, name):
    before = snapshot(world.root)
    # By registry id through the hub: the server refuses the pull for synthesis.
    remote = _synthesize(world, world.ids[name], tmp_path / "a1", "--hub", world.address)
    assert isinstance(remote.exception, RegistryError), remote.output
    assert "FAILED_PRECONDITION" in str(remote.exception) and EXPECTED[name] in str(
        remote.exception
    )
    # A bundle pulled for inspection, then synthesized from the folder: the registry refuses.
    local = _synthesize(world, str(world.base / f"bundle-{name}"), tmp_path / "a2")
    assert isinstance(local.exception, AuditPolicyError), local.output
    assert f"({EXPECTED[name]})" in str(local.exception)
    assert not (tmp_path / "a1").exists() and not (tmp_path / "a2").exists()
    assert snapshot(world.root) == before


def test_synthesize_without_a_registry_or_with_an_unknown_bundle_is_refused(world, tmp_path):
    stray = make_bundle(tmp_path / "stray", "a", world.key("a"), seed=99)  # never published
    before = snapshot(world.root)
    result = _synthesize(world, str(stray), tmp_path / "x")
    assert isinstance(result.exception, AuditPolicyError)
    assert "(unknown)" in str(result.exception)
    keyring = tmp_path / "consortium-keyring.json"
    ConsortiumKeyring({"a": world.keys.public_key_pem("a")}).write(keyring)
    nowhere = _synthesize(world, str(stray), tmp_path / "y", "--hub-root", tmp_path / "no-hub",
                          "--keyring", keyring)  # fmt: skip
    assert "no registry" in str(nowhere.exception)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert snapshot(world.root) == before


def test_synthesize_refusal_is_one_line_and_exit_code_2(world, tmp_path):
    argv = [sys.executable, "-m", "hub", "synthesize",
            "--generator", str(world.base / "bundle-failed"), "--labeller", "none",
            "--out", str(tmp_path / "o"), "--size", "2",
            "--hub-root", str(world.root)]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "may not be used for synthesis (failed)" in done.stderr


def test_function_level_gates_refuse(world, tmp_path):
    """prepare_synthesis with a gate and clear_archives refuse before writing anything."""
    gate = LocalAuditGate(world.root, "operator")
    before = snapshot(world.root)
    options = SynthesisOptions(
        generator=str(world.base / "bundle-stale"), labeller="none", out_dir=tmp_path / "s",
        num_images=2, device="cpu", trusted=world.keys,
    )  # fmt: skip
    with pytest.raises(AuditPolicyError, match=r"\(stale\)"):
        prepare_synthesis(options, gate=gate)
    archive = _hand_archive(tmp_path / "arch-failed", world.ids["failed"])
    with pytest.raises(AuditPolicyError, match=r"\(failed\)"):
        clear_archives([read_archive(archive)], gate)
    assert not (tmp_path / "s").exists()
    assert snapshot(world.root) == before


def _hand_archive(folder: Path, generator_id: str) -> Path:
    """A small NIH-layout archive whose manifest names its generator."""
    make_archive(folder, ["No Finding", "Effusion", "No Finding", "Atelectasis"], site_id="a",
                 resolution_px=16)  # fmt: skip
    (folder / "manifest.json").write_text(
        json.dumps({"generator_id": generator_id, "site_id": "a"})
    )
    return folder


def _pool(world: World, out: Path, *archives: Path, extra: tuple = ()):
    args = ["pool", "--out", str(out), "--hub-root", str(world.root), *map(str, extra)]
    for site, folder in zip("abcd", archives, strict=False):  # one site per archive
        args += ["--archive", f"{site}={folder}"]
    return runner.invoke(hub_app, args)


def _tiny_labeller(folder: Path) -> Path:
    torch.manual_seed(0)
    cfg = LabellerConfig(
        resolution_px=32, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1)
    )
    classes = [ClassMetrics(name=n, threshold_logit=0.0, val_auc=0.8, train_positives=1)
               for n in NIH_LABELS]  # fmt: skip
    return save_labeller_export(
        folder, Labeller(cfg).eval(), LabellerCard(labeller_config=cfg, classes=classes)
    )


def test_override_passes_is_recorded_and_shows_in_provenance_and_list(world, tmp_path):
    labeller = _tiny_labeller(tmp_path / "labeller")
    out = tmp_path / "archive"
    args = ["synthesize", "--generator", world.ids["override"], "--labeller", str(labeller),
            "--out", str(out), "--size", "4", "--unlabelled", "--device", "cpu",
            "--hub", world.address, "--tls-dir", str(world.tls), "--pull-dir", str(tmp_path / "p"),
            "--hub-root", str(world.root), "--trust-local-export"]  # fmt: skip
    refused = runner.invoke(hub_app, args)
    assert isinstance(refused.exception, RegistryError) and "(failed)" in str(refused.exception)
    short = runner.invoke(hub_app, [*args, "--override-audit", "too short"])
    assert "10 to 500 characters" in str(short.exception)
    done = runner.invoke(hub_app, [*args, "--override-audit", REASON])
    assert done.exit_code == 0, (done.output, done.exception)
    assert "audit: OVERRIDE of failed by operator" in done.output
    # The archive's manifest names the override: reason, who (the certificate), when.
    manifest = json.loads((out / "manifest.json").read_text())
    audit = manifest["audit"]
    assert (audit["state"], audit["allowed"]) == ("failed", True)
    assert audit["override"]["reason"] == REASON and audit["override"]["given_by"] == "operator"
    assert audit["generator_id"] == world.ids["override"] == manifest["generator_id"]
    # The registry recorded it once (read straight from SQLite), as given by the operator.
    with sqlite3.connect(world.root / "registry.sqlite3") as db:
        rows = db.execute(
            "SELECT generator_id, given_by, reason FROM audit_overrides WHERE generator_id = ?",
            (world.ids["override"],),
        ).fetchall()
    assert rows == [(world.ids["override"], "operator", REASON)]
    # list (the auditor's view) shows the state and the override.
    listing = runner.invoke(hub_app, ["list", "--hub", world.address, "--tls-dir", str(world.tls),
                                      "--identity", "auditor", "--archive", str(out)])  # fmt: skip
    line = next(x for x in listing.output.splitlines() if x.startswith(world.ids["override"]))
    assert "FAILED" in line and "override by operator" in line and REASON in line
    assert f"archive {out}: generators {world.ids['override'][:12]} FAILED" in listing.output

    # Pooling it needs its own override (the one recorded is not a standing pass).
    passed = _hand_archive(tmp_path / "arch-passed", world.ids["passed"])
    before = snapshot(world.root)
    pooled = _pool(world, tmp_path / "pool", out, passed)
    assert isinstance(pooled.exception, AuditPolicyError) and "(failed)" in str(pooled.exception)
    assert not (tmp_path / "pool").exists() and snapshot(world.root) == before
    pooled = _pool(world, tmp_path / "pool", out, passed, extra=("--override-audit", REASON))
    assert pooled.exit_code == 0, (pooled.output, pooled.exception)
    pool_manifest = json.loads((tmp_path / "pool" / "pool_manifest.json").read_text())
    decisions = pool_manifest["generators"]
    assert decisions["archive"]["override"]["reason"] == REASON
    assert decisions["archive"]["override"]["given_by"].startswith("operator (local, user ")
    assert (
        decisions["arch-passed"]["state"] == "passed"
        and decisions["arch-passed"]["override"] is None
    )


def test_withdrawn_generator_is_refused_everywhere_and_marked(world, tmp_path):
    gid = world.ids["withdrawn"]
    archive = _hand_archive(tmp_path / "made-before", gid)  # an archive made before withdrawal
    before = snapshot(world.root)
    with world.client("site:b") as other_site, pytest.raises(PermissionDeniedError):
        other_site.withdraw(gid, "not my generator to withdraw")
    with world.client("auditor") as auditor, pytest.raises(PermissionDeniedError):
        auditor.withdraw(gid, "auditors may only read")
    assert snapshot(world.root) == before
    with world.client("site:a") as owner:
        record, created = owner.withdraw(gid[:10], "a training image was mislabelled as consented")
    assert created and record.withdrawn_by == "site:a" and record.generator_id == gid
    after_withdrawal = snapshot(world.root)
    # Not with an override either: at the server, at synthesize (hub and local), at pool.
    with world.client() as operator, pytest.raises(RegistryError, match="withdrawn"):
        operator.pull(
            gid, tmp_path / "p", for_synthesis=True, override_reason=REASON, trusted=world.keys
        )
    remote = _synthesize(
        world, gid, tmp_path / "a1", "--hub", world.address, "--override-audit", REASON
    )
    local = _synthesize(world, str(world.base / "bundle-withdrawn"), tmp_path / "a2",
                        "--override-audit", REASON)  # fmt: skip
    pooled = _pool(world, tmp_path / "pool", archive, extra=("--override-audit", REASON))
    for result in (remote, local, pooled):
        assert "withdrawn" in str(result.exception) and "no override" in str(result.exception)
    assert not any((tmp_path / n).exists() for n in ("p", "a1", "a2", "pool"))
    assert snapshot(world.root) == after_withdrawal
    # list marks the generator and the archive made from it.
    listing = runner.invoke(hub_app, ["list", "--hub", world.address, "--tls-dir", str(world.tls),
                                      "--archive", str(archive)])  # fmt: skip
    line = next(x for x in listing.output.splitlines() if x.startswith(gid))
    assert "WITHDRAWN" in line and "withdrawn by site:a" in line
    assert "MADE FROM WITHDRAWN GENERATOR" in listing.output
    # The operator's withdraw command on the same generator: already withdrawn, first record kept.
    again = runner.invoke(hub_app, ["withdraw", gid, "--reason", "operator withdraws it too",
                                    "--hub", world.address,
                                    "--tls-dir", str(world.tls)])  # fmt: skip
    assert again.exit_code == 0 and "was already withdrawn by site:a" in again.output
    assert snapshot(world.root) == after_withdrawal


def _forgeries(world: World) -> dict[str, bytes]:
    honest = json.loads(signed(world, "forged", hours=5, near_copies=4))
    flipped = json.loads(json.dumps(honest))
    flipped["summary"]["verdict"]["passed"] = True  # a failed audit made to pass
    other_key = make_report(world.ids["forged"], "a", hours=6).model_copy(
        update={"weights_sha256": world.weights["forged"]}
    )
    claims_b = make_report(world.ids["forged"], "b", hours=7).model_copy(
        update={"weights_sha256": world.weights["forged"]}
    )
    claims_z = make_report(world.ids["forged"], "z", hours=8).model_copy(
        update={"weights_sha256": world.weights["forged"]}
    )
    return {
        "edited verdict": json.dumps(flipped).encode(),
        "signed by another key": sign_audit_report(other_key, generate_signing_key()),
        "claims another site": sign_audit_report(claims_b, world.key("a")),
        "claims a site not in the keyring": sign_audit_report(claims_z, world.key("a")),
    }


def test_forged_audit_reports_are_refused_at_put(world):
    before = snapshot(world.root)
    with world.client() as operator:
        for what, data in _forgeries(world).items():
            with pytest.raises(SignatureError, match="UNAUTHENTICATED") as caught:
                operator.put_audit_report(data)
            assert "report of site" in str(caught.value) or "site 'z'" in str(caught.value), what
    assert snapshot(world.root) == before


def test_audit_reports_flags_a_report_forged_in_the_database(world, tmp_path):
    """An operator who edits a stored report cannot hide it: its signature no longer verifies."""
    gid = world.ids["forged"]
    with sqlite3.connect(world.root / "registry.sqlite3") as db:
        [(data,)] = db.execute(
            "SELECT report_json FROM audit_reports WHERE generator_id = ?", (gid,)
        )
    raw = json.loads(data)
    raw["summary"]["near_copy_count"] = 7  # still "passed", but the numbers were changed
    tampered = json.dumps(raw).encode()
    with sqlite3.connect(world.root / "registry.sqlite3") as db:
        db.execute(
            "UPDATE audit_reports SET report_json = ? WHERE generator_id = ?", (tampered, gid)
        )
    args = ["audit-reports", "--generator", gid[:12], "--hub", world.address, "--tls-dir",
            str(world.tls), "--site-keys", str(world.root / "site_keys")]  # fmt: skip
    result = runner.invoke(hub_app, args)
    assert result.exit_code == 1, result.output
    assert "signature FORGED" in result.output and "does not verify" in result.output
    verified = runner.invoke(hub_app, [*args[:2], world.ids["passed"], *args[3:]])
    assert verified.exit_code == 0 and "signature verified" in verified.output
    unsigned = runner.invoke(hub_app, [*args[:2], world.ids["unsigned"], *args[3:]])
    assert unsigned.exit_code == 0 and "signature unsigned" in unsigned.output
    # The policy refuses it, and no override can let a forged report through.
    before = snapshot(world.root)
    with world.client() as operator, pytest.raises(RegistryError, match=r"\(forged\)"):
        operator.authorize_synthesis(gid, REASON)
    assert snapshot(world.root) == before


def test_raw_grpc_pull_for_synthesis_is_refused_before_any_byte(world):
    """What the server enforces does not depend on the client: the raw stub, no helper."""
    import grpc

    from shared.proto import radshare_hub_pb2 as pb
    from shared.proto import radshare_hub_pb2_grpc as pb_grpc

    tls = ClientTLS.from_dir(world.tls, "operator")
    before = snapshot(world.root)
    with grpc.secure_channel(world.address, tls.credentials()) as channel:
        stub = pb_grpc.RadshareHubStub(channel)
        request = pb.GetRequest(artifact_id=world.ids["failed"], purpose=pb.PULL_PURPOSE_SYNTHESIS)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.GetGenerator(request, timeout=30))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "(failed)" in refused.value.details()
        unknown_purpose = pb.GetRequest(artifact_id=world.ids["failed"], purpose=7)  # type: ignore[arg-type]
        with pytest.raises(grpc.RpcError) as bad:
            list(stub.GetArtifact(unknown_purpose, timeout=30))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "purpose" in bad.value.details()
        # A site identity may pull (to audit) but never for synthesis, whatever the audit.
    site = ClientTLS.from_dir(world.tls, "site:a")
    with grpc.secure_channel(world.address, site.credentials()) as channel:
        stub = pb_grpc.RadshareHubStub(channel)
        request = pb.GetRequest(artifact_id=world.ids["passed"], purpose=pb.PULL_PURPOSE_SYNTHESIS)
        with pytest.raises(grpc.RpcError) as denied:
            list(stub.GetGenerator(request, timeout=30))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert snapshot(world.root) == before
