"""A site is no oracle: ``query.audit`` only for registered, keyring-verified generators, capped.

The ClientApp's handler (``site_node.flower.client_app.audit``) is called with real Flower
Message and Context objects; it pulls from a real mTLS hub on loopback (SQLite registry,
blob store) over its own site identity. Attacks: an id the registry does not hold, a
sha256 that is not the registered weights', a generator whose signature does not verify
against the consortium keyring (the hub operator registered a rogue key for site c),
weights sent inside the message, 10^6 samples, a query over the daily cap (also after a
"restart": a new Context, the cap read back from the log). Each is refused with a reply
naming the rule, logged, and leaves the registry and blob store unchanged. An honest
query (real images: RADSHARE_SAMPLE_DATA) is answered with a report signed by the site.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, Context, Message, RecordDict
from typer.testing import CliRunner

from hub.audit.report import read_signed_audit_reports, write_audit_reports
from hub.certs import ensure_consortium_certs
from hub.config import load_hub_config
from hub.flower.audit_server import audit_content, audit_on_sites
from hub.registry.keyring import DirectoryKeyring
from hub.registry.server import start_server
from shared.artifacts.audit import AuditSettings, parse_audit_report, verify_audit_report
from shared.artifacts.classifier import (
    ClassifierCard,
    ClassifierClass,
    write_classifier_bundle,
)
from shared.artifacts.generator import GENERATOR_FILE, write_generator_bundle
from shared.artifacts.keyring import keyring_from_pems
from shared.artifacts.signing import generate_signing_key, public_key_pem, write_private_key
from shared.audit_records import MESSAGE_TYPE, REFUSED_CODE
from shared.errors import SignatureError
from shared.evaluation_records import EvaluationRequest, evaluation_from_records
from shared.hub_client import ClientTLS, HubClient
from shared.networks.generator import Generator, GeneratorConfig
from shared.networks.labeller import Labeller, LabellerConfig

pytestmark = pytest.mark.integration

GEN_CFG = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)
SMALL = AuditSettings(num_samples=24, num_permutations=199, reference_samples=8, panel_samples=0)
runner = CliRunner()


def _bundle(out: Path, site: str, key, seed: int) -> Path:
    torch.manual_seed(seed)
    fields = {
        "site_id": site,
        "generator_config": GEN_CFG.model_dump(),
        "resolution_px": GEN_CFG.resolution_px,
        "z_dim": GEN_CFG.z_dim,
        "training": {"kimg": 0.0},
        "data": {"num_images": 0, "counts_per_label": {}},
    }
    write_generator_bundle(out, Generator(GEN_CFG).state_dict(), fields, key)
    return out


CLF_CFG = LabellerConfig(resolution_px=32, class_names=("Effusion", "No Finding"),
                         init_features=8, growth_rate=4, block_config=(1, 1, 1, 1))  # fmt: skip


def _classifier(out: Path, key) -> Path:
    torch.manual_seed(0)
    card = ClassifierCard(
        labeller_config=CLF_CFG,
        trained_on={},
        classes=[ClassifierClass(name=n) for n in CLF_CFG.class_names],
    )
    write_classifier_bundle(out, Labeller(CLF_CFG), card, key)
    return out


def _manifest(bundle: Path, weights_file: str = GENERATOR_FILE) -> tuple[str, str]:
    """(artifact id, weights sha256) computed here from the files, independently of radshare."""
    from shared.artifacts.signing import artifact_id_of

    raw = json.loads((bundle / "manifest.json").read_bytes())
    weights = hashlib.sha256((bundle / weights_file).read_bytes()).hexdigest()
    return artifact_id_of(raw), weights


def _snapshot(root: Path) -> tuple[list, list]:
    """Registry rows and blob files read straight from disk."""
    with sqlite3.connect(root / "registry.sqlite3") as db:
        rows = db.execute("SELECT * FROM artifacts ORDER BY 1").fetchall()
        rows += db.execute("SELECT * FROM artifact_files ORDER BY 1, 2").fetchall()
    blobs = sorted(
        (p.relative_to(root).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in (root / "blobs").rglob("*")
        if p.is_file()
    )
    return rows, blobs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A hub with site a's generator and site c's generator signed by a rogue key."""
    base = tmp_path_factory.mktemp("query-policy")
    tls = base / "tls"
    ensure_consortium_certs(tls, ["site:a", "site:b", "site:c", "operator"])
    keys = {site: generate_signing_key() for site in ("a", "b", "c", "hub")}
    rogue = generate_signing_key()
    hub_keys = DirectoryKeyring(base / "site_keys")
    for site in ("a", "b", "hub"):
        hub_keys.register(site, public_key_pem(keys[site].public_key()))
    hub_keys.register("c", public_key_pem(rogue.public_key()))  # the operator swapped c's key
    # The consortium keyring the sites hold: the genuine keys.
    keyring = base / "consortium-keyring.json"
    keyring_from_pems(
        {s: public_key_pem(k.public_key()) for s, k in keys.items()}, source="test"
    ).write(keyring)
    for site in ("a", "b"):
        write_private_key(base / f"site-{site}.ed25519", keys[site])
    root = base / "hub"
    config = load_hub_config(None, root=root, port=0, tls_dir=tls, site_keys_dir=base / "site_keys")
    server = start_server(config)
    hub = f"127.0.0.1:{server.port}"
    bundles = {"a": _bundle(base / "gen-a", "a", keys["a"], 0)}
    bundles["c"] = _bundle(base / "gen-c", "c", rogue, 1)
    bundles["unpublished"] = _bundle(base / "gen-x", "a", keys["a"], 2)
    for site in ("a", "c"):
        with HubClient(hub, ClientTLS.from_dir(tls, f"site:{site}")) as client:
            client.publish_bundle(bundles[site])
    # A classifier the hub trained and signed, registered by the operator.
    bundles["classifier"] = _classifier(base / "clf", keys["hub"])
    with HubClient(hub, ClientTLS.from_dir(tls, "operator")) as client:
        client.publish_bundle(bundles["classifier"])
    yield {"base": base, "tls": tls, "hub": hub, "root": root, "keyring": keyring,
           "keys": keys, "bundles": bundles}  # fmt: skip
    server.stop(grace_s=None)


