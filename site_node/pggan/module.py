"""The PGGAN LightningModule: one critic and one generator step per training step (n_critic 1).

Lightning owns the loop, devices, precision and checkpoint files; this module owns the
math and the training state (``cur_nimg``, ``step``, ``tick_start_nimg``), which is all a
resumed run needs besides the weights, G_ema and the Adam moments.

Determinism: every random draw of a step (z for D and G, the penalty's eps, flips, which
real images) is a function of ``(seed, step)`` or ``(seed, cur_nimg)``; no global RNG is
used after the networks are initialised. On CPU a run stopped and resumed is bitwise the
uninterrupted run. Under DDP every rank draws the whole batch and takes its contiguous
slice; gradients are averaged with one all-reduce per network, so the update is the
full-batch one.

Growing: all levels' parameters are in the Adam optimisers from the start. Levels not yet
in use get no gradient, and Adam leaves a parameter without gradient (and its moments)
untouched, so a new level starts with fresh Adam state exactly as if it had been added at
its fade-in; the grown levels keep theirs. (Karras et al.'s TF code instead reset every
moment at each new resolution, ``reset_opt_for_new_lod``.)

Augmentation (``options.augment``, :mod:`site_node.pggan.augment`): the critic sees only
augmented images, reals and fakes alike, in both steps; the draws come from
``(seed, step, network)`` for the whole batch, and each rank keeps its slice. Under ADA
each critic step also scores its augmented batch once more without gradients for the
overfitting heuristic, and ``p`` (saved in the checkpoint) moves every four steps.

One "epoch" is one tick (``tick_kimg`` images); the train dataloader only yields the tick's
step numbers, and a tick that is resumed midway ends where the uninterrupted tick would.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.strategies import DDPStrategy
from torch.utils.data import DataLoader, Dataset

from shared.errors import TrainingError
from shared.networks.generator import Generator
from site_node.pggan.augment import (
    ADA_OPS,
    DIFFAUGMENT_OPS,
    AdaptiveP,
    augment,
    overfitting_signs,
)
from site_node.pggan.discriminator import Discriminator
from site_node.pggan.losses import critic_loss_terms, generator_loss
from site_node.pggan.options import TrainOptions
from site_node.pggan.reals import RealImages, batch_positions
from site_node.pggan.schedule import ScheduleState

__all__ = ["GradientAllReduceDDP", "PGGANModule", "augment_generator", "ema_beta", "step_generator"]

_AUGMENT_STREAM = 0xA06
ADA_INTERVAL_STEPS = 4  # Karras et al. 2020: p is adjusted every 4 minibatches


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step)`` only."""
    state = np.random.SeedSequence([seed, 0x57E9, step]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def augment_generator(seed: int, step: int, network: int) -> torch.Generator:
    """A CPU generator for one step's augmentation draws (``network`` 0: critic step, 1: G)."""
    entropy = [seed, _AUGMENT_STREAM, step, network]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def ema_beta(batch_size: int, cur_nimg: int, halflife_kimg: float, rampup: float | None) -> float:
    """Per-step EMA decay for a half-life in images (Karras et al.'s ``G_smoothing_kimg``).

    ``beta = 0.5 ** (batch_size / halflife_nimg)``; with ``rampup`` the half-life is at most
    ``rampup * cur_nimg`` (Karras et al. 2020), so short runs are not dominated by the init.
    """
    halflife_nimg = halflife_kimg * 1000
    if rampup is not None:
        halflife_nimg = min(halflife_nimg, cur_nimg * rampup)
    return 0.5 ** (batch_size / max(halflife_nimg, 1e-8))


class _TickSteps(Dataset[int]):
    """The step numbers of one tick: what the train dataloader yields (the data comes by step)."""

    def __init__(self, first_step: int, num_steps: int):
        self.first_step, self.num_steps = first_step, num_steps

    def __len__(self) -> int:
        return self.num_steps

    def __getitem__(self, index: int) -> int:
        return self.first_step + index


class GradientAllReduceDDP(DDPStrategy):
    """Lightning's DDP processes without the ``DistributedDataParallel`` wrapper.

    The module averages gradients itself (one all-reduce per network, as stylegan2-ada
    does), which keeps the gradient penalty's double backward and the two backward passes
    per step out of DDP's reducer (which expects one backward per forward).
    """

    def configure_ddp(self) -> None:
        assert self.model is not None
        for tensor in [*self.model.parameters(), *self.model.buffers()]:
            dist.broadcast(tensor.data, src=0)


class PGGANModule(pl.LightningModule):
    """G, D and G_ema with their optimisers, trained by the schedule of ``options``."""

    def __init__(self, options: TrainOptions, reals: RealImages):
        super().__init__()
        self.automatic_optimization = False
        self.options = options
        self.reals = reals
        self.schedule = options.schedule()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            self.G = Generator(options.generator_config())
            self.D = Discriminator(options.discriminator_config())
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False).eval()
        self.ada: AdaptiveP | None = None
        if options.augment == "ada":
            self.ada = AdaptiveP(options.ada_target, ADA_INTERVAL_STEPS, options.ada_kimg)
        self.warm_start_info: dict[str, Any] | None = None  # set by train() on a warm start
        self.cur_nimg = 0
        self.step = 0
        self.tick_start_nimg = 0
        self.tick_done = False
        self.in_step = False

    # ----------------------------------------------------------------- Lightning hooks

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        adam = functools.partial(
            torch.optim.Adam,
            lr=self.options.learning_rate,
            betas=self.options.adam_betas,
            eps=self.options.adam_eps,
        )
        return [adam(self.G.parameters()), adam(self.D.parameters())]

    def train_dataloader(self) -> DataLoader:
        steps = self.schedule.steps_in_tick(self.tick_start_nimg, self.tick_nimg)
        return DataLoader(_TickSteps(self.step, max(steps, 1)), batch_size=None)

    def on_train_epoch_start(self) -> None:
        self.tick_done = False

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        return -1 if self.tick_done or self.finished else None

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.in_step = True
        state = self.schedule.at(self.cur_nimg)
        draws = self._draw(state)
        reals = self._reals(state, draws["positions"], draws["flips"])
        critic_terms = self._critic_step(state, reals, draws["z_critic"], draws["eps"])
        generator_term = self._generator_step(state, draws["z_generator"])
        self._update_ema(state.batch_size)
        self.cur_nimg += state.batch_size
        self.step += 1
        self._end_tick_if_due()
        self._log_step(state, critic_terms, generator_term)
        self.in_step = False

    def on_train_epoch_end(self) -> None:
        if self.finished:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pggan"] = {
            "cur_nimg": self.cur_nimg,
            "step": self.step,
            "tick_start_nimg": self.tick_start_nimg,
            "options": self.options.model_dump_json(),
            "ada": None if self.ada is None else self.ada.state_dict(),
            "warm_start": self.warm_start_info,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("pggan")
        if saved is None:
            raise TrainingError("checkpoint has no 'pggan' state: not a radshare PGGAN checkpoint")
        differences = TrainOptions.model_validate_json(saved["options"]).differences(self.options)
        if differences:
            raise TrainingError(f"checkpoint was trained with other options: {differences}")
        self.cur_nimg = int(saved["cur_nimg"])
        self.step = int(saved["step"])
        self.tick_start_nimg = int(saved["tick_start_nimg"])
        if self.ada is not None and saved.get("ada") is not None:
            self.ada.load_state_dict(saved["ada"])
        self.warm_start_info = saved.get("warm_start")

    # ------------------------------------------------------------------- state

    @property
    def tick_nimg(self) -> int:
        return round(self.options.tick_kimg * 1000)

    @property
    def finished(self) -> bool:
        return self.cur_nimg >= self.schedule.total_nimg

    @property
    def augment_p(self) -> float:
        """Probability of each augmentation op now (0: the critic sees plain images)."""
        if self.options.augment == "ada":
            assert self.ada is not None
            return self.ada.p
        return 1.0 if self.options.augment == "diffaugment" else 0.0

    def _augment(self, images: torch.Tensor, network: int) -> torch.Tensor:
        """``images`` as the critic sees them in this step (``network`` 0: D step, 1: G step)."""
        if self.options.augment == "none":
            return images
        ops = ADA_OPS if self.options.augment == "ada" else DIFFAUGMENT_OPS
        generator = augment_generator(self.options.seed, self.step, network)
        batch_size = self.state.batch_size
        return augment(
            images, self.augment_p, generator, ops,
            batch_rows=self._rank_slice(batch_size), full_batch_size=batch_size,
        )  # fmt: skip

    @property
    def state(self) -> ScheduleState:
        """Schedule state of the next step."""
        return self.schedule.at(self.cur_nimg)

    def _end_tick_if_due(self) -> None:
        tick_end_nimg = min(self.tick_start_nimg + self.tick_nimg, self.schedule.total_nimg)
        if self.cur_nimg >= tick_end_nimg:
            self.tick_start_nimg = self.cur_nimg
            self.tick_done = True

    # ------------------------------------------------------------------- one step

    def _rank_slice(self, batch_size: int) -> slice:
        world_size, rank = self.trainer.world_size, self.trainer.global_rank
        per_rank = batch_size // world_size
        return slice(rank * per_rank, (rank + 1) * per_rank)

    def _draw(self, state: ScheduleState) -> dict[str, Any]:
        """This step's random draws for the whole batch, then this rank's slice of them."""
        generator = step_generator(self.options.seed, self.step)
        batch_size, z_dim = state.batch_size, self.options.z_dim
        z_critic = torch.randn(batch_size, z_dim, generator=generator)
        z_generator = torch.randn(batch_size, z_dim, generator=generator)
        eps = torch.rand(batch_size, 1, 1, 1, generator=generator)
        flips = torch.rand(batch_size, generator=generator) < 0.5
        positions = batch_positions(self.options.seed, self.cur_nimg, batch_size, len(self.reals))
        mine = self._rank_slice(batch_size)
        return {
            "z_critic": z_critic[mine].to(self.device),
            "z_generator": z_generator[mine].to(self.device),
            "eps": eps[mine].to(self.device),
            "flips": flips[mine] if self.options.horizontal_flip else None,
            "positions": positions[mine],
        }

    def _reals(
        self, state: ScheduleState, positions: np.ndarray, flips: torch.Tensor | None
    ) -> torch.Tensor:
        images = self.reals.batch(positions, state.res_log2, state.alpha, flips)
        return images.to(self.device, non_blocking=True)

    def _critic_step(
        self, state: ScheduleState, reals: torch.Tensor, z: torch.Tensor, eps: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        _, opt_D = self._optimizers()
        with torch.no_grad():
            fakes = self.G.synthesize(z, state.res_log2, state.alpha)
        reals, fakes = self._augment(reals, 0), self._augment(fakes, 0)
        terms = critic_loss_terms(
            self.D,
            reals,
            fakes,
            eps,
            state.res_log2,
            state.alpha,
            gp_lambda=self.options.gp_lambda,
            drift_epsilon=self.options.drift_epsilon,
        )
        opt_D.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        self._average_gradients(self.D)
        opt_D.step()
        if self.ada is not None:
            self._observe_overfitting(state, reals, fakes)
        return terms

    @torch.no_grad()
    def _observe_overfitting(
        self, state: ScheduleState, reals: torch.Tensor, fakes: torch.Tensor
    ) -> None:
        """ADA: the signs of this step's (augmented) reals, summed over ranks, to the controller."""
        assert self.ada is not None
        signs = overfitting_signs(
            self.D(reals, state.res_log2, state.alpha), self.D(fakes, state.res_log2, state.alpha)
        )
        totals = torch.stack([signs.sum(), torch.tensor(float(signs.numel()), device=signs.device)])
        if self.trainer.world_size > 1:
            dist.all_reduce(totals)
        self.ada.observe(float(totals[0]), int(totals[1]), state.batch_size)

    def _generator_step(self, state: ScheduleState, z: torch.Tensor) -> torch.Tensor:
        opt_G, _ = self._optimizers()
        fakes = self._augment(self.G.synthesize(z, state.res_log2, state.alpha), 1)
        self.D.requires_grad_(False)  # L_G needs no critic gradients
        try:
            loss = generator_loss(self.D, fakes, state.res_log2, state.alpha)
            opt_G.zero_grad(set_to_none=True)
            self.manual_backward(loss)
        finally:
            self.D.requires_grad_(True)
        self._average_gradients(self.G)
        opt_G.step()
        return loss

    def _optimizers(self) -> tuple[LightningOptimizer, LightningOptimizer]:
        opt_G, opt_D = cast(list[LightningOptimizer], self.optimizers())
        return opt_G, opt_D

    def _average_gradients(self, network: torch.nn.Module) -> None:
        """Mean of the gradients over DDP ranks (no-op on one device)."""
        if self.trainer.world_size == 1:
            return
        grads = [p.grad for p in network.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.trainer.world_size
        for grad, chunk in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            grad.copy_(chunk.view_as(grad))

    @torch.no_grad()
    def _update_ema(self, batch_size: int) -> None:
        options = self.options
        beta = ema_beta(batch_size, self.cur_nimg, options.ema_halflife_kimg, options.ema_rampup)
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    def _log_step(
        self, state: ScheduleState, critic: dict[str, torch.Tensor], generator: torch.Tensor
    ) -> None:
        metrics: dict[str, torch.Tensor | float] = {
            f"loss/D_{name}": value.detach() for name, value in critic.items()
        }
        metrics["loss/G"] = generator.detach()
        metrics["progress/kimg"] = self.cur_nimg / 1000
        metrics["progress/resolution_px"] = float(state.phase.res_px)
        metrics["progress/alpha"] = state.alpha
        metrics["progress/phase"] = float(state.phase_index)
        metrics["progress/augment_p"] = self.augment_p
        if self.ada is not None:
            metrics["progress/ada_r_t"] = self.ada.r_t
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=state.batch_size)
