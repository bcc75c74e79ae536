"""Critic augmentation (site_node.pggan.augment): identity at p=0, gradients, no flips, ADA's rule.

The ADA controller is checked against Karras et al.'s update written out here with numpy;
the wiring is checked on a real (tiny) training run: with ``diffaugment`` every image the
critic scores (reals and fakes, critic and generator steps) carries a cutout hole (exact
0 pixels, which a uint8 real in [-1, 1] never has), and with ``none`` none does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers_cache import build_site_cache
from helpers_pggan import TINY_RUN
from pydantic import ValidationError

from shared.networks.generator import Generator, GeneratorConfig
from site_node.data.cache import SiteCache
from site_node.pggan.augment import (
    ADA_OPS,
    DIFFAUGMENT_OPS,
    AdaptiveP,
    AugmentSpec,
    augment,
    overfitting_signs,
)
from site_node.pggan.module import PGGANModule
from site_node.pggan.options import DEFAULT_AUGMENT, TrainOptions
from site_node.pggan.train import train
from site_node.privacy.config import DPOptions

SMALL: dict[str, Any] = {**TINY_RUN, "seed": 3}


def _options(**values: Any) -> TrainOptions:
    """TrainOptions from keyword values (validated as the CLI's are)."""
    return TrainOptions.model_validate(values)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("ops", [ADA_OPS, DIFFAUGMENT_OPS])
def test_identity_at_p_zero(ops: tuple[str, ...]) -> None:
    x = torch.randn(4, 1, 16, 16)
    assert augment(x, 0.0, _generator(0), ops) is x
    torch.testing.assert_close(augment(x.clone(), 0.0, _generator(0), ops), x, rtol=0, atol=0)


def test_p_one_changes_every_image() -> None:
    x = torch.randn(6, 1, 16, 16)
    y = augment(x, 1.0, _generator(1), ADA_OPS)
    assert all(not torch.allclose(y[i], x[i]) for i in range(len(x)))


def test_a_rank_slice_is_augmented_as_in_the_full_batch() -> None:
    """DDP: rows 4..8 of a batch of 8 get exactly the draws they get in the whole batch."""
    x = torch.randn(8, 1, 16, 16)
    whole = augment(x, 0.6, _generator(9), ADA_OPS)
    part = augment(x[4:], 0.6, _generator(9), ADA_OPS, batch_rows=slice(4, 8), full_batch_size=8)
    torch.testing.assert_close(part, whole[4:], rtol=0, atol=0)
    assert not torch.equal(augment(x[4:], 0.6, _generator(9), ADA_OPS), whole[4:])


def test_translation_moves_by_whole_pixels() -> None:
    """Translate-only output is the input shifted by an integer (dy, dx) in the interior."""
    x = torch.rand(8, 1, 16, 16)
    spec = AugmentSpec(max_translate_frac=0.25)  # up to 4 px at 16 px
    y = augment(x, 1.0, _generator(2), ("translate",), spec)
    shifts = []
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if torch.allclose(
                y[i, 0, 4:12, 4:12], x[i, 0, 4 - dy : 12 - dy, 4 - dx : 12 - dx], atol=1e-5
            )
        ]
        assert len(found) == 1, f"image {i}: no single integer shift reproduces it ({found})"
        shifts.append(found[0])
    assert any(shift != (0, 0) for shift in shifts)


def test_gradients_are_exact_and_reach_the_generator() -> None:
    """augment is affine in its input: autograd matches finite differences; G gets gradients."""

    def fixed_draws(images: torch.Tensor) -> torch.Tensor:
        return augment(images, 0.7, _generator(5), ADA_OPS)

    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fixed_draws, (x,), eps=1e-6, atol=1e-6)

    torch.manual_seed(0)
    G = Generator(
        GeneratorConfig.model_validate(
            {"resolution_px": 8, "z_dim": 16, "fmap_base": 64, "fmap_max": 16}
        )
    )
    fakes = G.synthesize(torch.randn(4, 16), 3, 1.0)
    fakes.retain_grad()
    weights = torch.randn(1, 1, 8, 8, generator=_generator(6))
    (augment(fakes, 1.0, _generator(7), ADA_OPS) * weights).sum().backward()
    assert fakes.grad is not None and bool((fakes.grad.abs().sum(dim=(1, 2, 3)) > 0).all())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters()
               if p.requires_grad and p.grad is not None)  # fmt: skip
    assert sum(float(p.grad.abs().sum()) for p in G.parameters() if p.grad is not None) > 0


def _left_minus_right(images: torch.Tensor) -> torch.Tensor:
    width = images.shape[-1]
    return images[..., : width // 2].sum(dim=(1, 2, 3)) - images[..., width // 2 :].sum(
        dim=(1, 2, 3)
    )


def test_no_horizontal_flip() -> None:
    """A film bright on the left stays brighter on the left under every draw (a flip would swap)."""
    image = torch.full((1, 1, 32, 32), -1.0)
    image[..., :14] = 1.0  # the "heart side" mass, off centre
    batch = image.repeat(256, 1, 1, 1)
    assert bool((_left_minus_right(torch.flip(batch, dims=[-1])) < 0).all())  # the check can fail
    for seed in range(4):
        out = augment(batch, 1.0, _generator(seed), ADA_OPS)
        assert bool((_left_minus_right(out) > 0).all()), f"seed {seed}: left/right mass swapped"


