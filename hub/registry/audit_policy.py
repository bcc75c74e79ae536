"""The hub's audit policy: may this generator be used for synthesis? One function decides.

:func:`decide` reads the registry and answers with an
:class:`~shared.artifacts.audit_state.AuditDecision` naming the state and the reason:

1. the id must name a committed generator (else ``unknown``);
2. a withdrawn generator is refused, always (``withdrawn``);
3. the report that counts is the **latest federated report of the generator's own
   site** (newest ``received``); none is ``missing``. The site's signed
   pre-publication summary in the manifest is shown but is not enough: the
   consortium runs the federated audit before synthesis. Reports of other sites
   (cross-site audits) are for auditors to read; they do not decide;
4. its stored bytes must verify against the keyring's key of that site (else
   ``forged``, never overridable); an unsigned legacy report is ``unverified``;
5. it must have audited these weights: ``weights_sha256`` equal to the sha256 of the
   registry's ``generator.safetensors`` (else ``stale``);
6. it must have passed (else ``failed``).

:func:`clear_for_synthesis` applies it: a refusal raises
:class:`~shared.errors.AuditPolicyError`, unless an override reason is given and the
state is overridable (``failed``, ``missing``, ``stale``, ``unverified``, ``unknown``);
the override is recorded in the registry with the caller's identity (once per
generator, caller and reason) and returned in the decision, which the caller writes
into the archive's provenance. Everything that pulls a generator for synthesis calls
it: ``radshare-hub synthesize`` and ``pool`` (directly on a local registry, or over
gRPC where the server calls it), and the server's pull for synthesis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Literal

from hub.registry.base import ArtifactRecord, ArtifactRegistry, StoredAuditReport
from shared.artifacts.audit import verify_audit_report
from shared.artifacts.audit_state import (
    OVERRIDABLE_STATES,
    AuditDecision,
    AuditOverrideRecord,
    AuditState,
    check_reason,
)
from shared.artifacts.keyring import SignerKeys
from shared.artifacts.records import ArtifactKind
from shared.artifacts.signing import load_public_key
from shared.errors import AuditPolicyError, ConfigError, NotFoundError, SignatureError

__all__ = [
    "GENERATOR_WEIGHTS_FILE",
    "ReportCheck",
    "check_report",
    "clear_for_synthesis",
    "decide",
    "decide_all",
    "resolve_generator_id",
]

#: The generator bundle's weights file, whose sha256 a report must name.
GENERATOR_WEIGHTS_FILE = "generator.safetensors"

ReportCheck = Literal["verified", "FORGED", "unsigned"]


def check_report(stored: StoredAuditReport, keys: SignerKeys) -> tuple[ReportCheck, str]:
    """Verify a stored report's bytes against the keyring's key of its site.

    Returns ``("verified", "")``, ``("unsigned", why)`` or ``("FORGED", why)``; a site
    missing from the keyring counts as FORGED (nobody can vouch for the bytes).
    """
    if stored.report.signature is None:
        return "unsigned", "unsigned legacy report (no site signature)"
    site = stored.report.site_id
    try:
        key = load_public_key(keys.public_key_pem(site), where=f"key of site {site!r}")
        verify_audit_report(stored.report_json, key, where=f"report of site {site!r}")
    except (SignatureError, ConfigError) as error:
        return "FORGED", str(error)
    return "verified", ""


def resolve_generator_id(registry: ArtifactRegistry, ref: str) -> ArtifactRecord | None:
    """The committed generator named by ``ref`` (full id or unique 8+ hex prefix), or None."""
    try:
        record = registry.get(ref)
    except NotFoundError:
        return None
    return record if record.summary.kind is ArtifactKind.GENERATOR else None


def _weights_sha256(record: ArtifactRecord) -> str | None:
    for info in record.summary.files:
        if info.name == GENERATOR_WEIGHTS_FILE:
            return info.sha256
    return None


def _prepublication_passed(record: ArtifactRecord) -> bool | None:
    try:
        audit = json.loads(record.manifest_json)["privacy"]["audit"]
    except (ValueError, KeyError, TypeError):
        return None
    return audit.get("passed") if isinstance(audit, dict) else None


def _verdict(
    record: ArtifactRecord, latest: StoredAuditReport | None, keys: SignerKeys
) -> tuple[AuditState, str]:
    site = record.summary.site_id
    if latest is None:
        return "missing", (
            f"no federated audit report of site {site!r} is stored "
            f"(run `radshare-hub audit --generator {record.artifact_id[:12]}`)"
        )
    received = latest.report.received.isoformat(timespec="seconds")
    check, why = check_report(latest, keys)
    if check == "FORGED":
        return "forged", f"the latest report of site {site!r} ({received}) is forged: {why}"
    if check == "unsigned":
        return "unverified", f"the latest report of site {site!r} ({received}) is an {why}"
    weights = _weights_sha256(record)
    if latest.report.weights_sha256 is None or latest.report.weights_sha256 != weights:
        audited = (latest.report.weights_sha256 or "unnamed weights")[:16]
        return "stale", (
            f"the latest report of site {site!r} ({received}) audited {audited}…, not the "
            f"published weights {str(weights)[:16]}…"
        )
    if not latest.report.summary.passed:
        reasons = "; ".join(latest.report.summary.verdict.reasons)[:500] or "verdict failed"
        return "failed", f"the latest audit of site {site!r} ({received}) FAILED: {reasons}"
    return "passed", f"the latest audit of site {site!r} ({received}) passed"


def decide(
    registry: ArtifactRegistry, keys: SignerKeys, ref: str, *, checked_by: str = ""
) -> AuditDecision:
    """The audit decision for the generator ``ref`` (see the module docstring); never raises."""
    record = resolve_generator_id(registry, ref)
    if record is None:
        return AuditDecision(
            generator_id=ref,
            state="unknown",
            allowed=False,
            reason=f"{ref!r} is not a published generator in the registry",
            checked_by=checked_by,
        )
    generator_id, site = record.artifact_id, record.summary.site_id
    base = AuditDecision(
        generator_id=generator_id,
        site_id=site,
        state="missing",
        allowed=False,
        reason="",
        weights_sha256=_weights_sha256(record),
        prepublication_passed=_prepublication_passed(record),
        checked_by=checked_by,
    )
    withdrawal = registry.withdrawal(generator_id)
    if withdrawal is not None:
        reason = (
            f"withdrawn by {withdrawal.withdrawn_by} at "
            f"{withdrawal.withdrawn_at.isoformat(timespec='seconds')}: {withdrawal.reason}"
        )
        return base.model_copy(
            update={"state": "withdrawn", "reason": reason, "withdrawal": withdrawal}
        )
    reports = registry.audit_report_records(generator_id, site)
    latest = reports[0] if reports else None
    state, reason = _verdict(record, latest, keys)
    update: dict[str, object] = {"state": state, "allowed": state == "passed", "reason": reason}
    if latest is not None:
        update["report_site_id"] = latest.report.site_id
        update["report_received"] = latest.report.received
        update["report_sha256"] = hashlib.sha256(latest.report_json).hexdigest()
    return base.model_copy(update=update)


def decide_all(
    registry: ArtifactRegistry,
    keys: SignerKeys,
    generator_ids: Iterable[str],
    *,
    checked_by: str = "",
) -> list[AuditDecision]:
    """Decisions for many generators, each with its latest recorded override (for ``list``)."""
    decisions = []
    for generator_id in generator_ids:
        decision = decide(registry, keys, generator_id, checked_by=checked_by)
        overrides = registry.audit_overrides(decision.generator_id)
        if overrides:
            decision = decision.model_copy(update={"override": overrides[-1]})
        decisions.append(decision)
    return decisions


def clear_for_synthesis(
    registry: ArtifactRegistry,
    keys: SignerKeys,
    ref: str,
    *,
    caller: str,
    override_reason: str | None = None,
    checked_by: str = "",
) -> AuditDecision:
    """The decision if the generator may be used for synthesis; AuditPolicyError otherwise.

    With ``override_reason`` (10+ characters) an overridable refusal is let through and
    the override recorded as given by ``caller``; a withdrawn or forged one never is.

    Raises:
        AuditPolicyError: refused, naming the generator, the state and the reason.
        ArtifactError: an override reason that is too short or too long.
    """
    decision = decide(registry, keys, ref, checked_by=checked_by)
    if decision.allowed:
        return decision
    short = decision.generator_id[:12]
    if decision.state not in OVERRIDABLE_STATES:
        raise AuditPolicyError(
            f"generator {short}… may not be used for synthesis ({decision.state}): "
            f"{decision.reason}; no override can let it through"
        )
    if override_reason is None:
        raise AuditPolicyError(
            f"generator {short}… may not be used for synthesis ({decision.state}): "
            f"{decision.reason} (or pass --override-audit 'reason', which is recorded)"
        )
    override = registry.put_audit_override(
        AuditOverrideRecord(
            generator_id=decision.generator_id,
            reason=check_reason(override_reason),
            given_by=caller,
            overrode=decision.state,
        )
    )
    reason = f"{decision.reason}; overridden by {override.given_by}: {override.reason}"[:2000]
    return decision.model_copy(update={"allowed": True, "override": override, "reason": reason})
