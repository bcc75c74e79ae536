"""``radshare-site publish``: sign the run's G_ema bundle and upload it to the hub."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["publish", "publish_labeller"]

# Options both verbs take: who signs, and where the hub is.
SITE = typer.Option(..., help="this site's id")
KEY = typer.Option(..., help="the site's Ed25519 private key (radshare-site keygen)")
HUB = typer.Option("127.0.0.1:50051", help="hub address host:port")
TLS_DIR = typer.Option(
    Path("certs"), help="folder with ca.crt and site-<id>.crt/.key (radshare-hub certs)"
)


def publish(
    run: Path = typer.Option(..., help="finished training run folder (reads only its export/)"),
    site: str = SITE,
    key: Path = KEY,
    hub: str = HUB,
    tls_dir: Path = TLS_DIR,
    weights: Path | None = typer.Option(
        None, help="G_ema safetensors to publish instead of export/g_ema.safetensors"
    ),
    override_audit: str | None = typer.Option(
        None,
        "--override-audit",
        help="publish despite a failed, stale or missing audit; the reason is signed into "
        "the manifest for the hub and auditors to see",
    ),
    bundle_out: Path | None = typer.Option(None, help="bundle folder (default <run>/bundle)"),
    bundle_only: bool = typer.Option(False, help="build and sign the bundle, do not upload"),
) -> None:
    """Publish a trained generator (G_ema only, signed) to the consortium hub.

    Refused unless the run's latest ``radshare-site audit`` passed and audited exactly
    these weights; its numbers (never pixels) go into the signed manifest. Example:

    radshare-site publish --run runs/a1 --site a --key keys/site-a.ed25519
    --hub hub.example.org:50051 --tls-dir certs
    """
    from shared.hub_client import ClientTLS, HubClient
    from site_node.keys import load_site_signing_key
    from site_node.publish import build_generator_bundle

    bundle_dir, signed = build_generator_bundle(
        run,
        site_id=site,
        signing_key=load_site_signing_key(key),
        out_dir=bundle_out,
        weights=weights,
        override_audit=override_audit,
    )
    typer.echo(f"bundle {bundle_dir}: id {signed.artifact_id}")
    if bundle_only:
        return
    with HubClient(hub, ClientTLS.from_dir(tls_dir, f"site:{site}")) as client:
        result = client.publish_bundle(bundle_dir)
    state = "published" if result.created else "already published"
    typer.echo(f"{state}: {result.artifact.artifact_id} ({result.artifact.size_bytes} bytes)")


def publish_labeller(
    export: Path = typer.Option(..., help="labeller training export (labeller.json + weights)"),
    site: str = SITE,
    key: Path = KEY,
    hub: str = HUB,
    tls_dir: Path = TLS_DIR,
    bundle_out: Path | None = typer.Option(
        None, help="bundle folder (default <export>/../bundle; reused when complete)"
    ),
) -> None:
    """Publish the site's labeller (weights, class names, thresholds, AUCs; signed) to the hub.

    The hub needs a labeller for class optimisation. Example:

    radshare-site publish-labeller --export runs/labeller/export --site a
    --key keys/site-a.ed25519 --hub hub.example.org:50051 --tls-dir certs
    """
    import shutil

    from shared.artifacts.labeller import load_labeller_export, write_labeller_bundle
    from shared.hub_client import ClientTLS, HubClient
    from site_node.keys import load_site_signing_key

    bundle_out = Path(bundle_out or Path(export).parent / "bundle")
    if not (bundle_out / "manifest.json").is_file():
        if bundle_out.exists():  # an interrupted attempt
            shutil.rmtree(bundle_out)
        labeller, card = load_labeller_export(export, trust_local_export=True)  # our own
        write_labeller_bundle(bundle_out, labeller, card, site, load_site_signing_key(key))
    typer.echo(f"bundle {bundle_out}")
    with HubClient(hub, ClientTLS.from_dir(tls_dir, f"site:{site}")) as client:
        result = client.publish_bundle(bundle_out)
    state = "published" if result.created else "already published"
    typer.echo(f"{state}: {result.artifact.artifact_id} ({result.artifact.size_bytes} bytes)")