@pytest.fixture
def task_identity():
    """Flower stamps messages with the running task's identity; set one for in-process use."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id = TaskIdentity._task_id = TaskIdentity._node_id = None


def _node_config(world, site: str, work: Path, cache: Path | None = None, **caps) -> dict:
    config = {
        "site": site,
        "cache-dir": str(cache or work / "no-cache"),
        "work-dir": str(work),
        "hub": world["hub"],
        "tls-dir": str(world["tls"]),
        "keyring": str(world["keyring"]),
        "signing-key": str(world["base"] / f"site-{site}.ed25519"),
    }
    config.update({k.replace("_", "-"): v for k, v in caps.items()})
    return config


def _ask(content: RecordDict, node_config: dict, node: int = 7) -> Message:
    """One ``query.audit`` through the ClientApp's handler (a fresh Context: a new process)."""
    from site_node.flower import client_app

    msg = Message(content=content, dst_node_id=node, message_type=MESSAGE_TYPE)
    return client_app.audit(msg, Context(1, node, node_config, RecordDict(), {}))


def _log(work: Path) -> list[dict]:
    path = work / "query-log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _refused(reply: Message, rule: str) -> str:
    assert reply.has_error() and reply.error.code == REFUSED_CODE, reply
    assert f"rule {rule}:" in reply.error.reason, reply.error.reason
    return reply.error.reason


