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

__all__ = ["evaluate", "run_config_text"]


def run_config_text(values: dict[str, object]) -> str:
    """``k="v" n=3`` (TOML values) for ``flwr run --run-config``."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


def evaluate(
    classifier: list[str] = typer.Option(..., help="TAG=BUNDLE: pooled=..., synthetic:a=..."),
    out: Path = typer.Option(..., help="folder for evaluations.json, comparison.*, report.html"),
    sites: str = typer.Option("all", help="'all' or comma-separated site ids"),
    real_baseline: bool = typer.Option(True, help="also train and evaluate (a) at each site"),
    epochs: int = typer.Option(10, help="epochs of the real-only baseline at the sites"),
    resamples: int = typer.Option(10_000, help="bootstrap resamples at the sites"),
    rare_label: str = typer.Option("", help="Han et al. Fig. 4B: the class made rare"),
    rare_enrich_archive: Path | None = typer.Option(None, help="archive of that class's images"),
    rare_enrich_images: int = typer.Option(100, help="synthetic images added"),
    hub_public_key: Path | None = typer.Option(None, help="verify bundles with this key"),
    app_dir: Path = typer.Option(Path("hub/flower/app"), help="the Flower app folder"),
    superlink: str = typer.Option("radshare", help="connection name in $FLWR_HOME/config.toml"),
    flwr_home: Path | None = typer.Option(None, help="FLWR_HOME (default: the environment's)"),
) -> None:
    """Evaluate on the sites' real test splits; example:

    radshare-hub evaluate --sites all --classifier pooled=runs/pooled/bundle
    --classifier synthetic:a=runs/a/bundle --out eval-1
    """
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    values: dict[str, object] = {
        "task": "evaluate",
        "out-dir": str(out),
        "sites": "" if sites == "all" else sites,
        "classifiers": ",".join(
            f"{t}={Path(p).resolve()}" for t, _, p in (c.partition("=") for c in classifier)
        ),
        "real-baseline": real_baseline,
        "epochs": epochs,
        "num-resamples": resamples,
        "rare-label": rare_label,
        "rare-enrich-archive": str(rare_enrich_archive.resolve()) if rare_enrich_archive else "",
        "rare-enrich-images": rare_enrich_images,
        "hub-public-key": str(hub_public_key.resolve()) if hub_public_key else "",
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
