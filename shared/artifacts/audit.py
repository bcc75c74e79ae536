"""Memorisation audit results as they may leave a site: numbers only, never pixels or patient ids.

:class:`AuditSummary` is what a site's audit (``site_node.audit.memorisation``)
produces and what the hub stores, wrapped in an :class:`AuditReport` per
generator and auditing site. Every field is a number, a short fixed string
(settings, rule, names) or a bounded list of numbers (histograms); models forbid
extra fields and cap list lengths, so an image or an identifier cannot ride
along. The pixel panel of the closest pairs stays at the site and is no part of
these models.

Verdict rule (:data:`VERDICT_RULE`): the audit fails if more samples than allowed
have a training image with SSIM at or above the near-copy threshold, or if either
train-versus-holdout nearest-neighbour test (SSIM, feature space) rejects
"samples are as close to holdout as to train" with a one-sided patient-level
permutation p-value below alpha / 2 (Bonferroni over the two spaces).

Why a permutation test decides and the equal-size binomial test is only
reported: all samples are compared with the same reference sets, so their
outcomes are not independent. When many samples share one nearest real image
(hubness, as for a generator of another site's images), the binomial test
flagged such a generator in most seeds on the team's data; relabelling whole
patients between train split and holdout gives the null distribution that this
dependence implies (``site_node.audit.statistics``).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.artifacts.membership import MembershipSummary
from shared.artifacts.signing import (
    Signature,
    canonical_json,
    parse_json_object,
    sign_body,
    verify_body,
)
from shared.errors import ArtifactError

if TYPE_CHECKING:  # the manifest pulls in torch; import it only where it is used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from shared.artifacts.generator import LocalAuditSummary

__all__ = [
    "AUDIT_SCHEMA_VERSION",
    "MAX_HISTOGRAM_BINS",
    "VERDICT_RULE",
    "AuditReport",
    "AuditSettings",
    "AuditSummary",
    "AuditVerdict",
    "Histogram",
    "NearestSplitTest",
    "SSIMSearchCounts",
    "audit_report",
    "parse_audit_report",
    "sign_audit_report",
    "summary_sha256",
    "to_local_audit_summary",
    "verify_audit_report",
]

AUDIT_SCHEMA_VERSION = 1
MAX_HISTOGRAM_BINS = 200
VERDICT_RULE = (
    "fail if near_copy_count > max_near_copies, or if the SSIM or the feature-space "
    "train-vs-holdout permutation p-value (patient-level, one-sided, H1: nearer train) "
    "< alpha / 2"
)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuditSettings(_Strict):
    """What was asked: sample count and seed, SSIM window, thresholds, splits."""

    num_samples: int = Field(default=500, ge=2, le=1_000_000, description="images drawn from G")
    sample_seed: int = Field(default=0, ge=0, description="seed of the generator's sampler")
    ssim_window: Literal["uniform", "gaussian"] = "uniform"
    near_copy_ssim: float = Field(
        default=0.9, gt=0, le=1, description="SSIM that counts as a near copy"
    )
    max_near_copies: int = Field(default=0, ge=0, description="near copies tolerated")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="family-wise level of the two tests")
    holdout_split: Literal["test", "val"] = "test"
    holdout_seed: int = Field(
        default=0, ge=0, description="seed of the train subset and permutations"
    )
    num_permutations: int = Field(
        default=9999, ge=99, le=1_000_000, description="patient relabellings"
    )
    reference_samples: int = Field(
        default=200,
        ge=0,
        description="holdout images compared with train as a real-vs-real baseline",
    )
    histogram_bins: int = Field(default=40, ge=1, le=MAX_HISTOGRAM_BINS)
    panel_samples: int = Field(
        default=32, ge=0, description="samples in the site-local image panel"
    )
    panel_neighbours: int = Field(
        default=3, ge=1, le=16, description="train neighbours per panel row"
    )


class Histogram(_Strict):
    """Counts over ``bin_edges`` (``len(counts) == len(bin_edges) - 1``)."""

    bin_edges: list[float] = Field(max_length=MAX_HISTOGRAM_BINS + 1)
    counts: list[int] = Field(max_length=MAX_HISTOGRAM_BINS)

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        if len(self.counts) != len(self.bin_edges) - 1:
            raise ValueError(f"{len(self.counts)} counts for {len(self.bin_edges)} bin edges")
        if any(b <= a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError("bin_edges must increase")
        return self


class NearestSplitTest(_Strict):
    """Is each sample's nearest neighbour in train or in the holdout?

    Equal sizes: against whole random training patients with as many images as
    the holdout, ``fraction_train`` (p) of the non-tied samples are nearer train;
    ``binomial_p_value`` tests p against 0.5 (one-sided, greater; assumes
    independent samples), and the 5th percentiles of both distances are given.
    Whole split: ``split_fraction_train`` of the samples are nearer the whole
    train split than the holdout, against ``split_null_fraction_train`` expected
    under random relabelling of the pooled patients; ``permutation_p_value`` is
    that one-sided permutation test (valid for samples that share neighbours;
    the verdict uses it). Distances: ``1 - SSIM`` or cosine.
    """

    space: str = Field(max_length=64, description="'ssim' or 'feature:<embedding>'")
    distance: str = Field(max_length=32)
    num_train_images: int = Field(ge=1, description="images in the train subset")
    num_holdout_images: int = Field(ge=1)
    num_train_patients: int = Field(ge=1)
    num_holdout_patients: int = Field(ge=1)
    num_samples: int = Field(ge=1)
    num_train_nearer: int = Field(ge=0)
    num_holdout_nearer: int = Field(ge=0)
    num_ties: int = Field(ge=0)
    fraction_train: float = Field(ge=0, le=1, description="p: train-nearer / non-tied samples")
    binomial_p_value: float = Field(ge=0, le=1)
    split_fraction_train: float = Field(ge=0, le=1)
    split_null_fraction_train: float = Field(ge=0, le=1)
    permutation_p_value: float = Field(gt=0, le=1)
    num_permutations: int = Field(ge=1)
    distance_p05_train: float
    distance_p05_holdout: float
    reference_distance_p05: float | None = Field(
        default=None, description="5th percentile of real holdout-to-train distances"
    )

    @model_validator(mode="after")
    def _counts(self) -> NearestSplitTest:
        total = self.num_train_nearer + self.num_holdout_nearer + self.num_ties
        if total != self.num_samples:
            raise ValueError(f"train+holdout+ties = {total} != num_samples {self.num_samples}")
        return self


class AuditVerdict(_Strict):
    """Pass or fail, the rule applied, and which checks fired."""

    passed: bool
    rule: str = Field(max_length=400)
    flags: dict[str, bool] = Field(description="near_copies, ssim_holdout, feature_holdout")
    reasons: list[str] = Field(default_factory=list, max_length=8)


class SSIMSearchCounts(_Strict):
    """What the audit's SSIM nearest-neighbour searches cost (all searches together).

    ``pairs_compared`` had their SSIM computed; ``pairs_skipped`` were proved by the
    upper bound unable to enter a top-k (``shared.metrics.fused_search``).
    """

    backend: str = Field(max_length=16, description="fused (numba CPU kernel) or torch")
    pairs_compared: int = Field(ge=0)
    pairs_skipped: int = Field(default=0, ge=0)
    seconds: float = Field(ge=0, description="wall time of the SSIM searches")


class AuditSummary(_Strict):
    """A site's memorisation audit of one generator: aggregates only."""

    schema_version: int = AUDIT_SCHEMA_VERSION
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    settings: AuditSettings
    resolution_px: int = Field(ge=8)
    num_samples: int = Field(ge=1)
    num_train: int = Field(ge=1)
    num_holdout: int = Field(ge=1)
    best_ssim_histogram: Histogram = Field(description="each sample's best SSIM against train")
    best_ssim_quantiles: dict[str, float]
    best_ssim_mean: float
    near_copy_count: int = Field(ge=0)
    reference_best_ssim_quantiles: dict[str, float] | None = Field(
        default=None, description="the same for real holdout images against train (baseline)"
    )
    ssim_test: NearestSplitTest
    feature_test: NearestSplitTest | None = None
    membership: MembershipSummary | None = Field(
        default=None,
        description="membership-inference attacks (site_node.privacy.membership)",
        exclude_if=lambda value: value is None,  # absent, not null, when not run
    )
    ssim_search: SSIMSearchCounts | None = Field(
        default=None,
        description="pairs compared and skipped, wall time (absent in older reports)",
        exclude_if=lambda value: value is None,
    )
    seconds: float = Field(ge=0)
    verdict: AuditVerdict

    @field_validator("best_ssim_quantiles", "reference_best_ssim_quantiles")
    @classmethod
    def _few_quantiles(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and len(value) > 16:
            raise ValueError(f"{len(value)} quantiles: at most 16")
        return value

    @property
    def passed(self) -> bool:
        """Whether the verdict passed."""
        return self.verdict.passed


class AuditReport(_Strict):
    """What the hub stores per generator and auditing site (readable by auditors).

    The auditing site signs it (:func:`sign_audit_report`) with its site key over the
    canonical JSON of every field but ``signature``; the hub stores the bytes as the
    site sent them, and anyone holding the consortium keyring checks them with
    :func:`verify_audit_report`, so an auditor need not trust the operator.
    ``weights_sha256`` names the generator weights the site audited (the stale-audit
    check compares it with the registry's), ``received`` is when the site made it.
    """

    schema_version: int = AUDIT_SCHEMA_VERSION
    generator_id: str = Field(min_length=1, max_length=128)
    site_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="the auditing site")
    received: datetime = Field(default_factory=lambda: datetime.now(UTC))
    summary: AuditSummary
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    signature: Signature | None = None


