"""``radshare-site train``: PGGAN training on a site cache (a thin shell over ``train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

__all__ = ["train_command"]


def train_command(
    out: Path = typer.Option(
        ..., "--out", help="new run folder, e.g. runs/nih-64 (or the run to resume)"
    ),
    cache: Path | None = typer.Option(
        None, "--cache", help="site cache from `radshare-site ingest`"
    ),
    profile: str | None = typer.Option(
        None, "--profile", help="preset: tiny (CPU demo, ~2 min), cpu, gpu (the papers')"
    ),
    resolution: int | None = typer.Option(None, "--resolution", help="target px (power of two)"),
    kimg_per_phase: float | None = typer.Option(
        None, "--kimg-per-phase", help="thousands of real images per fade / stabilise phase"
    ),
    batch_sizes: str | None = typer.Option(
        None, "--batch-sizes", help="RES:SIZE pairs, e.g. 4:128,64:64 (default: Han et al.)"
    ),
    fmap_base: int | None = typer.Option(None, "--fmap-base", help="feature maps: base / 2**stage"),
    fmap_max: int | None = typer.Option(None, "--fmap-max", help="cap on feature maps per layer"),
    z_dim: int | None = typer.Option(None, "--z-dim", help="latent size"),
    seed: int | None = typer.Option(None, "--seed", help="seed of the networks and every draw"),
    tick_kimg: float | None = typer.Option(None, "--tick-kimg", help="kimg per tick/checkpoint"),
    sample_every_kimg: float | None = typer.Option(
        None, "--sample-every-kimg", help="kimg between sample grids"
    ),
    horizontal_flip: bool | None = typer.Option(
        None, "--horizontal-flip/--no-horizontal-flip", help="flip reals (off: laterality matters)"
    ),
    augment: str | None = typer.Option(
        None,
        "--augment",
        help="critic augmentation: none (default, measured: docs/benchmarks.md), ada, "
        "diffaugment (not with --dp)",
    ),
    ada_target: float | None = typer.Option(
        None, "--ada-target", help="ADA: target of the overfitting heuristic r_t (0.6)"
    ),
    ada_kimg: float | None = typer.Option(
        None, "--ada-kimg", help="ADA: kimg for p to go from 0 to 1 (tiny 5, cpu 20, else 100)"
    ),
    warm_start: Path | None = typer.Option(
        None, "--warm-start", help="base run folder or .ckpt (G and D) to fine-tune from"
    ),
    warm_start_sha256: str | None = typer.Option(
        None, "--warm-start-sha256", help="sha256 the --warm-start checkpoint file must have"
    ),
    resume: bool = typer.Option(False, "--resume", help="go on from OUT/checkpoints/last.ckpt"),
    accelerator: str | None = typer.Option(None, "--accelerator", help="auto, cpu, gpu"),
    devices: int | None = typer.Option(None, "--devices", help="number of devices (DDP if > 1)"),
    strategy: str | None = typer.Option(None, "--strategy", help="auto or ddp"),
    precision: str | None = typer.Option(
        None, "--precision", help="32-true (default) or bf16-mixed"
    ),
    progress_bar: bool = typer.Option(True, "--progress-bar/--no-progress-bar"),
    dp: bool = typer.Option(
        False, "--dp", help="DP-SGD on the critic (Opacus); turns minibatch stddev off"
    ),
    target_epsilon: float | None = typer.Option(
        None, "--target-epsilon", help="DP: ε never to exceed (σ calibrated to it)"
    ),
    noise_multiplier: float | None = typer.Option(
        None, "--noise-multiplier", help="DP: σ; with --target-epsilon, stop at the budget"
    ),
    delta: float | None = typer.Option(None, "--delta", help="DP: δ (default 1e-5; < 1/N)"),
    max_grad_norm: float | None = typer.Option(
        None, "--max-grad-norm", help="DP: per-sample clipping norm C (default 1)"
    ),
    accountant: str | None = typer.Option(None, "--accountant", help="DP: prv (default) or rdp"),
) -> None:
    """Train a PGGAN from 4×4 to --resolution on the cache's train split.

    Writes OUT/options.json, checkpoints/last.ckpt (every tick), samples/, logs/ (CSV and
    TensorBoard) and, when the schedule is complete, export/g_ema.safetensors +
    export/generator.json. Stop any time (Ctrl+C or SIGTERM saves a checkpoint); go on with
    --resume. Examples:

    \b
      radshare-site train --cache cache/nih --out runs/tiny --profile tiny
    \b
      radshare-site train --cache cache/nih --out runs/nih-256 --profile gpu --resolution 256 \\
          --precision bf16-mixed --devices 4 --strategy ddp
    \b
      radshare-site train --cache cache/nih --out runs/nih-64 --resolution 64 \\
          --kimg-per-phase 600 --batch-sizes 4:128,64:64 --seed 1
    \b
      radshare-site train --cache cache/small --out runs/small-ada --profile tiny --augment ada
    \b
      radshare-site train --cache cache/small --out runs/small-warm --profile tiny \\
          --warm-start runs/nih-public/checkpoints/last.ckpt \\
          --warm-start-sha256 4f6a3c0e9d2b7a51c8e4f3a2b1d0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2
    \b
      radshare-site train --out runs/nih-64 --resume
    \b
      radshare-site train --cache cache/nih --out runs/nih-dp --profile cpu \\
          --dp --target-epsilon 8 --delta 1e-6
    """
    from shared.errors import ConfigError
    from site_node.pggan.options import RUNTIME_FIELDS, TrainOptions
    from site_node.pggan.schedule import parse_batch_sizes
    from site_node.pggan.train import resume_options, train

    if resume:  # a resumed run takes its options from options.json, not from --config
        cache, profile, resolution = _unless_from_config_file(
            cache=cache, profile=profile, resolution=resolution
        )
    values: dict[str, Any] = {
        "resolution_px": resolution,
        "kimg_per_phase": kimg_per_phase,
        "batch_sizes": parse_batch_sizes(batch_sizes) if batch_sizes else None,
        "fmap_base": fmap_base,
        "fmap_max": fmap_max,
        "z_dim": z_dim,
        "seed": seed,
        "tick_kimg": tick_kimg,
        "sample_every_kimg": sample_every_kimg,
        "horizontal_flip": horizontal_flip,
        "augment": _augment_mode(augment),
        "ada_target": ada_target,
        "ada_kimg": ada_kimg,
        "warm_start": _warm_start(warm_start, warm_start_sha256),
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "precision": precision,
        "progress_bar": progress_bar,
    }
    values = {name: value for name, value in values.items() if value is not None}
    dp_flags: dict[str, Any] = {
        "target_epsilon": target_epsilon, "noise_multiplier": noise_multiplier, "delta": delta,
        "max_grad_norm": max_grad_norm, "accountant": accountant,
    }  # fmt: skip
    dp_flags = {name: value for name, value in dp_flags.items() if value is not None}
    if dp_flags and not dp:
        raise ConfigError(f"{sorted(dp_flags)} apply to DP training only: add --dp")
    if dp:
        from site_node.privacy.config import DPOptions

        try:
            values["dp"] = DPOptions.model_validate(dp_flags)
        except ValueError as error:  # pydantic's ValidationError names the field and value
            raise ConfigError(f"--dp: {error}") from None
        values["use_minibatch_stddev"] = False  # it mixes samples: no per-sample gradients
    if resume:
        fixed = sorted(set(values) - RUNTIME_FIELDS) + (["--cache"] if cache else [])
        if fixed or profile:
            raise ConfigError(f"--resume takes its options from {out}/options.json; drop {fixed}")
        if (out / "export" / "generator.json").is_file():
            typer.echo(f"done: {out / 'export'} (the schedule is complete; nothing to resume)")
            return
        options = resume_options(out, **values)
    else:
        if cache is None:
            raise ConfigError("--cache is required (unless --resume)")
        options = TrainOptions.from_profile(profile, cache_dir=cache, run_dir=out, **values)
        _check_cache(options)  # before the run folder exists: a refused run leaves nothing
    run_dir = train(options, resume=resume)
    export_dir = run_dir / "export"
    if (export_dir / "generator.json").is_file():
        typer.echo(f"done: {export_dir}")
    else:
        typer.echo(f"stopped; go on with: radshare-site train --out {run_dir} --resume")


def _augment_mode(value: str | None) -> str | None:
    """``--augment`` checked against the modes (one-line error naming the valid ones)."""
    from shared.errors import ConfigError
    from site_node.pggan.augment import AUGMENT_MODES

    if value is not None and value not in AUGMENT_MODES:
        raise ConfigError(f"--augment: unknown mode {value!r}; valid: {', '.join(AUGMENT_MODES)}")
    return value


def _warm_start(path: Path | None, sha256: str | None) -> Any:
    """``--warm-start`` + ``--warm-start-sha256`` as a WarmStart (both or neither)."""
    import re

    from shared.errors import ConfigError
    from site_node.pggan.warm_start import WarmStart, base_checkpoint_path

    if path is None and sha256 is None:
        return None
    if path is None or sha256 is None:
        raise ConfigError("--warm-start and --warm-start-sha256 go together (give both)")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ConfigError(f"--warm-start-sha256: expected 64 lowercase hex digits, got {sha256!r}")
    return WarmStart(checkpoint=base_checkpoint_path(path), sha256=sha256)


def _check_cache(options: Any) -> None:
    """Raise CacheError now if the cache cannot feed this run (missing, too small a side)."""
    from site_node.data.cache import SiteCache
    from site_node.pggan.reals import RealImages

    RealImages(SiteCache(options.cache_dir), options.resolution_px, split="train")


def _unless_from_config_file(**values: Any) -> tuple[Any, ...]:
    """``values``, with None for those that came from the --config file (click's default_map)."""
    import click
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    return tuple(
        None
        if ctx is not None and ctx.get_parameter_source(name) is ParameterSource.DEFAULT_MAP
        else value
        for name, value in values.items()
    )