def test_unregistered_tampered_and_rogue_generators_are_refused(world, tmp_path, task_identity):
    before = _snapshot(world["root"])
    gen_id, sha = _manifest(world["bundles"]["a"])
    unpublished_id, unpublished_sha = _manifest(world["bundles"]["unpublished"])
    rogue_id, rogue_sha = _manifest(world["bundles"]["c"])
    config = _node_config(world, "b", tmp_path)
    cases = [
        (unpublished_id, unpublished_sha, "registered-artifacts-only", "not registered"),
        (gen_id, hashlib.sha256(b"other weights").hexdigest(), "weights-sha256-matches",
         "sha256"),
        (rogue_id, rogue_sha, "signature-verifies-against-keyring", "signature"),
    ]  # fmt: skip
    for artifact_id, weights_sha, rule, words in cases:
        reason = _refused(_ask(audit_content(artifact_id, weights_sha, SMALL), config), rule)
        assert reason.startswith("site b ") and words in reason.lower()
    # Weights inside the message are refused before anything else is read.
    content = audit_content(gen_id, sha, SMALL)
    content["audit.generator"] = ArrayRecord({"w": torch.zeros(3)})
    _refused(_ask(content, config), "well-formed-request")

    log = _log(tmp_path)
    assert [e["decision"] for e in log] == ["refused"] * 4
    assert [e["artifact_id"] for e in log] == [unpublished_id, gen_id, rogue_id, "unknown"]
    assert not (tmp_path / "audits").exists()  # no audit ran
    assert not list((tmp_path / "artifacts").glob(rogue_id + "*"))  # the rogue one not cached
    assert _snapshot(world["root"]) == before


def test_a_million_samples_is_refused_before_any_work(world, tmp_path, task_identity):
    gen_id, sha = _manifest(world["bundles"]["a"])
    settings = AuditSettings(num_samples=10**6)
    reply = _ask(audit_content(gen_id, sha, settings), _node_config(world, "b", tmp_path))
    reason = _refused(reply, "max-audit-samples")
    assert "1000000 samples requested > limit 5000" in reason
    assert not (tmp_path / "artifacts").exists()  # not even pulled
    [entry] = _log(tmp_path)
    assert (entry["decision"], entry["requested_samples"]) == ("refused", 10**6)
    # The compute a hub may ask for is capped too: permutations, real reference images.
    effort = AuditSettings(num_samples=24, num_permutations=10**6)
    reason = _refused(_ask(audit_content(gen_id, sha, effort), _node_config(world, "b", tmp_path)),
                      "max-audit-permutations")  # fmt: skip
    assert "1000000 permutations requested > limit 100000" in reason
    effort = AuditSettings(num_samples=24, reference_samples=10**5)
    _refused(_ask(audit_content(gen_id, sha, effort), _node_config(world, "b", tmp_path)),
             "max-audit-samples")  # fmt: skip
    assert not (tmp_path / "artifacts").exists()