def audit_report(
    generator_id: str,
    site_id: str,
    summary: AuditSummary,
    *,
    weights_sha256: str | None = None,
) -> AuditReport:
    """Wrap a site's summary for the hub's store (unsigned; a site signs it before it leaves)."""
    return AuditReport(
        generator_id=generator_id,
        site_id=site_id,
        summary=summary,
        weights_sha256=weights_sha256,
    )


def sign_audit_report(report: AuditReport, private_key: Ed25519PrivateKey) -> bytes:
    """The report's signed JSON bytes: canonical body plus the site's Ed25519 ``signature``.

    These bytes are what crosses the wire and what the hub stores unchanged.
    """
    body = report.model_dump(mode="json", exclude={"signature"})
    signature = sign_body(body, private_key)
    return canonical_json({**body, "signature": signature.model_dump(mode="json")})


def verify_audit_report(
    data: bytes | str, public_key: Ed25519PublicKey, *, where: str = "audit report"
) -> AuditReport:
    """Check a signed report's bytes against the auditing site's pinned key, then parse them.

    ``public_key`` must come from the consortium keyring for ``site_id``, never from the
    report. Raises SignatureError (missing, malformed or wrong signature, other key) or
    ArtifactError (not a valid report).
    """
    raw = parse_json_object(data, where=where)
    verify_body(raw, public_key, where=where)
    return parse_audit_report(data, where=where)


