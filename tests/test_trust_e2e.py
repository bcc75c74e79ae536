"""Only audited generators reach an archive: end to end with real processes on loopback.

Processes: the hub (``radshare-hub serve``), a TLS SuperLink with SuperNode
authentication and two SuperNodes (site a: site A's cache, site b: site B's cache),
each site with its signing key, the consortium keyring and its own hub identity.
Site a publishes two tiny generators. The operator runs the federated audit of each
(``flwr run hub/flower/app``): the hub names the generator by registry id and weights
sha256, site a pulls and verifies it, audits it against its own data and signs the
report; the operator stores the signed bytes at the hub.

* honest: the audit passes, and ``radshare-hub synthesize`` writes an archive whose
  manifest names the passing audit;
* flagged: the hub asks for an audit whose near-copy threshold lies below the SSIM
  this generator's samples reach (an untrained network cannot memorise; the verdict
  rule is what is under test), so the site's verdict fails it. ``synthesize`` is
  refused by the hub (no archive, registry unchanged) until ``--override-audit`` is
  given; then the override (reason, who, when) is in the archive's manifest, in
  ``list`` and beside the FLAGGED, signature-verified report in ``audit-reports``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
import torch
from helpers_cache import build_site_cache
from typer.testing import CliRunner

from deployment.flower import run_app, site_node_config, write_consortium_keyring
from deployment.launcher import Consortium
from hub.audit.report import read_signed_audit_reports, upload_audit_reports
from hub.cli import app as hub_app
from shared.artifacts.audit import parse_audit_report
from shared.artifacts.generator import GENERATOR_FILE, write_generator_bundle
from shared.artifacts.labeller import ClassMetrics, LabellerCard, save_labeller_export
from shared.artifacts.signing import load_private_key
from shared.errors import RegistryError
from shared.hub_client import ClientTLS, HubClient
from shared.labels import NIH_LABELS
from shared.networks.generator import Generator, GeneratorConfig
from shared.networks.labeller import Labeller, LabellerConfig
from site_node.cli import app as site_app

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.realdata]

APP_DIR = Path(__file__).parents[1] / "hub" / "flower" / "app"
GEN_CFG = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)
REASON = "reader study on synthetic images only, approved by the board"
runner = CliRunner()


def invoke(app, *args: object):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def snapshot(root: Path) -> dict:
    """Every row of every registry table and every blob's bytes, read from disk."""
    with sqlite3.connect(root / "registry.sqlite3") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in sorted(tables)}
    blobs = {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "blobs").rglob("*"))
        if p.is_file()
    }
    return {"rows": rows, "blobs": blobs}


def _bundle(out: Path, key_path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    fields = {
        "site_id": "a", "generator_config": GEN_CFG.model_dump(),
        "resolution_px": GEN_CFG.resolution_px, "z_dim": GEN_CFG.z_dim,
        "training": {"kimg": 0.0}, "data": {"num_images": 0, "counts_per_label": {}},
    }  # fmt: skip
    write_generator_bundle(out, Generator(GEN_CFG).state_dict(), fields, load_private_key(key_path))
    return out


def _labeller(folder: Path) -> Path:
    torch.manual_seed(0)
    cfg = LabellerConfig(
        resolution_px=32, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1)
    )
    classes = [
        ClassMetrics(name=n, threshold_logit=0.0, val_auc=0.8, train_positives=1)
        for n in NIH_LABELS
    ]
    card = LabellerCard(labeller_config=cfg, classes=classes)
    return save_labeller_export(folder, Labeller(cfg).eval(), card)


def _audit(connection, out: Path, generator_id: str, weights: str, keyring: Path, **settings):
    run_config = {
        "task": "audit", "generator-id": generator_id, "weights-sha256": weights,
        "keyring": str(keyring), "out-dir": str(out), "expected-nodes": 2, "sites": "a",
        "num-samples": 16, "num-permutations": 99, "timeout-s": 600, **settings,
    }  # fmt: skip
    log = out.parent / f"{out.name}.log"
    run = run_app(connection, APP_DIR, run_config=run_config, log_path=log, timeout_s=600)
    assert run.completed, (run, log.read_text()[-3000:])
    return read_signed_audit_reports(out)


