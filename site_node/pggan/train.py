"""The PGGAN training procedure of a site: options → run folder → Lightning fit → export.

Run folder (``docs/contributing.md``)::

    <run>/options.json              resolved TrainOptions, written before any work
    <run>/checkpoints/last.ckpt     Lightning checkpoint (weights_only-loadable), every tick
    <run>/samples/fakes_*kimg.png    G_ema grids on fixed latents
    <run>/logs/csv/metrics.csv      per-step losses and progress (csv-resume-N/ after a resume);
                                    logs/tensorboard/ the same
    <run>/export/g_ema.safetensors  on completion: G_ema state dict only
    <run>/export/generator.json     on completion: generator_config, training, data (no ids)

``train(options)`` starts a run in a new folder; ``train(options, resume=True)`` (with
``options = resume_options(run_dir)``) goes on from ``last.ckpt`` to the bitwise same
result on CPU as an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from shared.errors import ConfigError, TrainingError
from shared.fileio import atomic_write_text
from site_node.data.cache import SiteCache
from site_node.pggan.callbacks import PGGANProgressBar, SampleGrids, TickCheckpoint, TickReport
from site_node.pggan.export import export_generator
from site_node.pggan.module import GradientAllReduceDDP, PGGANModule
from site_node.pggan.options import RUNTIME_FIELDS, TrainOptions
from site_node.pggan.reals import RealImages
from site_node.pggan.warm_start import check_warm_start, load_warm_start

__all__ = ["resume_options", "train", "train_tiny"]

log = logging.getLogger("radshare.site.train")

OPTIONS_NAME = "options.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def train(
    options: TrainOptions, *, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> Path:
    """Train the PGGAN of ``options`` (or resume its run); returns the run folder.

    Raises :class:`ConfigError` for a run folder that exists (fresh run) or whose options
    differ (resume), :class:`TrainingError` for a missing or foreign checkpoint, and
    :class:`~shared.errors.CacheError` for an unusable cache.
    """
    # Check a warm start's base (sha256, networks) before anything is written.
    if options.warm_start is not None and not resume:
        check_warm_start(options.warm_start, options.model_dump())

    # Prepare the run folder: options.json first, before any work.
    run_dir = _prepare_run_dir(options, resume)

    # Load the training set: the cache's train split.
    cache = SiteCache(options.cache_dir)
    reals = RealImages(cache, options.resolution_px, split="train")
    log.info("training set: %d images, target %dpx", len(reals), options.resolution_px)

    # Construct G, D, G_ema and the schedule (a DP-SGD critic when options.dp is set).
    module = PGGANModule(options, reals) if options.dp is None else _dp_module(options, reals)
    for phase in module.schedule.phases:
        log.info("phase %s", phase.as_dict())

    # Warm start: G, D and G_ema from the verified base (a resume takes them from last.ckpt).
    if options.warm_start is not None and not resume:
        module.warm_start_info = load_warm_start(module, options.warm_start, options.model_dump())
        log.info("warm start from base %s", module.warm_start_info)

    # Set up the trainer: devices, precision, loggers, checkpoints, sample grids, progress.
    trainer = _build_trainer(options, run_dir, callbacks)

    # Train, going on from checkpoints/last.ckpt when resuming.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # G_ema
        # A tick resumed midway goes on from the module's step counter, not the dataloader.
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        ckpt_path = run_dir / LAST_CHECKPOINT if resume else None
        trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)

    # Export G_ema once the schedule is complete.
    if module.finished and trainer.is_global_zero:
        export_dir = export_generator(
            run_dir, module.G_ema, training_summary(options, module), data_summary(cache)
        )
        log.info("done: %.1f kimg; exported %s", module.cur_nimg / 1000, export_dir)
    return run_dir


def train_tiny(cache_dir: Path, run_dir: Path, **overrides: Any) -> Path:
    """The demo's call: the ``tiny`` profile on CPU (32 px, 10.5 kimg; ~1 min on 2 free cores)."""
    values = {"accelerator": "cpu", **overrides}
    return train(TrainOptions.from_profile("tiny", cache_dir=cache_dir, run_dir=run_dir, **values))


def resume_options(run_dir: Path, **runtime: Any) -> TrainOptions:
    """The stored options of ``run_dir``, with runtime fields (devices, precision, ...) replaced."""
    path = Path(run_dir) / OPTIONS_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: missing; --resume needs an existing run folder")
    unknown = set(runtime) - RUNTIME_FIELDS
    if unknown:
        raise ConfigError(f"--resume may only change {sorted(RUNTIME_FIELDS)}, not {unknown}")
    stored = TrainOptions.model_validate_json(path.read_text())
    return TrainOptions.model_validate({**stored.model_dump(), **runtime})


