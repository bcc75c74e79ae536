"""Stand-ins for site verbs whose CLI has not landed yet: ``python -m deployment.tasks``.

Each task is a thin shell over the component's own Python function, run by the demo as a
separate process exactly like the ``radshare-site`` verb it stands in for. The demo uses
the real verb as soon as the CLI registers it (:func:`deployment.commands.has_verb`).

    python -m deployment.tasks audit --run R --cache C --out A --num-samples 40
    python -m deployment.tasks publish-labeller --export L/export --site a --key K --hub H \
        --tls-dir T --bundle-out L/bundle
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from shared.logs import configure_logging

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """Stand-ins for site verbs not yet in ``radshare-site``."""


@app.command("audit")
def audit(
    run: Path = typer.Option(..., help="finished PGGAN run (reads export/)"),
    cache: Path = typer.Option(...),
    out: Path = typer.Option(..., help="folder for summary.json (numbers only)"),
    num_samples: int = typer.Option(200),
    seed: int = typer.Option(0),
) -> None:
    """Audit a generator for memorisation at the site (``site_node.audit.memorisation``)."""
    from shared.artifacts.audit import AuditSettings, to_local_audit_summary
    from site_node.audit.memorisation import run_memorisation_audit
    from site_node.data.cache import SiteCache
    from site_node.pggan.export import load_exported_generator
    from site_node.pggan.sampling import generate_uint8

    G_ema = load_exported_generator(run)

    def sample(num_images: int, sample_seed: int):
        return generate_uint8(G_ema, num_images, seed=sample_seed)

    settings = AuditSettings(
        num_samples=num_samples, sample_seed=seed, num_permutations=999, panel_samples=0
    )
    outcome = run_memorisation_audit(sample, SiteCache(cache), settings)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "summary.json", outcome.summary.model_dump_json(indent=2))
    local = to_local_audit_summary(outcome.summary)
    _write_json(out / "local_summary.json", local.model_dump_json(indent=2))
    typer.echo(f"audit passed: {outcome.summary.passed}")


@app.command("publish-labeller")
def publish_labeller(
    export: Path = typer.Option(..., help="labeller training export (labeller.json + weights)"),
    site: str = typer.Option(..., help="this site's id"),
    key: Path = typer.Option(..., help="the site's Ed25519 private key"),
    hub: str = typer.Option("127.0.0.1:50051", help="hub address host:port"),
    tls_dir: Path = typer.Option(..., help="ca.crt and site-<id>.crt/.key"),
    bundle_out: Path = typer.Option(..., help="bundle folder (reused when complete)"),
) -> None:
    """Sign the site's labeller as a bundle and upload it (as ``radshare-site publish`` does)."""
    import shutil

    from shared.hub_client import ClientTLS, HubClient
    from shared.networks.labeller import load_labeller_export, write_labeller_bundle
    from site_node.keys import load_site_signing_key

    if not (bundle_out / "manifest.json").is_file():
        if bundle_out.exists():  # an interrupted attempt
            shutil.rmtree(bundle_out)
        labeller, card = load_labeller_export(export)
        write_labeller_bundle(bundle_out, labeller, card, site, load_site_signing_key(key))
    with HubClient(hub, ClientTLS.from_dir(tls_dir, f"site:{site}")) as client:
        result = client.publish_bundle(bundle_out)
    state = "published" if result.created else "already published"
    typer.echo(f"{state}: {result.artifact.artifact_id} ({result.artifact.size_bytes} bytes)")


def _write_json(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    """Entry point: structured logs tagged with the caller's component, then the task."""
    configure_logging(os.environ.get("RADSHARE_LOG_COMPONENT", "site"))
    app()


if __name__ == "__main__":
    main()
