"""``radshare-hub audit-reports``: read a generator's stored memorisation audit reports."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.commands.options import HUB

__all__ = ["audit_reports"]


def audit_reports(
    generator: str = typer.Option(..., "--generator", help="artifact id (or 8+ hex prefix)"),
    site: str | None = typer.Option(None, "--site", help="only this auditing site's reports"),
    out: Path | None = typer.Option(
        None, "--out", help="new folder: report.md (and reports/<site>.json), newest per site"
    ),
    hub: str = HUB,
    tls_dir: Path = typer.Option(Path("hub-data/tls"), "--tls-dir", help="ca.crt and identities"),
    identity: str = typer.Option(
        "auditor", "--identity", help="whose certificate to use (auditor / operator)"
    ),
    keyring: Path | None = typer.Option(
        None, "--keyring", help="consortium keyring file (radshare-hub keyring export)"
    ),
    site_keys: Path | None = typer.Option(
        None, "--site-keys", help="or the hub's site-key folder (<site>.pub), at the hub"
    ),
) -> None:
    """Fetch the audit reports the hub stores for a generator (ListAuditReports over gRPC).

    Auditors and operators may read them; sites may not. Prints one line per report,
    newest first (a re-audit adds a report, none is replaced): its signature check, the
    verdict, near copies and the permutation p-values. With --keyring (or --site-keys)
    every report's bytes, as the hub stores them, are checked against the key of the
    site that signed them: ``verified``, ``FORGED`` (exit code 1) or ``unsigned`` (a
    legacy report, which never counts as a pass), so an auditor trusts the sites, not
    the operator. --out writes report.md of the newest per site.

    \b
      radshare-hub audit-reports --generator 3f9a1c07 --identity auditor --tls-dir certs \\
          --keyring consortium-keyring.json
    """
    from hub.audit.report import write_audit_reports
    from hub.registry.base import StoredAuditReport
    from shared.artifacts.audit import AuditReport, parse_audit_report
    from shared.errors import ConfigError
    from shared.hub_client import ClientTLS, HubClient

    if out is not None and out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not empty (reports never overwrite)")
    keys = _keys(keyring, site_keys)
    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        stored = client.audit_report_bytes(generator, site)
    reports, forged = [], 0
    for i, data in enumerate(stored):
        report = parse_audit_report(data, where=f"ListAuditReports report_json[{i}]")
        check, why = _check(StoredAuditReport(report, data, ""), keys)
        forged += check == "FORGED"
        reports.append(report)
        s = report.summary
        feature = s.feature_test
        feature_p = "" if feature is None else f", feature p {feature.permutation_p_value:.3g}"
        typer.echo(
            f"site {report.site_id}: {'passed' if s.passed else 'FLAGGED'}, "
            f"{s.near_copy_count} near copies, SSIM p {s.ssim_test.permutation_p_value:.3g}"
            f"{feature_p}; received {report.received.isoformat(timespec='seconds')}; "
            f"signature {check}" + (f" ({why})" if why else "")
        )
    typer.echo(f"{len(reports)} report(s) for generator {generator}")
    if keys is None:
        typer.echo("signatures not checked: pass --keyring FILE (or --site-keys DIR at the hub)")
    if out is not None and reports:
        newest: dict[str, AuditReport] = {}
        for report in reports:  # newest first
            newest.setdefault(report.site_id, report)
        page = write_audit_reports(out, reports[0].generator_id, newest, {})
        typer.echo(f"report: {page}")
    if forged:
        typer.secho(f"{forged} FORGED report(s): signatures do not verify", err=True, fg="red")
        raise typer.Exit(1)


def _keys(keyring: Path | None, site_keys: Path | None):  # type: ignore[no-untyped-def]
    """The keys to check signatures with: a consortium keyring file, or the hub's folder."""
    from hub.registry.keyring import DirectoryKeyring
    from shared.artifacts.keyring import ConsortiumKeyring
    from shared.errors import ConfigError

    if keyring is not None and site_keys is not None:
        raise ConfigError("--keyring and --site-keys: give one of them")
    if keyring is not None:
        return ConsortiumKeyring.load(keyring)
    if site_keys is not None:
        if not site_keys.is_dir():
            raise ConfigError(f"--site-keys {site_keys}: not a folder")
        return DirectoryKeyring(site_keys)
    return None


def _check(stored, keys) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """verified / FORGED / unsigned, or ``not checked`` without a keyring."""
    from hub.registry.audit_policy import check_report

    if keys is None:
        return "not checked", ""
    return check_report(stored, keys)