def parse_audit_report(data: bytes | str, *, where: str = "audit report") -> AuditReport:
    """Validate an AuditReport's JSON; ArtifactError naming the first failing fields and values."""
    try:
        return AuditReport.model_validate_json(data)
    except ValidationError as error:
        parts = []
        for item in error.errors()[:3]:
            field = ".".join(str(p) for p in item["loc"]) or "(report)"
            value = repr(item.get("input"))[:80]
            parts.append(f"field {field!r}: {item['msg']} (value {value})")
        raise ArtifactError(f"{where}: " + "; ".join(parts)) from error


def summary_sha256(summary: AuditSummary) -> str:
    """sha256 of the summary's canonical JSON (what a manifest cites)."""
    return hashlib.sha256(summary.model_dump_json().encode()).hexdigest()


def to_local_audit_summary(summary: AuditSummary) -> LocalAuditSummary:
    """The manifest's ``privacy.audit`` entry: verdict, headline metrics, thresholds, sha256."""
    from shared.artifacts.generator import LocalAuditSummary

    metrics = {
        "num_samples": float(summary.num_samples),
        "best_ssim_max": summary.best_ssim_quantiles["max"],
        "best_ssim_p99": summary.best_ssim_quantiles["0.99"],
        "near_copy_count": float(summary.near_copy_count),
        "ssim_fraction_train": summary.ssim_test.fraction_train,
        "ssim_binomial_p_value": summary.ssim_test.binomial_p_value,
        "ssim_permutation_p_value": summary.ssim_test.permutation_p_value,
    }
    if summary.feature_test is not None:
        metrics["feature_fraction_train"] = summary.feature_test.fraction_train
        metrics["feature_binomial_p_value"] = summary.feature_test.binomial_p_value
        metrics["feature_permutation_p_value"] = summary.feature_test.permutation_p_value
    if summary.membership is not None:  # calibrated GAN-Leaks
        attack = summary.membership.primary
        metrics["membership_auc"] = attack.roc_auc
        metrics["membership_auc_ci95_high"] = attack.roc_auc_ci95[1]
        metrics["membership_tpr_at_target_fpr"] = attack.tpr_at_target_fpr
    thresholds = {
        "near_copy_ssim": summary.settings.near_copy_ssim,
        "max_near_copies": float(summary.settings.max_near_copies),
        "alpha": summary.settings.alpha,
    }
    return LocalAuditSummary(
        passed=summary.passed,
        method="ssim-nn+holdout",
        metrics=metrics,
        thresholds=thresholds,
        report_sha256=summary_sha256(summary),
        override_reason=None,
    )
