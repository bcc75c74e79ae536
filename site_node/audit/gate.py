"""The pre-publication gate: no generator leaves without a passing audit of exactly its weights.

``radshare-site audit`` writes each audit to a new folder ``<run>/audits/<UTC stamp>/``:
``summary.json`` (the AuditSummary, numbers only), ``local_summary.json`` (what the
manifest carries), ``audited_weights.json`` (sha256 of the weights that were sampled)
and ``panel/`` (pixels; stays here). :func:`publication_audit` reads the latest one and

* returns its manifest entry if it passed and audited the weights being published;
* raises :class:`~shared.errors.AuditError` if it failed, is missing, or audited other
  weights — unless an override reason is given, which then travels in the manifest
  entry (``passed`` false, ``override_reason``, ``method`` ``override: ...``), signed
  with the rest, so the hub and every auditor see that the gate was overridden.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from shared.artifacts.audit import AuditSummary, to_local_audit_summary
from shared.artifacts.generator import LocalAuditSummary
from shared.errors import AuditError
from shared.fileio import atomic_write_text, sha256_file

__all__ = [
    "AUDITED_WEIGHTS_FILE",
    "AUDITS_DIR",
    "LOCAL_SUMMARY_FILE",
    "SUMMARY_FILE",
    "GateDecision",
    "latest_audit",
    "new_audit_dir",
    "publication_audit",
    "write_audit_folder",
]

AUDITS_DIR = "audits"
SUMMARY_FILE = "summary.json"
LOCAL_SUMMARY_FILE = "local_summary.json"
AUDITED_WEIGHTS_FILE = "audited_weights.json"


def new_audit_dir(run_dir: Path) -> Path:
    """A new, not yet existing ``<run>/audits/<UTC stamp>`` folder path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(run_dir) / AUDITS_DIR / stamp


def write_audit_folder(out: Path, summary: AuditSummary, weights_sha256: str | None) -> None:
    """Write the summary, its manifest entry and the audited weights' hash (summary last)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / AUDITED_WEIGHTS_FILE, json.dumps({"sha256": weights_sha256}))
    local = to_local_audit_summary(summary)
    atomic_write_text(out / LOCAL_SUMMARY_FILE, local.model_dump_json(indent=2))
    atomic_write_text(out / SUMMARY_FILE, summary.model_dump_json(indent=2))


def latest_audit(run_dir: Path) -> Path | None:
    """The newest complete audit folder of a run (one with ``summary.json``), or None."""
    root = Path(run_dir) / AUDITS_DIR
    folders = sorted(p for p in root.glob("*") if (p / SUMMARY_FILE).is_file())
    return folders[-1] if folders else None


class GateDecision:
    """The manifest's audit entry and, when the gate was overridden, the reason."""

    def __init__(self, entry: LocalAuditSummary, override_reason: str | None) -> None:
        self.entry = entry
        self.override_reason = override_reason


def _override(reason: str, why: str, audit: LocalAuditSummary | None) -> GateDecision:
    if len(reason.strip()) < 10:
        raise AuditError(f"--override-audit {reason!r}: give a reason of 10 characters or more")
    reason = reason.strip()[:500]
    entry = LocalAuditSummary(
        passed=False,
        method=f"override: {reason[:300]} ({why})",
        metrics=dict(audit.metrics) if audit else {},
        thresholds=dict(audit.thresholds) if audit else {},
        report_sha256=audit.report_sha256 if audit else None,
        override_reason=reason,
    )
    return GateDecision(entry, reason)


def publication_audit(
    run_dir: Path, weights: Path, *, override_reason: str | None = None
) -> GateDecision:
    """Check the run's latest audit against the weights to publish (see the module docstring).

    Raises:
        AuditError: no audit, a failed audit, or an audit of other weights, without override.
    """
    folder = latest_audit(run_dir)
    if folder is None:
        why = (
            f"no audit in {Path(run_dir) / AUDITS_DIR} (run `radshare-site audit --run {run_dir}`)"
        )
        if override_reason is None:
            raise AuditError(f"publish refused: {why}")
        return _override(override_reason, "no audit", None)
    summary = AuditSummary.model_validate_json((folder / SUMMARY_FILE).read_text())
    local = to_local_audit_summary(summary)
    audited = json.loads((folder / AUDITED_WEIGHTS_FILE).read_text()).get("sha256")
    problem, same_weights = None, audited == sha256_file(weights)[0]
    if not same_weights:
        problem = f"{folder} audited other weights than {weights}"
    elif not summary.passed:
        problem = f"{folder} FAILED: {'; '.join(summary.verdict.reasons)}"
    if problem is None:
        return GateDecision(local, None)
    if override_reason is None:
        raise AuditError(f"publish refused: {problem} (or pass --override-audit 'reason')")
    return _override(override_reason, "audit failed" if same_weights else "stale audit", local)
