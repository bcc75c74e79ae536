"""Stand-in commands for site verbs whose CLI has not landed yet: ``python -m deployment.tasks``.

Each task is a thin shell over the component's own Python function, run by the demo as a
separate process exactly like the ``radshare-site`` verb it stands in for. The demo uses
the real verb as soon as ``radshare-site --help`` lists it (:func:`deployment.steps.has_verb`).

    python -m deployment.tasks train --cache C --out R --profile tiny --resolution 16
    python -m deployment.tasks train-labeller --cache C --out L --resolution 16 --epochs 1
    python -m deployment.tasks audit --run R --cache C --out A --num-samples 40
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from shared.logs import configure_logging

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@app.command("train")
def train_pggan(
    cache: Path = typer.Option(...),
    out: Path = typer.Option(...),
    profile: str = typer.Option("tiny"),
    resolution: int = typer.Option(32),
    kimg_per_phase: float | None = typer.Option(None),
    accelerator: str = typer.Option("auto"),
    seed: int = typer.Option(0),
) -> None:
    """Train a site PGGAN (``site_node.pggan.train``), resuming an unfinished run in OUT."""
    from site_node.pggan.options import TrainOptions
    from site_node.pggan.train import resume_options, train

    if (out / "export" / "generator.json").is_file():
        typer.echo(f"{out}: already finished")
        return
    if (out / "options.json").is_file():
        train(resume_options(out), resume=True)
        return
    values: dict[str, object] = {"resolution_px": resolution, "seed": seed}
    if kimg_per_phase is not None:
        values["kimg_per_phase"] = kimg_per_phase
    options = TrainOptions.from_profile(
        profile,
        cache_dir=cache,
        run_dir=out,
        accelerator=accelerator,
        progress_bar=False,
        **values,
    )
    train(options)


@app.command("train-labeller")
def train_labeller(
    cache: Path = typer.Option(...),
    out: Path = typer.Option(...),
    resolution: int = typer.Option(32),
    epochs: int = typer.Option(4),
    accelerator: str = typer.Option("auto"),
    seed: int = typer.Option(0),
) -> None:
    """Train the site's labeller (``site_node.labeller.train_labeller``)."""
    from site_node.labeller import LabellerTrainOptions
    from site_node.labeller import train_labeller as run

    if (out / "export" / "labeller.json").is_file():
        typer.echo(f"{out}: already finished")
        return
    options = LabellerTrainOptions(
        cache_dir=cache,
        out_dir=out,
        resolution_px=resolution,
        max_epochs=epochs,
        bootstrap_resamples=200,
        accelerator=accelerator,
        progress_bar=False,
        seed=seed,
    )
    result = run(options)
    typer.echo(f"labeller export: {result.export_dir}")


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
