"""AuditReports for registry tests, built with the real pydantic models (no site, no images)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.artifacts.audit import (
    VERDICT_RULE,
    AuditReport,
    AuditSettings,
    AuditSummary,
    AuditVerdict,
    Histogram,
    NearestSplitTest,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def split_test(space: str, p_value: float, train_nearer: int = 9) -> NearestSplitTest:
    return NearestSplitTest(
        space=space, distance="1 - SSIM" if space == "ssim" else "cosine",
        num_train_images=20, num_holdout_images=20, num_train_patients=8,
        num_holdout_patients=8, num_samples=16, num_train_nearer=train_nearer,
        num_holdout_nearer=16 - train_nearer - 1, num_ties=1,
        fraction_train=train_nearer / 15, binomial_p_value=0.3, split_fraction_train=0.55,
        split_null_fraction_train=0.5, permutation_p_value=p_value, num_permutations=99,
        distance_p05_train=0.41, distance_p05_holdout=0.43, reference_distance_p05=0.4,
    )  # fmt: skip


def make_report(
    generator_id: str,
    site_id: str,
    *,
    hours: float = 0.0,
    near_copies: int = 0,
    ssim_p: float = 0.42,
) -> AuditReport:
    """A report of ``site_id`` on ``generator_id``, received ``hours`` after ``T0``."""
    passed = near_copies == 0 and ssim_p >= 0.025
    verdict = AuditVerdict(
        passed=passed,
        rule=VERDICT_RULE,
        flags={
            "near_copies": near_copies > 0,
            "ssim_holdout": ssim_p < 0.025,
            "feature_holdout": False,
        },
        reasons=[] if passed else ["near copies or SSIM test"],
    )
    summary = AuditSummary(
        created=T0 + timedelta(hours=hours) - timedelta(minutes=5),
        settings=AuditSettings(num_samples=16, num_permutations=99),
        resolution_px=32,
        num_samples=16,
        num_train=40,
        num_holdout=20,
        best_ssim_histogram=Histogram(bin_edges=[0.0, 0.25, 0.5, 0.75, 1.0], counts=[0, 3, 12, 1]),
        best_ssim_quantiles={"min": 0.3, "0.5": 0.55, "0.99": 0.79, "max": 0.8},
        best_ssim_mean=0.56,
        near_copy_count=near_copies,
        reference_best_ssim_quantiles={"min": 0.35, "0.5": 0.6, "0.99": 0.83, "max": 0.84},
        ssim_test=split_test("ssim", ssim_p),
        feature_test=split_test("feature:inception", 0.61, train_nearer=7),
        seconds=12.5,
        verdict=verdict,
    )
    return AuditReport(
        generator_id=generator_id,
        site_id=site_id,
        received=T0 + timedelta(hours=hours),
        summary=summary,
    )
