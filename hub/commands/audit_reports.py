"""``radshare-hub audit-reports``: read a generator's stored memorisation audit reports."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["audit_reports"]


def audit_reports(
    generator: str = typer.Option(..., "--generator", help="artifact id (or 8+ hex prefix)"),
    site: str | None = typer.Option(None, "--site", help="only this auditing site's reports"),
    out: Path | None = typer.Option(
        None, "--out", help="new folder: report.md (and reports/<site>.json), newest per site"
    ),
    hub: str = typer.Option("127.0.0.1:50051", "--hub", help="hub address host:port"),
    tls_dir: Path = typer.Option(Path("hub-data/tls"), "--tls-dir", help="ca.crt and identities"),
    identity: str = typer.Option(
        "auditor", "--identity", help="whose certificate to use (auditor / operator)"
    ),
) -> None:
    """Fetch the audit reports the hub stores for a generator (ListAuditReports over gRPC).

    Auditors and operators may read them; sites may not. Prints one line per report,
    newest first (a re-audit adds a report, none is replaced): the verdict, near
    copies and the permutation p-values. --out writes report.md of the newest per site.

    \b
      radshare-hub audit-reports --generator 3f9a1c07 --identity auditor --tls-dir certs
    """
    from hub.audit.report import write_audit_reports
    from shared.artifacts.audit import AuditReport
    from shared.errors import ConfigError
    from shared.hub_client import ClientTLS, HubClient

    if out is not None and out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not empty (reports never overwrite)")
    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        reports = client.audit_reports(generator, site)
    for report in reports:
        s = report.summary
        feature = s.feature_test
        feature_p = "" if feature is None else f", feature p {feature.permutation_p_value:.3g}"
        typer.echo(
            f"site {report.site_id}: {'passed' if s.passed else 'FLAGGED'}, "
            f"{s.near_copy_count} near copies, SSIM p {s.ssim_test.permutation_p_value:.3g}"
            f"{feature_p}; received {report.received.isoformat(timespec='seconds')}"
        )
    typer.echo(f"{len(reports)} report(s) for generator {generator}")
    if out is not None and reports:
        newest: dict[str, AuditReport] = {}
        for report in reports:  # newest first
            newest.setdefault(report.site_id, report)
        page = write_audit_reports(out, reports[0].generator_id, newest, {})
        typer.echo(f"report: {page}")