def test_daily_cap_is_read_from_the_log_and_survives_a_restart(world, tmp_path, task_identity):
    gen_id, sha = _manifest(world["bundles"]["a"])
    now = datetime.now(UTC)
    lines = [  # written by an earlier ClientApp process: two accepted audits, one 25 h old
        {"time": (now - timedelta(hours=h)).isoformat(), "message_type": MESSAGE_TYPE,
         "artifact_id": gen_id, "weights_sha256": sha, "requested_samples": 24,
         "decision": "accepted", "reason": "", "duration_s": 0.0}
        for h in (25, 1)
    ]  # fmt: skip
    (tmp_path / "query-log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = _node_config(world, "b", tmp_path, max_audits_per_artifact_per_day=1)
    reason = _refused(
        _ask(audit_content(gen_id, sha, SMALL), config), "max-audits-per-artifact-per-day"
    )
    assert "1 in the last 24 h; limit 1" in reason
    # The total cap counts every accepted query of the last 24 h, whatever the artifact.
    other = hashlib.sha256(b"x").hexdigest()
    config = _node_config(world, "b", tmp_path, max_queries_per_day=1)
    reason = _refused(_ask(audit_content(other, other, SMALL), config), "max-queries-per-day")
    assert "1 queries answered in the last 24 h; limit 1" in reason
    assert [e["decision"] for e in _log(tmp_path)] == ["accepted", "accepted", "refused", "refused"]


def test_hub_report_lists_the_refusals_per_site(world, tmp_path, task_identity):
    from site_node.flower import client_app

    gen_id, sha = _manifest(world["bundles"]["a"])

    class Grid:  # routes to the ClientApp handler, one node per site, in this process
        def get_node_ids(self):
            return [21, 22]

        def send_and_receive(self, messages, timeout=None):
            for msg in messages:
                node = msg.metadata.dst_node_id
                config = _node_config(world, "ab"[node - 21], tmp_path / str(node))
                yield client_app.audit(msg, Context(1, node, config, RecordDict(), {}))

    results = audit_on_sites(
        Grid(), audit_content(gen_id, sha, AuditSettings(num_samples=10**6)), gen_id
    )
    assert results.reports == {} and results.failures == {}
    assert set(results.refusals) == {21, 22}
    assert "site a refused by rule max-audit-samples" in results.refusals[21]
    page = write_audit_reports(tmp_path / "out", gen_id, results.signed, results.failures,
                               results.refusals).read_text()  # fmt: skip
    assert "2 refused under their query policy" in page
    assert "## Sites that refused the query" in page
    assert "node 22: site b refused by rule max-audit-samples: 1000000 samples" in page


@pytest.mark.realdata
def test_honest_query_is_answered_signed_and_then_capped(world, site_a, tmp_path, task_identity):
    from helpers_cache import build_site_cache

    from site_node.cli import app as site_app

    cache = build_site_cache(site_a, tmp_path / "cache", resolutions_px=(32,))
    gen_id, sha = _manifest(world["bundles"]["a"])
    before = _snapshot(world["root"])
    config = _node_config(world, "a", tmp_path / "work", cache.path,
                          max_audits_per_artifact_per_day=1)  # fmt: skip
    reply = _ask(audit_content(gen_id, sha, SMALL), config)
    assert not reply.has_error(), reply.error
    data = reply.content.config_records["audit.report"]["json"]
    report = verify_audit_report(data, world["keys"]["a"].public_key())
    assert (report.generator_id, report.site_id, report.weights_sha256) == (gen_id, "a", sha)
    assert report.summary.num_samples == SMALL.num_samples
    with pytest.raises(SignatureError):
        verify_audit_report(data, world["keys"]["b"].public_key())
    # Tampering with one number of the signed bytes breaks the signature.
    tampered = data.replace(b'"near_copy_count":', b'"near_copy_count":1', 1)
    assert tampered != data
    with pytest.raises(SignatureError):
        verify_audit_report(tampered, world["keys"]["a"].public_key())
    # The hub keeps those bytes verbatim.
    write_audit_reports(tmp_path / "hub-out", gen_id, {"a": data}, {})
    assert read_signed_audit_reports(tmp_path / "hub-out") == {"a": data}
    assert parse_audit_report(data).signature is not None

    # The second query of the day (a new ClientApp process) is over the cap of 1.
    _refused(_ask(audit_content(gen_id, sha, SMALL), config), "max-audits-per-artifact-per-day")
    log = _log(tmp_path / "work")
    assert [e["decision"] for e in log] == ["accepted", "answered", "refused"]
    assert log[1]["duration_s"] > 0 and log[0]["artifact_id"] == gen_id
    text = json.dumps(log)
    ids = set(cache.table["image_index"].astype(str)) | set(cache.table["patient_id"].astype(str))
    assert not any(i in text for i in ids if len(i) >= 6)  # no patient or image id
    assert _snapshot(world["root"]) == before

    # The site's IT reads the log as a table.
    result = runner.invoke(site_app, ["query-log", "--work-dir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert rows[0].split()[:3] == ["time", "(UTC)", "message"]
    assert [r.split()[6] for r in rows[1:4]] == ["accepted", "answered", "refused"]
    assert "1 answered, 1 refused, 0 failed" in rows[-1]


def _evaluate(content: RecordDict, node_config: dict, node: int = 7) -> Message:
    from site_node.flower import client_app

    msg = Message(content=content, dst_node_id=node, message_type="evaluate.classifier")
    return client_app.evaluate_classifier(msg, Context(1, node, node_config, RecordDict(), {}))


@pytest.mark.realdata
def test_evaluation_only_of_registered_classifiers(world, site_a, tmp_path, task_identity):
    from helpers_cache import build_site_cache

    from hub.flower.evaluate_server import request_content

    cache = build_site_cache(site_a, tmp_path / "cache", resolutions_px=(32,))
    clf_id, sha = _manifest(world["bundles"]["classifier"], "classifier.safetensors")
    config = _node_config(world, "a", tmp_path / "work", cache.path)
    common = {"tag": "pooled", "labeller_config": CLF_CFG, "num_resamples": 50}
    # Registered and verified against the keyring's "hub" key: answered.
    request = EvaluationRequest(classifier_id=clf_id, weights_sha256=sha, **common)
    reply = _evaluate(request_content(request), config)
    assert not reply.has_error(), reply.error
    assert evaluation_from_records(reply.content).n_images == len(cache.indices("test"))
    # Weights sent inline (not registered), at a site not in federated labeller training.
    net = Labeller(CLF_CFG)
    reason = _refused(_evaluate(request_content(EvaluationRequest(**common), net), config),
                      "registered-artifacts-only")  # fmt: skip
    assert "allow-federated-labeller=false" in reason
    # Another sha256 than the registered weights'.
    other = EvaluationRequest(classifier_id=clf_id, weights_sha256="0" * 64, **common)
    _refused(_evaluate(request_content(other), config), "weights-sha256-matches")
    # The real-data baseline needs no artifact but counts against the caps.
    capped = _node_config(world, "a", tmp_path / "work", cache.path, max_queries_per_day=1)
    real = EvaluationRequest(mode="train-real", **common)
    _refused(_evaluate(request_content(real), capped), "max-queries-per-day")
    decisions = [(e["artifact_id"], e["decision"]) for e in _log(tmp_path / "work")]
    assert decisions == [(clf_id, "accepted"), (clf_id, "answered"), ("inline", "refused"),
                         (clf_id, "refused"), ("train-real", "refused")]  # fmt: skip


def test_query_log_verb_on_a_fresh_site_and_a_bad_folder(tmp_path, capsys):
    from shared.cli_main import run_cli
    from site_node.cli import app as site_app

    assert run_cli(site_app, ["query-log", "--work-dir", str(tmp_path)], prog="s") == 0
    assert "no federated query received yet" in capsys.readouterr().out
    missing = tmp_path / "nowhere"
    assert run_cli(site_app, ["query-log", "--work-dir", str(missing)], prog="s") == 2
    output = capsys.readouterr()
    assert f"--work-dir {missing}: not a folder" in output.out + output.err


def test_evaluation_report_lists_the_refusals(world, tmp_path, task_identity):
    from hub.evaluation.report import write_report
    from hub.flower.evaluate_server import evaluate_on_sites, request_content
    from site_node.flower import client_app

    class Grid:
        def get_node_ids(self):
            return [31]

        def send_and_receive(self, messages, timeout=None):
            for msg in messages:
                config = _node_config(world, "a", tmp_path / "work")
                yield client_app.evaluate_classifier(msg, Context(1, 31, config, RecordDict(), {}))

    request = EvaluationRequest(tag="pooled", labeller_config=CLF_CFG)
    results = evaluate_on_sites(Grid(), request_content(request, Labeller(CLF_CFG)))
    assert results.evaluations == {} and results.failures == {}
    assert "site a refused by rule registered-artifacts-only" in results.refusals[31]
    page = write_report(
        tmp_path / "report.html", [], refusals={"pooled/node 31": results.refusals[31]}
    )
    html = page.read_text()
    assert "Sites that refused the query" in html and "registered-artifacts-only" in html


def test_federated_labeller_rounds_need_the_site_to_opt_in(world, tmp_path, task_identity):
    from site_node.flower import client_app

    msg = Message(content=RecordDict(), dst_node_id=7, message_type="train.labeller")
    config = _node_config(world, "a", tmp_path)
    reply = client_app.train_labeller(msg, Context(1, 7, config, RecordDict(), {}))
    assert "allow-federated-labeller=false" in _refused(reply, "allow-federated-labeller")
    [entry] = _log(tmp_path)
    assert (entry["message_type"], entry["decision"]) == ("train.labeller", "refused")
