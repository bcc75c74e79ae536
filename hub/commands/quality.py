"""``radshare-hub quality``: Fréchet distances, prevalence and Han et al.'s analyses, in HTML."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["quality"]


def quality(
    out: Path = typer.Option(..., help="new report folder (report.html, results.json)"),
    real: Path | None = typer.Option(None, help="real images in NIH layout (labels.csv + images/)"),
    synthetic: Path | None = typer.Option(None, help="synthetic archive in NIH layout"),
    resolution_px: int = typer.Option(64, help="resolution every image is read at"),
    inception_weights: Path | None = typer.Option(
        None,
        help="pt_inception-2015-12-05 weights file (never downloaded); default: labeller features",
    ),
    inception_resize: str = typer.Option("pytorch-fid", help="pytorch-fid | torch-fidelity"),
    labeller: Path | None = typer.Option(
        None, help="labeller bundle, or export folder (labeller.json + .safetensors)"
    ),
    generator: Path | None = typer.Option(
        None, help="generator bundle or export folder, for Han et al.'s analyses"
    ),
    keyring: Path | None = typer.Option(
        None, help="consortium keyring JSON for bundles (default: the hub's keys at --hub-root)"
    ),
    hub_root: Path = typer.Option(Path("hub-data"), help="the hub's root (keys when no --keyring)"),
    trust_local_export: bool = typer.Option(
        False,
        "--trust-local-export",
        help="accept unsigned training exports as --labeller/--generator",
    ),
    feature_cache: Path | None = typer.Option(None, help="folder caching features per image set"),
    max_images: int | None = typer.Option(None, help="read only the first N rows of each set"),
    min_class_images: int = typer.Option(
        5, help="classes with fewer images are left out of the FD matrix"
    ),
    resamples: int = typer.Option(10_000, help="bootstrap resamples for prevalence CIs"),
    han_latents: int = typer.Option(4, help="latents optimised per class"),
    han_steps: int = typer.Option(20, help="optimisation steps per path"),
) -> None:
    """Evaluate quality and faithfulness.

    Example:

    \b
      radshare-hub quality --real site-a/ --synthetic archive/ --labeller pulled/lab \\
          --generator pulled/gen --keyring consortium-keyring.json --out q1

    """
    from hub.quality.evaluate import QualityOptions, evaluate_quality
    from hub.trust import open_keyring

    options = QualityOptions(
        out_dir=out,
        real_dir=real,
        synthetic_dir=synthetic,
        resolution_px=resolution_px,
        inception_weights=inception_weights,
        inception_resize=inception_resize,
        labeller_dir=labeller,
        generator_dir=generator,
        feature_cache=feature_cache,
        max_images=max_images,
        min_class_images=min_class_images,
        num_resamples=resamples,
        han_latents=han_latents,
        han_steps=han_steps,
        trusted=open_keyring(keyring, hub_root),
        trust_local_export=trust_local_export,
    )
    results = evaluate_quality(options)
    typer.echo(f"report: {out / 'report.html'} (features: {results.get('extractor')})")
