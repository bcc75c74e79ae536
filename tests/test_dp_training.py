"""DP-SGD PGGAN training on real site-A images: the exported ε, the budget, Poisson sampling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers_cache import build_site_cache
from opacus.accountants import create_accountant
from pydantic import ValidationError

from shared.artifacts.manifest import DPParameters
from shared.errors import ConfigError
from site_node.pggan.options import TrainOptions
from site_node.pggan.train import train
from site_node.privacy.accountant import truncate_segments
from site_node.privacy.config import DPOptions
from site_node.privacy.dp_module import DPPGGANModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DELTA = 1e-5


@pytest.fixture(scope="module")
def cache_dir(site_a: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dp-cache")
    build_site_cache(site_a, path, resolutions_px=(8, 16))
    return path


class _Keep(pl.Callback):
    """Keeps the trained module for the test to inspect."""

    module: Any = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.module = pl_module


def _options(cache_dir: Path, run_dir: Path, dp: DPOptions) -> TrainOptions:
    return TrainOptions(
        cache_dir=cache_dir, run_dir=run_dir, resolution_px=16, z_dim=16, fmap_base=128,
        fmap_max=32, use_minibatch_stddev=False, kimg_per_phase=0.12,
        batch_sizes={4: 16, 8: 16, 16: 8}, tick_kimg=0.2, sample_every_kimg=10.0,
        accelerator="cpu", progress_bar=False, dp=dp,
    )  # fmt: skip


def _opacus_epsilon(dp: dict[str, Any]) -> float:
    """Independent recomputation from the exported parameters alone."""
    accountant = create_accountant(mechanism=dp["accountant"])
    accountant.history = [
        (s["noise_multiplier"], s["sample_rate"], s["steps"]) for s in dp["segments"] if s["steps"]
    ]
    return float(accountant.get_epsilon(delta=dp["delta"]))


def _train(cache_dir: Path, run_dir: Path, dp: DPOptions) -> tuple[DPPGGANModule, dict[str, Any]]:
    keep = _Keep()
    train(_options(cache_dir, run_dir, dp), callbacks=[keep])
    exported = json.loads((run_dir / "export" / "generator.json").read_text())
    assert isinstance(keep.module, DPPGGANModule)
    return keep.module, exported["training"]


def test_target_epsilon_is_spent_and_never_exceeded(cache_dir: Path, tmp_path: Path) -> None:
    module, training = _train(
        cache_dir, tmp_path / "run", DPOptions(target_epsilon=3.0, accountant="rdp")
    )
    dp = DPParameters.model_validate(training["dp"]).model_dump(mode="json")

    assert dp["epsilon"] == pytest.approx(_opacus_epsilon(dp), rel=1e-12)
    assert 3.0 - 0.02 <= dp["epsilon"] <= 3.0  # the whole budget, not more
    live = module.accountant.get_epsilon(delta=DELTA)  # stepped by DPOptimizer's hook
    assert live == pytest.approx(dp["epsilon"], rel=1e-9)
    assert sum(s["steps"] for s in dp["segments"]) == training["steps"] == module.step
    assert training["kimg_shown"] >= training["kimg_total"]
    expected_rates = [p["batch_size"] / module.num_records for p in training["phases"]]
    assert [s["sample_rate"] for s in dp["segments"]] == pytest.approx(expected_rates)
    assert dp["max_grad_norm"] == 1.0 and dp["delta"] == DELTA and dp["target_epsilon"] == 3.0


def test_given_noise_stops_at_the_budget(cache_dir: Path, tmp_path: Path) -> None:
    dp_options = DPOptions(noise_multiplier=0.6, target_epsilon=4.0, accountant="rdp")
    module, training = _train(cache_dir, tmp_path / "run", dp_options)
    dp = training["dp"]
    planned = sum(s.steps for s in module.plan.segments)

    assert 0 < module.step < planned  # stopped early ...
    assert training["kimg_shown"] < training["kimg_total"]
    assert _opacus_epsilon(dp) == pytest.approx(dp["epsilon"], rel=1e-12)
    assert dp["epsilon"] <= 4.0  # ... within the budget ...
    one_more = truncate_segments(module.plan.segments, module.step + 1)
    one_more_dp = {**dp, "segments": [s.model_dump() for s in one_more]}
    assert _opacus_epsilon(one_more_dp) > 4.0  # ... and as late as it could
    assert (tmp_path / "run" / "export" / "g_ema.safetensors").is_file()

    # Poisson sampling: batch sizes Binomial(N, q), from the secret seed, not options.seed.
    state = module.schedule.at(0)
    q = state.batch_size / module.num_records
    sizes = []
    for step in range(400):
        module.step = step
        positions = module._draw(state)["positions"]
        assert np.unique(positions).size == positions.size
        sizes.append(positions.size)
    n = module.num_records
    assert np.mean(sizes) == pytest.approx(n * q, abs=4 * np.sqrt(n * q * (1 - q) / 400))
    assert np.var(sizes) == pytest.approx(n * q * (1 - q), rel=0.3)
    module.secret_seed += 1
    assert not np.array_equal(module._draw(state)["positions"], positions)


def test_dp_options_refuse_sample_mixing_and_several_devices(tmp_path: Path) -> None:
    dp = DPOptions(target_epsilon=1.0)
    with pytest.raises(ValidationError, match="use_minibatch_stddev=False"):
        TrainOptions(cache_dir=tmp_path, run_dir=tmp_path, dp=dp)
    with pytest.raises(ValidationError, match="devices=2"):
        TrainOptions(
            cache_dir=tmp_path, run_dir=tmp_path, dp=dp, use_minibatch_stddev=False, devices=2
        )
    with pytest.raises(ValidationError, match="target_epsilon or noise_multiplier"):
        DPOptions()


def test_a_budget_that_allows_no_step_is_refused(cache_dir: Path, tmp_path: Path) -> None:
    dp = DPOptions(noise_multiplier=0.4, target_epsilon=8.0, accountant="rdp")
    with pytest.raises(ConfigError, match="allows no step"):
        train(_options(cache_dir, tmp_path / "run", dp))


def test_cli_dp_flags(cache_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from site_node.cli import app

    common = ["train", "--cache", str(cache_dir), "--resolution", "8", "--kimg-per-phase", "0.1",
              "--batch-sizes", "4:16,8:16", "--fmap-base", "64", "--fmap-max", "16", "--z-dim", "8",
              "--accelerator", "cpu", "--no-progress-bar"]  # fmt: skip
    result = CliRunner().invoke(
        app, [*common, "--out", str(tmp_path / "dp"), "--dp", "--target-epsilon", "2",
              "--accountant", "rdp", "--max-grad-norm", "0.5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    options = TrainOptions.model_validate_json((tmp_path / "dp" / "options.json").read_text())
    assert options.dp == DPOptions(target_epsilon=2.0, accountant="rdp", max_grad_norm=0.5)
    assert options.use_minibatch_stddev is False
    exported = json.loads((tmp_path / "dp" / "export" / "generator.json").read_text())
    assert exported["training"]["dp"]["max_grad_norm"] == 0.5
    assert 2.0 - 0.02 <= exported["training"]["dp"]["epsilon"] <= 2.0

    refused = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "x"), "--delta", "1e-6"])
    assert isinstance(refused.exception, ConfigError) and "add --dp" in str(refused.exception)


class _StopAfterTicks(pl.Callback):
    """A graceful stop at the end of tick ``ticks``."""

    def __init__(self, ticks: int):
        self.ticks, self.seen = ticks, 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen += 1
        if self.seen == self.ticks:
            trainer.should_stop = True


def test_resumed_dp_run_is_bitwise_the_uninterrupted_one(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from site_node.pggan.train import resume_options

    def options(run_dir: Path) -> TrainOptions:
        return TrainOptions(
            cache_dir=cache_dir, run_dir=run_dir, resolution_px=8, z_dim=16, fmap_base=64,
            fmap_max=16, use_minibatch_stddev=False, kimg_per_phase=0.1, batch_sizes={4: 8, 8: 8},
            tick_kimg=0.04, sample_every_kimg=1.0, accelerator="cpu", progress_bar=False,
            dp=DPOptions(target_epsilon=2.0, accountant="rdp"),
        )  # fmt: skip

    with monkeypatch.context() as patch:  # the same secret seed for both fresh runs
        patch.setattr("site_node.privacy.dp_module.secrets.randbits", lambda bits: 1234)
        train(options(tmp_path / "whole"))
        train(options(tmp_path / "parts"), callbacks=[_StopAfterTicks(2)])
    assert not (tmp_path / "parts" / "export").exists()
    train(resume_options(tmp_path / "parts"), resume=True)  # the seed must come from the ckpt

    whole, parts = (
        load_file(str(tmp_path / r / "export" / "g_ema.safetensors")) for r in ("whole", "parts")
    )
    assert whole.keys() == parts.keys()
    for name in whole:
        assert torch.equal(whole[name], parts[name]), name
    dp_whole, dp_parts = (
        json.loads((tmp_path / r / "export" / "generator.json").read_text())["training"]["dp"]
        for r in ("whole", "parts")
    )
    assert dp_whole == dp_parts
