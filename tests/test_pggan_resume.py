"""Stopping and resuming a PGGAN run mid-phase gives bitwise the uninterrupted run (CPU).

Every random draw of a step is a function of (seed, step) or (seed, cur_nimg), and the
checkpoint holds G, D, G_ema, both Adam states and the step counters, so a resumed run
must reproduce the uninterrupted one exactly: compared here with zero tolerance.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from helpers_cache import build_site_cache
from pytorch_lightning.callbacks import Callback
from safetensors.torch import load_file

from shared.errors import ConfigError
from site_node.data.cache import SiteCache
from site_node.pggan.options import TrainOptions
from site_node.pggan.train import resume_options, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 8 px, tiny nets; 0.2 kimg per phase at batch 8 = 25 steps = 5 ticks of 0.04 kimg.
# Phases: stabilise 4 px [0, 200), fade 8 px [200, 400), stabilise 8 px [400, 600) images.
SMALL = {
    "resolution_px": 8,
    "z_dim": 16,
    "fmap_base": 64,
    "fmap_max": 16,
    "kimg_per_phase": 0.2,
    "batch_sizes": {4: 8, 8: 8},
    "tick_kimg": 0.04,
    "sample_every_kimg": 0.2,
    "num_grid_images": 4,
    "ema_halflife_kimg": 0.1,
    "accelerator": "cpu",
    "progress_bar": False,
    "seed": 11,
}


@pytest.fixture(scope="module")
def cache(site_a: Path, tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_site_cache(site_a, tmp_path_factory.getbasetemp() / "site_a_cache")


class StopAfterTicks(Callback):
    """Ask Lightning to stop at the end of tick ``ticks`` (a graceful stop)."""

    def __init__(self, ticks: int):
        self.ticks = ticks
        self.seen = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen += 1
        if self.seen == self.ticks:
            trainer.should_stop = True


class InterruptAtStep(Callback):
    """Ctrl+C (KeyboardInterrupt) or SIGTERM after step ``step``."""

    def __init__(self, step: int, how: str):
        self.step, self.how = step, how

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        if pl_module.step == self.step:
            if self.how == "sigint":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops after this step


def _options(cache: SiteCache, run_dir: Path) -> TrainOptions:
    return TrainOptions(cache_dir=cache.path, run_dir=run_dir, **SMALL)


def _checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_same_training_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["pggan"]["cur_nimg"] == b["pggan"]["cur_nimg"] == 600
    assert a["pggan"]["step"] == b["pggan"]["step"] == 75
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name in a["state_dict"]:  # G.*, D.*, G_ema.*
        torch.testing.assert_close(a["state_dict"][name], b["state_dict"][name], rtol=0, atol=0)
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        assert opt_a["state"].keys() == opt_b["state"].keys()
        for index, state in opt_a["state"].items():
            for key in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(state[key], opt_b["state"][index][key], rtol=0, atol=0)


@pytest.fixture(scope="module")
def uninterrupted(cache: SiteCache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return train(_options(cache, tmp_path_factory.mktemp("uninterrupted") / "run"))


def test_stop_mid_phase_and_resume_is_bitwise_identical(cache, uninterrupted, tmp_path) -> None:
    run_dir = tmp_path / "run"
    train(_options(cache, run_dir), callbacks=[StopAfterTicks(7)])
    # Stopped 2 ticks into the 5-tick fade phase: 7 ticks * 40 images.
    stopped = _checkpoint(run_dir)
    assert (stopped["pggan"]["cur_nimg"], stopped["pggan"]["step"]) == (280, 35)
    assert not (run_dir / "export").exists()

    train(resume_options(run_dir), resume=True)
    _assert_same_training_state(_checkpoint(run_dir), _checkpoint(uninterrupted))
    # The CSV log goes on across the resume (logged every 10 steps = 0.08 kimg).
    sessions = [run_dir / "logs" / name / "metrics.csv" for name in ("csv", "csv-resume-1")]
    logged_kimg = pd.concat(map(pd.read_csv, sessions))["progress/kimg"].dropna()
    np.testing.assert_allclose(sorted(set(logged_kimg)), [0.08 * k for k in range(1, 8)])
    resumed_g = load_file(run_dir / "export" / "g_ema.safetensors")
    uninterrupted_g = load_file(uninterrupted / "export" / "g_ema.safetensors")
    assert resumed_g.keys() == uninterrupted_g.keys()
    for name, tensor in resumed_g.items():
        torch.testing.assert_close(tensor, uninterrupted_g[name], rtol=0, atol=0)


@pytest.mark.parametrize("how", ["sigint", "sigterm"])
def test_interrupt_between_steps_saves_and_resumes_bitwise(
    cache, uninterrupted, tmp_path, how: str
) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):  # Lightning exits after Ctrl+C, raises SIGTERMException
        train(_options(cache, run_dir), callbacks=[InterruptAtStep(33, how)])
    interrupted = _checkpoint(run_dir)  # mid-tick: 33 steps * 8 images
    assert (interrupted["pggan"]["cur_nimg"], interrupted["pggan"]["step"]) == (264, 33)
    assert interrupted["pggan"]["tick_start_nimg"] == 240

    train(resume_options(run_dir), resume=True)
    _assert_same_training_state(_checkpoint(run_dir), _checkpoint(uninterrupted))


def test_run_folders_are_never_overwritten_and_resume_checks_options(
    cache, uninterrupted, tmp_path
) -> None:
    with pytest.raises(ConfigError, match="not empty"):
        train(_options(cache, uninterrupted))
    changed = _options(cache, uninterrupted).model_copy(update={"seed": 12})
    with pytest.raises(ConfigError, match="seed"):
        train(changed, resume=True)
    with pytest.raises(ConfigError, match="may only change"):
        resume_options(uninterrupted, seed=12)


def test_run_folder_follows_the_contract(uninterrupted) -> None:
    names = {
        p.relative_to(uninterrupted).as_posix() for p in uninterrupted.rglob("*") if p.is_file()
    }
    assert {"options.json", "checkpoints/last.ckpt", "logs/csv/metrics.csv"} <= names
    assert {"export/g_ema.safetensors", "export/generator.json"} <= names
    assert any(n.startswith("logs/tensorboard/events.out.tfevents") for n in names)
    # A grid at the start and every 0.2 kimg (each phase end here).
    assert {n for n in names if n.startswith("samples/")} == {
        f"samples/fakes_{kimg}kimg.png"
        for kimg in ("00000.000", "00000.200", "00000.400", "00000.600")
    }
