"""``radshare-hub evaluate``: federated evaluation of classifiers on every site's real test split.

Submits the hub's Flower app with ``flwr run`` (task ``evaluate``); the ServerApp sends
``evaluate.classifier`` to the sites, writes ``evaluations.json``, ``comparison.csv``,
``comparison.md`` and ``report.html`` into ``--out``. Only aggregates come back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import typer

__all__ = ["APP_DIR", "evaluate", "run_config_text"]

# The hub's Flower app as installed (hub/flower/app), whatever the current folder.
APP_DIR = Path(__file__).resolve().parents[1] / "flower" / "app"


def run_config_text(values: dict[str, object]) -> str:
    """``k="v" n=3`` (TOML values) for ``flwr run --run-config``."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


def evaluate(
    classifier: list[str] = typer.Option(..., help="TAG=BUNDLE: pooled=..., synthetic:a=..."),
    out: Path = typer.Option(..., help="folder for evaluations.json, comparison.*, report.html"),
    sites: str = typer.Option("all", help="'all' or comma-separated site ids"),
    real_baseline: bool = typer.Option(True, help="also train and evaluate (a) at each site"),
    epochs: int = typer.Option(10, help="epochs of the real-only baseline at the sites"),
    lr: float = typer.Option(1e-3, help="Adam learning rate of the real-only baseline"),
    resamples: int = typer.Option(10_000, help="bootstrap resamples at the sites"),
    rare_label: str = typer.Option("", help="Han et al. Fig. 4B: the class made rare"),
    rare_enrich_archive: Path | None = typer.Option(None, help="archive of that class's images"),
    rare_enrich_images: int = typer.Option(100, help="synthetic images added"),
    hub_public_key: Path | None = typer.Option(None, help="verify bundles with this key"),
    hub: str | None = typer.Option(
        None, help="hub host:port: register each classifier bundle there first (operator)"
    ),
    tls_dir: Path = typer.Option(Path("hub-data/tls"), help="ca.crt and identities (with --hub)"),
    identity: str = typer.Option("operator", help="certificate that registers (with --hub)"),
    keyring: Path | None = typer.Option(
        None, help="consortium keyring JSON (`keyring export`): bundles verify against 'hub'"
    ),
    app_dir: Path = typer.Option(
        APP_DIR, help="the Flower app folder (default: the installed one)"
    ),
    superlink: str = typer.Option("consortium", help="connection name in $FLWR_HOME/config.toml"),
    flwr_home: Path | None = typer.Option(None, help="FLWR_HOME (default: the environment's)"),
) -> None:
    """Evaluate classifiers on every site's real test split (only aggregates come back).

    Each site evaluates only classifiers registered at the hub (named by id and weights
    sha256, verified by the site against the consortium keyring); --hub registers the
    bundles first, as the operator. A site may refuse under its query policy: the
    refusal, with its rule, is in the report.

    Writes OUT/evaluations.json, comparison.csv, comparison.md and report.html. Example:

    \b
      radshare-hub evaluate --sites all --classifier pooled=runs/pooled/bundle \\
          --classifier synthetic:a=runs/a/bundle --keyring consortium-keyring.json \\
          --out eval-1 --superlink consortium
    """
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if hub:  # sites evaluate only registered classifiers, pulled and verified by themselves
        from shared.hub_client import ClientTLS, HubClient

        with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
            for item in classifier:
                result = client.publish_bundle(Path(item.partition("=")[2]))
                typer.echo(f"classifier {result.artifact.artifact_id[:12]} registered at {hub}")
    values: dict[str, object] = {
        "task": "evaluate",
        "out-dir": str(out),
        "sites": "" if sites == "all" else sites,
        "classifiers": ",".join(
            f"{t}={Path(p).resolve()}" for t, _, p in (c.partition("=") for c in classifier)
        ),
        "real-baseline": real_baseline,
        "epochs": epochs,
        "lr": lr,
        "num-resamples": resamples,
        "rare-label": rare_label,
        "rare-enrich-archive": str(rare_enrich_archive.resolve()) if rare_enrich_archive else "",
        "rare-enrich-images": rare_enrich_images,
        "hub-public-key": str(hub_public_key.resolve()) if hub_public_key else "",
        "keyring": str(keyring.resolve()) if keyring else "",
    }
    env = dict(os.environ, **({"FLWR_HOME": str(flwr_home)} if flwr_home else {}))
    flwr = shutil.which("flwr") or "flwr"
    command = [
        flwr,
        "run",
        str(app_dir),
        superlink,
        "--run-config",
        run_config_text(values),
        "--stream",
    ]
    subprocess.run(command, env=env, check=True)
    table = out / "comparison.md"
    typer.echo(
        table.read_text() if table.is_file() else f"no comparison in {out}: see the run's log"
    )
    typer.echo(f"report: {out / 'report.html'}")
