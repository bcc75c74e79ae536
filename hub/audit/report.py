"""Audit reports at the hub: one ``AuditReport`` JSON per generator and site, and a readable page.

Layout written by :func:`write_audit_reports` (numbers only; the hub never had pixels)::

    <out>/reports/<site>.json        the site-signed AuditReport, byte for byte as received
    <out>/best_ssim_<site>.png       histogram of each sample's best SSIM against train
    <out>/report.md                  verdicts, tests and the histograms, one section per site,
                                     then the sites that refused (rule, value, limit) or failed

:func:`read_audit_reports` loads the JSON files back (validated), for a reader;
:func:`read_signed_audit_reports` returns their bytes, which is what goes to the hub.

The hub stores every report (``radshare-hub audit`` calls :func:`upload_audit_reports`
as the operator, which sends each site's signed bytes unchanged) and serves them over
gRPC (``shared/proto/radshare_hub.proto``):

* ``PutAuditReport`` (operators): one AuditReport's JSON; the hub validates it
  (INVALID_ARGUMENT naming the field), refuses a generator id it has not published
  (NOT_FOUND) and keeps earlier reports: a re-audit adds one, keyed by generator,
  site and ``received``;
* ``ListAuditReports`` (operators, auditors): a generator's reports (full id or 8+
  hex prefix, optionally one site's), newest first.

Sites may do neither (PERMISSION_DENIED). Auditors read them with
``radshare-hub audit-reports --generator ID [--site S] [--out DIR]``
(``HubClient.audit_reports``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from shared.artifacts.audit import (
    AuditReport,
    AuditSummary,
    NearestSplitTest,
    parse_audit_report,
)
from shared.fileio import atomic_open, atomic_write_bytes

if TYPE_CHECKING:
    from shared.hub_client import HubClient

__all__ = [
    "read_audit_reports",
    "read_signed_audit_reports",
    "render_markdown",
    "upload_audit_reports",
    "write_audit_reports",
]


def _histogram_png(path: Path, summary: AuditSummary, site_id: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, counts = summary.best_ssim_histogram.bin_edges, summary.best_ssim_histogram.counts
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.bar(edges[:-1], counts, width=[b - a for a, b in itertools.pairwise(edges)],
             align="edge", color="#4477aa", edgecolor="white")  # fmt: skip
    axis.axvline(summary.settings.near_copy_ssim, color="#cc3311", linestyle="--",
                 label=f"near-copy threshold {summary.settings.near_copy_ssim:g}")  # fmt: skip
    if summary.reference_best_ssim_quantiles:
        axis.axvline(summary.reference_best_ssim_quantiles["max"], color="#228833",
                     linestyle=":", label="max, real holdout vs train")  # fmt: skip
    axis.set_xlabel("best SSIM of a sample against the training split")
    axis.set_ylabel("samples")
    axis.set_title(f"site {site_id}: {summary.num_samples} samples at {summary.resolution_px} px")
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_open(path) as handle:
        figure.savefig(handle, dpi=100, format="png")
    plt.close(figure)


def _test_row(test: NearestSplitTest | None) -> str:
    if test is None:
        return "| (not run) | | | | | |"
    return (
        f"| {test.space} | {test.fraction_train:.3f} | {test.binomial_p_value:.2e} | "
        f"{test.split_fraction_train:.3f} vs {test.split_null_fraction_train:.3f} | "
        f"{test.permutation_p_value:.2e} | {test.distance_p05_train:.4f} / "
        f"{test.distance_p05_holdout:.4f} |"
    )


def _site_section(report: AuditReport) -> list[str]:
    s = report.summary
    verdict = "PASSED" if s.passed else "FAILED"
    lines = [
        f"## Site {report.site_id}: {verdict}",
        "",
        f"{s.num_samples} samples at {s.resolution_px} px against {s.num_train} training and "
        f"{s.num_holdout} holdout ({s.settings.holdout_split}) images; SSIM window "
        f"{s.settings.ssim_window}; {s.seconds:.0f} s.",
        "",
        f"* near copies (best SSIM >= {s.settings.near_copy_ssim:g}): {s.near_copy_count} "
        f"(allowed {s.settings.max_near_copies})",
        f"* best SSIM: median {s.best_ssim_quantiles['0.5']:.3f}, 99th percentile "
        f"{s.best_ssim_quantiles['0.99']:.3f}, max {s.best_ssim_quantiles['max']:.3f}",
    ]
    if s.reference_best_ssim_quantiles:
        ref = s.reference_best_ssim_quantiles
        lines.append(f"* real holdout vs train (baseline): median {ref['0.5']:.3f}, "
                     f"max {ref['max']:.3f}")  # fmt: skip
    lines += [
        *(f"* reason: {reason}" for reason in s.verdict.reasons),
        "",
        "| space | p (equal size) | binomial p-value | nearer train vs null | "
        "permutation p-value | 5th pct. distance train / holdout |",
        "|---|---:|---:|---:|---:|---:|",
        _test_row(s.ssim_test),
        _test_row(s.feature_test),
        "",
        f"![best SSIM, site {report.site_id}](best_ssim_{report.site_id}.png)",
        "",
    ]
    return lines


def render_markdown(
    generator_id: str,
    reports: Mapping[str, AuditReport],
    failures: Mapping[int, str],
    refusals: Mapping[int, str] | None = None,
) -> str:
    """The readable report: a summary line, one section per site, refusals, then failures."""
    refusals = refusals or {}
    failed = [site for site, r in reports.items() if not r.summary.passed]
    lines = [
        f"# Memorisation audit of generator {generator_id}",
        "",
        f"{len(reports)} sites answered; {len(failed)} flagged"
        + (f" ({', '.join(sorted(failed))})" if failed else "")
        + f"; {len(refusals)} refused under their query policy"
        + f"; {len(failures)} failed to answer.",
        "",
        f"Rule: {next(iter(reports.values())).summary.verdict.rule}." if reports else "",
        "",
    ]
    for site in sorted(reports):
        lines += _site_section(reports[site])
    if refusals:
        lines += ["## Sites that refused the query", ""]
        lines += [f"* node {node}: {why}" for node, why in sorted(refusals.items())]
        lines.append("")
    if failures:
        lines += ["## Sites that did not answer", ""]
        lines += [f"* node {node}: {why}" for node, why in failures.items()]
    return "\n".join(lines) + "\n"


def _report_bytes(report: AuditReport | bytes) -> tuple[bytes, AuditReport]:
    if isinstance(report, bytes):
        return report, parse_audit_report(report)
    return report.model_dump_json(indent=2).encode(), report


def write_audit_reports(
    out: Path,
    generator_id: str,
    reports: Mapping[str, AuditReport | bytes],
    failures: Mapping[int, str],
    refusals: Mapping[int, str] | None = None,
) -> Path:
    """Write each site's report, histograms and ``report.md``; returns the page's path.

    A report given as bytes (a site's signed report) is written byte for byte.
    """
    (out / "reports").mkdir(parents=True, exist_ok=True)
    parsed: dict[str, AuditReport] = {}
    for site, report in reports.items():
        data, parsed[site] = _report_bytes(report)
        atomic_write_bytes(out / "reports" / f"{site}.json", data)
        _histogram_png(out / f"best_ssim_{site}.png", parsed[site].summary, site)
    page = out / "report.md"
    atomic_write_bytes(page, render_markdown(generator_id, parsed, failures, refusals).encode())
    return page


def read_audit_reports(out: Path) -> dict[str, AuditReport]:
    """The reports written by :func:`write_audit_reports`, by site (validated)."""
    return {
        site: parse_audit_report(data, where=str(out / "reports" / f"{site}.json"))
        for site, data in read_signed_audit_reports(out).items()
    }


def read_signed_audit_reports(out: Path) -> dict[str, bytes]:
    """The report files' bytes by site, exactly as the sites signed them."""
    return {path.stem: path.read_bytes() for path in sorted((Path(out) / "reports").glob("*.json"))}


def upload_audit_reports(
    client: HubClient, reports: Mapping[str, bytes | AuditReport]
) -> dict[str, bool]:
    """Store each site's report at the hub (``PutAuditReport``, operator identity).

    Signed bytes (:func:`read_signed_audit_reports`) are sent unchanged. Returns, per
    site, whether the hub stored it now (False: this exact report was stored before,
    e.g. by an earlier, interrupted upload).
    """
    return {site: client.put_audit_report(reports[site]) for site in sorted(reports)}
