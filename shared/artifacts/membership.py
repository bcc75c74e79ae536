"""Membership-inference audit results as they may leave a site: numbers only.

A site attacks its own published generator: can the generator's samples tell the
images it was trained on (members, the train split) from images of other patients
it never saw (non-members, the holdout split)? :class:`MembershipSummary` holds,
per attack, the ROC AUC and the true-positive rate at a low false-positive rate
(Carlini et al. 2022: an attack matters by what it finds at low FPR), each with a
percentile bootstrap CI that resamples whole patients (members', non-members' and
the calibration reference's: images of one patient are not independent, and a
few dozen holdout patients move the AUC by several hundredths on their own). AUC
0.5 and TPR = FPR are what an attack without any membership signal gets. No
score, image or row index is part of these models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MEMBERSHIP_SCHEMA_VERSION",
    "PRIMARY_METHOD",
    "AttackResult",
    "MembershipSettings",
    "MembershipSummary",
]

MEMBERSHIP_SCHEMA_VERSION = 1

#: The attack a one-line summary reports (the others are kept beside it).
PRIMARY_METHOD = "gan-leaks-calibrated"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MembershipSettings(_Strict):
    """What the attack used: samples, query sets, distance space, bootstrap."""

    num_samples: int = Field(default=5000, ge=1, le=1_000_000, description="images drawn from G")
    sample_seed: int = Field(default=0, ge=0)
    max_queries: int = Field(
        default=1000, ge=2, description="members and non-members, each at most this many"
    )
    max_reference: int = Field(default=2000, ge=1, description="reference images, at most")
    holdout_split: Literal["test", "val"] = "test"
    reference_split: Literal["val", "test"] = Field(
        default="val", description="real non-members that calibrate each query's difficulty"
    )
    distance_px: int = Field(default=32, ge=4, description="images box-averaged to this size")
    target_fpr: float = Field(default=0.01, gt=0, lt=1)
    num_resamples: int = Field(default=1000, ge=10, le=100_000, description="patient bootstrap")
    seed: int = Field(default=0, ge=0, description="query subsets and bootstrap")


class AttackResult(_Strict):
    """One attack's separation of members from non-members, with 95% bootstrap CIs."""

    roc_auc: float = Field(ge=0, le=1)
    roc_auc_ci95: tuple[float, float]
    tpr_at_target_fpr: float = Field(ge=0, le=1)
    tpr_at_target_fpr_ci95: tuple[float, float]


class MembershipSummary(_Strict):
    """A site's membership-inference audit of one generator: aggregates only."""

    schema_version: int = MEMBERSHIP_SCHEMA_VERSION
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    settings: MembershipSettings
    resolution_px: int = Field(ge=4)
    num_members: int = Field(ge=1)
    num_nonmembers: int = Field(ge=1)
    num_reference: int = Field(ge=1)
    attacks: dict[str, AttackResult] = Field(
        min_length=1, max_length=8, description="method → result (a dict: flat on the wire)"
    )
    seconds: float = Field(ge=0)

    @property
    def primary(self) -> AttackResult:
        """The :data:`PRIMARY_METHOD` result if present, else the first."""
        return self.attacks.get(PRIMARY_METHOD) or next(iter(self.attacks.values()))
