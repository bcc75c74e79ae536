"""``radshare-site audit`` writes a complete audit folder; the publication gate reads the latest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers_cache import build_site_cache
from typer.testing import CliRunner

from shared.artifacts.audit import AuditSummary, AuditVerdict, to_local_audit_summary
from shared.artifacts.bundle import read_bundle
from shared.errors import AuditError, SignatureError
from shared.fileio import sha256_file
from shared.networks.generator import Generator, GeneratorConfig
from site_node.audit.gate import (
    AUDITED_WEIGHTS_FILE,
    LOCAL_SUMMARY_FILE,
    SUMMARY_FILE,
    latest_audit,
    publication_audit,
    write_audit_folder,
)
from site_node.cli import app
from site_node.pggan.export import WEIGHTS_NAME, export_generator

GEN_CFG = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)


@pytest.fixture(scope="module")
def audited_run(site_a: Path, tmp_path_factory) -> tuple[Path, AuditSummary]:
    """A run with an exported generator, audited once through the CLI."""
    root = tmp_path_factory.mktemp("gate")
    cache = build_site_cache(site_a, root / "cache", resolutions_px=(32,))
    torch.manual_seed(0)
    export_generator(root / "run", Generator(GEN_CFG).eval(), training={}, data={})
    argv = ["audit", "--run", str(root / "run"), "--cache", str(cache.path)]
    argv += ["--num-samples", "16", "--num-permutations", "99", "--panel-samples", "2"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    folder = latest_audit(root / "run")
    assert folder is not None
    return root / "run", AuditSummary.model_validate_json((folder / SUMMARY_FILE).read_text())


def _verdict(passed: bool) -> AuditVerdict:
    flags = {"near_copies": not passed, "ssim_holdout": False, "feature_holdout": False}
    reasons = [] if passed else ["3 samples with SSIM >= 0.9 to a training image (allowed 0)"]
    return AuditVerdict(passed=passed, rule="test rule", flags=flags, reasons=reasons)


def _write(run: Path, name: str, summary: AuditSummary, passed: bool, sha: str) -> AuditSummary:
    summary = summary.model_copy(update={"verdict": _verdict(passed)})
    write_audit_folder(run / "audits" / name, summary, sha)
    return summary


@pytest.mark.realdata
def test_cli_writes_summary_manifest_entry_weights_hash_and_a_local_panel(audited_run):
    run, summary = audited_run
    folder = latest_audit(run)
    assert folder is not None and folder.parent == run / "audits"
    local = json.loads((folder / LOCAL_SUMMARY_FILE).read_text())
    assert local == json.loads(to_local_audit_summary(summary).model_dump_json())
    weights = run / "export" / WEIGHTS_NAME
    assert json.loads((folder / AUDITED_WEIGHTS_FILE).read_text()) == {
        "sha256": sha256_file(weights)[0]
    }
    assert (folder / "panel" / "nearest_pairs.png").read_bytes()[:4] == b"\x89PNG"
    assert (summary.num_samples, summary.resolution_px) == (16, 32)


@pytest.mark.realdata
def test_gate_passes_the_latest_passing_audit_of_these_weights(audited_run, tmp_path):
    run, summary = audited_run
    weights = run / "export" / WEIGHTS_NAME
    run_copy = tmp_path / "run"
    _write(run_copy, "20260101T000000000000Z", summary, False, sha256_file(weights)[0])
    newest = _write(run_copy, "20260102T000000000000Z", summary, True, sha256_file(weights)[0])
    decision = publication_audit(run_copy, weights)
    assert decision.override_reason is None
    assert decision.entry == to_local_audit_summary(newest)


@pytest.mark.realdata
def test_gate_refuses_failed_missing_or_stale_audits_unless_overridden(audited_run, tmp_path):
    run, summary = audited_run
    weights = run / "export" / WEIGHTS_NAME
    with pytest.raises(AuditError, match="no audit"):
        publication_audit(tmp_path / "never-audited", weights)
    _write(tmp_path / "failed", "20260101T000000000000Z", summary, False, sha256_file(weights)[0])
    with pytest.raises(AuditError, match="FAILED: 3 samples"):
        publication_audit(tmp_path / "failed", weights)
    _write(tmp_path / "stale", "20260101T000000000000Z", summary, True, "0" * 64)
    with pytest.raises(AuditError, match="audited other weights"):
        publication_audit(tmp_path / "stale", weights)
    reason = "radiologist reviewed all 32 closest pairs: no patient recognisable"
    decision = publication_audit(tmp_path / "failed", weights, override_reason=reason)
    assert decision.override_reason == reason
    assert not decision.entry.passed
    assert decision.entry.method.startswith(f"override: {reason}")
    with pytest.raises(AuditError, match="10 characters"):
        publication_audit(tmp_path / "failed", weights, override_reason="ok")


def _publish_bundle_only(run: Path, keys: Path, out: Path, *extra: str):
    argv = ["publish", "--run", str(run), "--site", "a", "--key", str(keys / "site-a.ed25519")]
    return CliRunner().invoke(app, [*argv, "--bundle-out", str(out), "--bundle-only", *extra])


@pytest.mark.realdata
def test_publish_command_enforces_the_gate_and_signs_an_override(audited_run, tmp_path):
    run, summary = audited_run
    keys = tmp_path / "keys"
    assert CliRunner().invoke(app, ["keygen", "--site", "a", "--out", str(keys)]).exit_code == 0
    fresh = tmp_path / "run"
    shutil.copytree(run / "export", fresh / "export")  # the same weights, never audited
    weights = fresh / "export" / WEIGHTS_NAME

    refused = _publish_bundle_only(fresh, keys, tmp_path / "b0")
    assert isinstance(refused.exception, AuditError) and "no audit" in str(refused.exception)
    _write(fresh, "20260101T000000000000Z", summary, False, sha256_file(weights)[0])
    refused = _publish_bundle_only(fresh, keys, tmp_path / "b1")
    assert isinstance(refused.exception, AuditError) and "FAILED" in str(refused.exception)
    assert not (tmp_path / "b0").exists() and not (tmp_path / "b1").exists()

    reason = "radiologist reviewed the 32 closest pairs: no patient recognisable"
    done = _publish_bundle_only(fresh, keys, tmp_path / "b2", "--override-audit", reason)
    assert done.exit_code == 0, done.output
    entry = read_bundle(tmp_path / "b2", keys / "site-a.ed25519.pub").model.privacy.audit
    assert (entry.passed, entry.override_reason) == (False, reason)
    assert entry.metrics == to_local_audit_summary(summary).metrics  # the failed audit's numbers
    manifest = tmp_path / "b2" / "manifest.json"  # the reason is covered by the signature
    manifest.write_text(manifest.read_text().replace(reason, "nothing to see here, auditor"))
    with pytest.raises(SignatureError):
        read_bundle(tmp_path / "b2", keys / "site-a.ed25519.pub")

    _write(fresh, "20260102T000000000000Z", summary, True, sha256_file(weights)[0])
    done = _publish_bundle_only(fresh, keys, tmp_path / "b3")
    assert done.exit_code == 0, done.output
    entry = read_bundle(tmp_path / "b3", keys / "site-a.ed25519.pub").model.privacy.audit
    assert entry.passed and entry.override_reason is None
    assert entry.metrics == to_local_audit_summary(summary).metrics