def test_only_a_passing_audit_or_a_recorded_override_reaches_an_archive(site_a, site_b, tmp_path):
    # Consortium material: TLS identities, site keys, the keyring, keys registered at the hub.
    tls, keys, root = tmp_path / "tls", tmp_path / "keys", tmp_path / "hub"
    identities = ("site:a", "site:b", "operator", "auditor")
    invoke(hub_app, "certs", "--out", tls, *(x for i in identities for x in ("-i", i)))
    for site in ("a", "b"):
        invoke(site_app, "keygen", "--site", site, "--out", keys)
        invoke(hub_app, "register-site", site, "--public-key", keys / f"site-{site}.ed25519.pub",
               "--root", root)  # fmt: skip
    keyring = write_consortium_keyring(
        {s: keys / f"site-{s}.ed25519.pub" for s in ("a", "b")}, tmp_path / "keyring.json"
    )
    caches = {
        s: build_site_cache(d, tmp_path / f"cache-{s}", resolutions_px=(32,))
        for s, d in (("a", site_a), ("b", site_b))
    }
    labeller = _labeller(tmp_path / "labeller")
    with Consortium(tmp_path / "services", tls_dir=tls, hub_root=root,
                    log_dir=tmp_path / "logs") as consortium:  # fmt: skip
        hub = consortium.start_hub()
        connection = consortium.start_superlink()
        for site in ("a", "b"):
            node_config = site_node_config(
                site, cache_dir=caches[site].path, work_dir=tmp_path / f"work-{site}", hub=hub,
                tls_dir=tls, keyring=keyring, signing_key=keys / f"site-{site}.ed25519",
            )  # fmt: skip
            consortium.start_supernode(site, node_config, key_dir=tmp_path / "node-keys")
        consortium.wait_for_nodes(2)

        # Site a publishes two generators.
        ids, weights = {}, {}
        with HubClient(hub, ClientTLS.from_dir(tls, "site:a")) as site_client:
            for seed, name in enumerate(("honest", "flagged")):
                bundle = _bundle(tmp_path / f"bundle-{name}", keys / "site-a.ed25519", seed)
                ids[name] = site_client.publish_bundle(bundle).artifact.artifact_id
                manifest = json.loads((bundle / "manifest.json").read_text())
                weights[name] = manifest["files"][GENERATOR_FILE]["sha256"]

        def synthesize(name: str, *extra: object):
            return runner.invoke(hub_app, [str(a) for a in (
                "synthesize", "--generator", ids[name], "--labeller", labeller,
                "--out", tmp_path / f"archive-{name}", "--size", 4, "--unlabelled",
                "--device", "cpu", "--hub", hub, "--tls-dir", tls, "--keyring", keyring,
                "--pull-dir", tmp_path / "pulled", "--trust-local-export", *extra)])  # fmt: skip

        # Before any federated audit, the hub refuses synthesis (missing).
        before = snapshot(root)
        early = synthesize("honest")
        assert isinstance(early.exception, RegistryError) and "(missing)" in str(early.exception)
        assert not (tmp_path / "archive-honest").exists() and snapshot(root) == before

        # The honest generator: audited at site a, the signed report stored, synthesis works.
        honest = _audit(connection, tmp_path / "audit-honest", ids["honest"], weights["honest"],
                        keyring)  # fmt: skip
        with HubClient(hub, ClientTLS.from_dir(tls, "operator")) as operator:
            assert upload_audit_reports(operator, honest) == {"a": True}
        report = parse_audit_report(honest["a"])
        assert report.summary.passed, report.summary.verdict.reasons
        assert report.weights_sha256 == weights["honest"]
        done = synthesize("honest")
        assert done.exit_code == 0, (done.output, done.exception)
        audit = json.loads((tmp_path / "archive-honest" / "manifest.json").read_text())["audit"]
        assert (audit["state"], audit["override"], audit["report_site_id"]) == ("passed", None, "a")
        assert audit["report_sha256"] == hashlib.sha256(honest["a"]).hexdigest()

        # The flagged generator: a stricter audit that its samples fail, at the site.
        threshold = max(1e-3, 0.25 * report.summary.best_ssim_quantiles["0.5"])
        flagged = _audit(connection, tmp_path / "audit-flagged", ids["flagged"],
                         weights["flagged"], keyring, **{"near-copy-ssim": threshold})  # fmt: skip
        failed = parse_audit_report(flagged["a"])
        assert not failed.summary.passed and failed.summary.near_copy_count > 0
        with HubClient(hub, ClientTLS.from_dir(tls, "operator")) as operator:
            assert upload_audit_reports(operator, flagged) == {"a": True}

        # It cannot reach an archive: the hub refuses; nothing written, registry unchanged.
        before = snapshot(root)
        refused = synthesize("flagged")
        assert isinstance(refused.exception, RegistryError), refused.output
        assert "FAILED_PRECONDITION" in str(refused.exception)
        assert "(failed)" in str(refused.exception)
        assert not (tmp_path / "archive-flagged").exists() and snapshot(root) == before

        # With an override it does, and the override is everywhere a reader looks.
        overridden = synthesize("flagged", "--override-audit", REASON)
        assert overridden.exit_code == 0, (overridden.output, overridden.exception)
        audit = json.loads((tmp_path / "archive-flagged" / "manifest.json").read_text())["audit"]
        assert (audit["state"], audit["allowed"]) == ("failed", True)
        assert audit["override"]["reason"] == REASON
        assert audit["override"]["given_by"] == "operator"  # the certificate's identity
        listing = invoke(hub_app, "list", "--hub", hub, "--tls-dir", tls, "--identity", "auditor")
        line = next(x for x in listing.splitlines() if x.startswith(ids["flagged"]))
        # The policy state stays FAILED (an override is no standing pass); the override
        # column names who let it through and why.
        assert "audit FAILED" in line
        assert "override by operator" in line and REASON in line
        honest_line = next(x for x in listing.splitlines() if x.startswith(ids["honest"]))
        assert "audit passed" in honest_line
        reports = invoke(hub_app, "audit-reports", "--generator", ids["flagged"],
                         "--hub", hub, "--tls-dir", tls, "--identity", "auditor",
                         "--keyring", keyring)  # fmt: skip
        assert "site a: FLAGGED" in reports and "signature verified" in reports