def training_summary(options: TrainOptions, module: PGGANModule) -> dict[str, Any]:
    """``generator.json``'s ``training``: schedule, losses, optimiser, EMA; no paths."""
    return {
        "kimg_total": module.schedule.total_nimg / 1000,
        "kimg_shown": module.cur_nimg / 1000,
        "steps": module.step,
        "resolution_px": options.resolution_px,
        "phases": [phase.as_dict() for phase in module.schedule.phases],
        "seed": options.seed,
        "loss": {"name": "wgan-gp", "gp_lambda": options.gp_lambda, "n_critic": 1},
        "drift_epsilon": options.drift_epsilon,
        "optimizer": {
            "name": "adam",
            "learning_rate": options.learning_rate,
            "betas": list(options.adam_betas),
            "eps": options.adam_eps,
        },
        "ema_halflife_kimg": options.ema_halflife_kimg,
        "ema_rampup": options.ema_rampup,
        "use_minibatch_stddev": options.use_minibatch_stddev,
        "horizontal_flip": options.horizontal_flip,
        "augment": _augment_summary(options, module),
        # The base G/D pair of a warm start (its checkpoint's sha256); None: from scratch.
        "warm_start": module.warm_start_info,
        "precision": options.precision,
        "devices": options.devices,
        "profile": options.profile,
        # DP-SGD parameters, segments and ε (site_node.privacy.dp_module); None without DP.
        "dp": getattr(module, "privacy_summary", lambda: None)(),
    }


def _augment_summary(options: TrainOptions, module: PGGANModule) -> dict[str, Any]:
    """Critic augmentation: mode, and for ADA its target, speed and the final p."""
    summary: dict[str, Any] = {"mode": options.augment}
    if module.ada is not None:
        summary.update(
            ada_target=options.ada_target, ada_kimg=options.ada_kimg, final_p=module.ada.p
        )
    return summary


def _dp_module(options: TrainOptions, reals: RealImages) -> PGGANModule:
    """The DP-SGD variant of the module (imports Opacus only for DP runs)."""
    from site_node.privacy.dp_module import DPPGGANModule

    return DPPGGANModule(options, reals)


def data_summary(cache: SiteCache) -> dict[str, Any]:
    """``generator.json``'s ``data``: train-split counts from the cache manifest; no identifiers."""
    manifest = cache.manifest
    return {
        "num_train_images": int(manifest.counts_per_split.get("train", 0)),
        "counts_per_label": dict(manifest.counts_per_label.get("train", {})),
        "label_space": list(manifest.label_space),
    }


def _is_launcher_child() -> bool:
    """True in the processes Lightning's DDP launcher starts for ranks other than 0."""
    return int(os.environ.get("LOCAL_RANK", "0")) != 0 or int(os.environ.get("NODE_RANK", "0")) != 0


def _prepare_run_dir(options: TrainOptions, resume: bool) -> Path:
    run_dir = Path(options.run_dir)
    if _is_launcher_child():
        return run_dir
    if resume:
        stored = resume_options(run_dir)
        differences = stored.differences(options)
        if differences:
            raise ConfigError(f"{run_dir / OPTIONS_NAME}: resume with other options: {differences}")
        if not (run_dir / LAST_CHECKPOINT).is_file():
            raise TrainingError(f"{run_dir / LAST_CHECKPOINT}: missing; nothing to resume")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"{run_dir}: exists and is not empty; a run folder is never overwritten "
            "(choose a new --out, or --resume)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / OPTIONS_NAME, options.model_dump_json(indent=2))
    return run_dir


def _csv_version(run_dir: Path) -> str:
    """``csv`` for the first session, ``csv-resume-1``, ... after (Lightning's CSV writer
    deletes an existing ``metrics.csv``, so a resumed session writes next to it)."""
    version, resumes = "csv", 0
    while (run_dir / "logs" / version).exists():
        resumes += 1
        version = f"csv-resume-{resumes}"
    return version


def _build_trainer(
    options: TrainOptions, run_dir: Path, callbacks: Sequence[Callback]
) -> pl.Trainer:
    strategy: Any = GradientAllReduceDDP() if options.strategy == "ddp" else "auto"
    run_callbacks: list[Callback] = [
        *([PGGANProgressBar()] if options.progress_bar else []),
        TickReport(),
        SampleGrids(
            run_dir / "samples", options.sample_every_kimg, options.num_grid_images, options.seed
        ),
        *callbacks,
        TickCheckpoint(run_dir / LAST_CHECKPOINT),
    ]
    return pl.Trainer(
        accelerator=options.accelerator,
        devices=options.devices,
        strategy=strategy,
        precision=options.precision,
        max_epochs=-1,
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=options.progress_bar,
        log_every_n_steps=10,
        logger=[
            CSVLogger(run_dir, name="logs", version=_csv_version(run_dir)),
            TensorBoardLogger(run_dir, name="logs", version="tensorboard", default_hp_metric=False),
        ],
        callbacks=run_callbacks,
        default_root_dir=run_dir,
    )
