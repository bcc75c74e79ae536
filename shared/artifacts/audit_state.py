"""A generator's audit state at the hub, as it travels: overrides, withdrawals, decisions.

The hub decides whether a generator may be used for synthesis
(``hub.registry.audit_policy``); the decision, and the operator override that let a
generator through, travel over the wire (``AuthorizeSynthesis``, ``ListAuditStates``)
and into every archive's provenance (synthetic and pooled manifests), so a reader of
an archive sees which audit cleared its generator, or who overrode the policy and why.

States (:data:`AUDIT_STATES`):

===========  ======================================================  ==========
state        meaning                                                  override?
===========  ======================================================  ==========
passed       the latest report of the generator's own site passed,    (not needed)
             its signature verifies and it audited these weights
failed       that report failed                                       yes
missing      no federated report of the own site is stored            yes
stale        the report audited other weights (``weights_sha256``)    yes
unverified   the report is an unsigned legacy report                  yes
unknown      the id is not a generator in the registry                yes
forged       the report's signature does not verify (keyring)         never
withdrawn    the generator was withdrawn                              never
===========  ======================================================  ==========
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ArtifactError
from shared.validation import field_error

__all__ = [
    "AUDIT_STATES",
    "MIN_OVERRIDE_REASON_CHARS",
    "OVERRIDABLE_STATES",
    "AuditDecision",
    "AuditOverrideRecord",
    "AuditState",
    "WithdrawalRecord",
    "check_reason",
    "parse_decisions",
]

AuditState = Literal[
    "passed", "failed", "missing", "stale", "unverified", "unknown", "forged", "withdrawn"
]
AUDIT_STATES: tuple[str, ...] = AuditState.__args__  # type: ignore[attr-defined]
#: States an operator override lets through (never ``forged`` or ``withdrawn``).
OVERRIDABLE_STATES = frozenset({"failed", "missing", "stale", "unverified", "unknown"})
MIN_OVERRIDE_REASON_CHARS = 10
_MAX_REASON_CHARS = 500


def _now() -> datetime:
    return datetime.now(UTC)


def check_reason(reason: str, what: str = "--override-audit") -> str:
    """The stripped reason; ArtifactError unless it has 10..500 characters."""
    text = (reason or "").strip()
    if not MIN_OVERRIDE_REASON_CHARS <= len(text) <= _MAX_REASON_CHARS:
        raise ArtifactError(
            f"{what} {reason!r}: give a reason of {MIN_OVERRIDE_REASON_CHARS} to "
            f"{_MAX_REASON_CHARS} characters"
        )
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuditOverrideRecord(_Strict):
    """An operator's override of the audit policy for one generator: who, why, when."""

    generator_id: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=MIN_OVERRIDE_REASON_CHARS, max_length=_MAX_REASON_CHARS)
    given_by: str = Field(min_length=1, max_length=200, description="the caller's identity")
    given_at: datetime = Field(default_factory=_now)
    overrode: str = Field(default="", max_length=32, description="the state it let through")


class WithdrawalRecord(_Strict):
    """A withdrawn generator: never pulled for synthesis again; its archives are marked."""

    generator_id: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=MIN_OVERRIDE_REASON_CHARS, max_length=_MAX_REASON_CHARS)
    withdrawn_by: str = Field(min_length=1, max_length=200)
    withdrawn_at: datetime = Field(default_factory=_now)


class AuditDecision(_Strict):
    """Whether a generator may be used for synthesis, and why (see the module table)."""

    generator_id: str = Field(min_length=1, max_length=128)
    site_id: str | None = None
    state: AuditState
    allowed: bool
    reason: str = Field(max_length=2000)
    weights_sha256: str | None = Field(default=None, description="the registry's weights")
    report_site_id: str | None = None
    report_received: datetime | None = None
    report_sha256: str | None = Field(default=None, description="sha256 of the stored bytes")
    prepublication_passed: bool | None = Field(
        default=None, description="the site's signed pre-publication summary (manifest)"
    )
    override: AuditOverrideRecord | None = None
    withdrawal: WithdrawalRecord | None = None
    checked_at: datetime = Field(default_factory=_now)
    checked_by: str = Field(default="", max_length=300, description="which registry decided")

    @property
    def label(self) -> str:
        """``passed``, ``FAILED``, ``override(failed)``, ``WITHDRAWN`` ... for tables."""
        if self.state == "passed":
            return "passed"
        if self.allowed and self.override is not None:
            return f"override({self.state})"
        return self.state.upper()


def parse_decisions(data: bytes | str, *, where: str) -> list[AuditDecision]:
    """A JSON list of AuditDecision; ArtifactError naming ``where`` and the first bad field."""
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(list[AuditDecision]).validate_json(data)
    except ValidationError as error:
        raise ArtifactError(field_error(error, where, whole="(list)")) from None
