"""``radshare-hub audit``: a federated memorisation audit of a published generator at the sites."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from hub.commands.options import HUB

__all__ = ["audit"]

APP_DIR = Path(__file__).resolve().parents[1] / "flower" / "app"


def _run_config(values: dict[str, object]) -> str:
    """``k="v" n=3`` (TOML values) for ``flwr run --run-config``."""
    parts = []
    for key, value in values.items():
        text = f'"{value}"' if isinstance(value, str | Path) else str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def audit(
    generator: str = typer.Option(..., "--generator", help="artifact id (or 8+ hex prefix)"),
    sites: str = typer.Option("all", "--sites", help="'all' or site ids, e.g. 'a,b'"),
    out: Path = typer.Option(..., "--out", help="new folder: reports/<site>.json, report.md"),
    superlink: str = typer.Option(
        "consortium", "--superlink", help="flwr connection name in $FLWR_HOME/config.toml"
    ),
    hub: str = HUB,
    tls_dir: Path = typer.Option(Path("hub-data/tls"), "--tls-dir", help="ca.crt and identities"),
    identity: str = typer.Option("operator", "--identity", help="certificate that pulls"),
    num_samples: int = typer.Option(500, "--num-samples", help="images each site draws"),
    seed: int = typer.Option(0, "--seed", help="latent seed of the samples"),
    near_copy_ssim: float = typer.Option(0.9, "--near-copy-ssim", help="SSIM of a near copy"),
    expected_nodes: int = typer.Option(0, "--expected-nodes", help="SuperNodes to wait for"),
    timeout_s: float = typer.Option(3600.0, "--timeout-s", help="how long sites may take"),
) -> None:
    """Ask the sites to audit a registered generator (``query.audit``), write their reports.

    The message names the generator by registry id and weights sha256; each site pulls
    and verifies it itself, audits it against its own data (also another site's
    generator: cross-site leakage) and answers with numbers only, signed with its
    site key, or refuses under its query policy (shown in the report). Writes
    OUT/reports/<site>.json (the site-signed AuditReport), OUT/best_ssim_<site>.png and
    OUT/report.md, then stores each signed report unchanged at the hub (as --identity),
    where auditors read and verify them (``radshare-hub audit-reports``).

    \b
      radshare-hub audit --generator 3f9a1c07 --sites all --out audits/3f9a1c07
    """
    from hub.audit.report import (
        read_audit_reports,
        read_signed_audit_reports,
        upload_audit_reports,
    )
    from shared.artifacts.bundle import SignedManifest
    from shared.artifacts.generator import GENERATOR_FILE
    from shared.artifacts.records import ArtifactKind
    from shared.errors import ConfigError, FederationError
    from shared.hub_client import ClientTLS, HubClient

    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not empty (reports never overwrite)")
    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        reply = client.get_manifest(generator, ArtifactKind.GENERATOR)
    manifest = SignedManifest.from_json(reply.manifest_json, where=f"manifest of {generator}")
    run_config = {
        "task": "audit", "generator-id": manifest.artifact_id, "out-dir": str(out.resolve()),
        "weights-sha256": manifest.model.files[GENERATOR_FILE].sha256,
        "sites": sites, "num-samples": num_samples, "seed": seed,
        "near-copy-ssim": near_copy_ssim, "expected-nodes": expected_nodes, "timeout-s": timeout_s,
    }  # fmt: skip
    flwr = Path(sys.executable).parent / "flwr"
    argv = [str(flwr), "run", str(APP_DIR), superlink, "--run-config", _run_config(run_config)]
    if subprocess.run([*argv, "--stream"], check=False).returncode != 0:
        raise FederationError(f"flwr run failed for generator {generator} (see its log above)")
    reports = read_audit_reports(out)
    if not reports:
        raise FederationError(f"no site answered; see {out / 'report.md'}")
    for site, report in sorted(reports.items()):
        state = "passed" if report.summary.passed else "FLAGGED"
        typer.echo(f"site {site}: {state}, {report.summary.near_copy_count} near copies")
    typer.echo(f"report: {out / 'report.md'}")
    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        stored = upload_audit_reports(client, read_signed_audit_reports(out))
    for site, created in stored.items():
        typer.echo(f"site {site}: report stored at the hub" + ("" if created else " (already)"))