def test_overfitting_signs_use_the_fake_mean() -> None:
    real = torch.tensor([3.0, 0.5, -2.0, 1.0])
    fake = torch.tensor([0.0, 2.0])  # mean 1.0
    torch.testing.assert_close(overfitting_signs(real, fake), torch.tensor([1.0, -1.0, -1.0, 0.0]))


def _reference_p(signs_per_step: list[np.ndarray], batch: int, interval: int, speed_kimg: float,
                 target: float, p_max: float) -> list[float]:  # fmt: skip
    """Karras et al. 2020's update, written independently: p after every step."""
    p, acc, history = 0.0, [], []
    for step, signs in enumerate(signs_per_step, start=1):
        acc.append(signs)
        if step % interval == 0:
            r_t = np.concatenate(acc).mean()
            p += np.sign(r_t - target) * batch * interval / (speed_kimg * 1000)
            p = float(np.clip(p, 0.0, p_max))
            acc = []
        history.append(p)
    return history


def test_ada_p_rises_when_overfitting_and_falls_otherwise() -> None:
    rng = np.random.default_rng(0)
    batch, interval, speed = 16, 4, 1.0
    # 60 steps of an overfitting critic (r_t ~ 0.9), then 60 of a confused one (r_t ~ 0.1).
    signs = [np.where(rng.random(batch) < 0.95, 1.0, -1.0) for _ in range(60)]
    signs += [np.where(rng.random(batch) < 0.55, 1.0, -1.0) for _ in range(60)]
    controller = AdaptiveP(target=0.6, interval_steps=interval, speed_kimg=speed, p_max=0.8)
    observed = []
    for step_signs in signs:
        controller.observe(float(step_signs.sum()), len(step_signs), batch)
        observed.append(controller.p)
    expected = _reference_p(signs, batch, interval, speed, 0.6, 0.8)
    np.testing.assert_allclose(observed, expected, rtol=0, atol=1e-12)
    assert observed[59] > 0.5 and observed[-1] < observed[59]
    assert max(observed) <= 0.8


def test_ada_state_round_trips() -> None:
    a = AdaptiveP(speed_kimg=1.0)
    for _ in range(6):
        a.observe(10.0, 16, 16)
    b = AdaptiveP(speed_kimg=1.0)
    b.load_state_dict(a.state_dict())
    for controller in (a, b):
        controller.observe(-16.0, 16, 16)
        controller.observe(-16.0, 16, 16)
    assert (a.p, a.r_t) == (b.p, b.r_t)


def test_dp_refuses_augmentation_and_defaults_to_none(tmp_path: Path) -> None:
    dp = DPOptions.model_validate({"noise_multiplier": 1.0})
    common = {"cache_dir": tmp_path, "run_dir": tmp_path / "run", "use_minibatch_stddev": False}
    assert _options(**common, dp=dp).augment == "none"
    with pytest.raises(ValidationError, match="dp needs augment='none', got 'ada'"):
        _options(**common, dp=dp, augment="ada")


def test_version_1_options_resume_without_augmentation(tmp_path: Path) -> None:
    old = {"schema_version": 1, "cache_dir": str(tmp_path), "run_dir": str(tmp_path / "r")}
    assert TrainOptions.model_validate(old).augment == "none"
    new = {**old, "schema_version": 2, "augment": "ada"}
    assert TrainOptions.model_validate(new).augment == "ada"
    assert _options(cache_dir=tmp_path, run_dir=tmp_path / "r").augment == DEFAULT_AUGMENT


@pytest.fixture(scope="module")
def cache(site_a: Path, tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_site_cache(site_a, tmp_path_factory.mktemp("aug") / "cache", resolutions_px=(8,))


class _CriticInputs(pl.Callback):
    """Every tensor the critic is called with, in call order; the logged p of every step."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.logged_p: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.logged_p.append(float(trainer.callback_metrics["progress/augment_p"]))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, PGGANModule)
        pl_module.D.register_forward_pre_hook(
            lambda _module, args: self.inputs.append(args[0].detach().clone())
        )


@pytest.mark.parametrize("mode", ["diffaugment", "none"])
def test_critic_sees_augmented_reals_and_fakes(cache: SiteCache, tmp_path: Path, mode: str) -> None:
    """Calls per step: real, fake, penalty mix (critic step), fake (G step); 6 steps
    (4 px: 2, fade to 8 px: 2, 8 px: 2)."""
    recorder = _CriticInputs()
    options = _options(cache_dir=cache.path, run_dir=tmp_path / "run", augment=mode, **SMALL)
    train(options, callbacks=[recorder])
    steps = [recorder.inputs[i : i + 4] for i in range(0, len(recorder.inputs), 4)]
    assert len(steps) == 6 and all(len(calls) == 4 for calls in steps)
    for step, (real, fake, _mix, generator_fake) in enumerate(steps):
        for images in (real, fake, generator_fake):
            holes = (images == 0).flatten(1).any(dim=1)
            if mode == "diffaugment":
                assert bool(holes.all()), f"step {step}: an image without a cutout hole"
            elif step >= 4:  # 8 px, alpha 1: reals straight from uint8 (never exactly 0)
                assert not bool(holes.any()), f"step {step}: a hole without augmentation"
    assert set(recorder.logged_p) == ({1.0} if mode == "diffaugment" else {0.0})
    assert len(recorder.logged_p) == 6
