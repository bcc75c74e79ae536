"""The PGGAN LightningModule with a differentially private critic (DP-SGD, Abadi et al. 2016).

What changes against :class:`~site_node.pggan.module.PGGANModule`:

* **Sampling.** Each critic step draws a fresh Poisson batch: every training image is in
  it independently with probability ``q = batch_size / N`` (the phase's batch size is
  the expected size). This is what the accountant assumes.
* **Critic step.** Per-sample gradients of the whole critic loss, penalty included
  (:mod:`site_node.privacy.dp_critic`), clipped to C and noised with ``N(0, σ²C²)`` by
  Opacus's ``DPOptimizer``, which then steps Adam. Each step is accounted (PRV or RDP).
* **Budget.** σ is calibrated so that the planned schedule spends at most the target ε;
  with σ given instead, training stops before the step that would exceed the target.
* **Untouched.** The generator step and G_ema read only the critic's (private) outputs:
  post-processing, no further privacy cost.

Secrecy: which images a step sees and the noise it adds come from a secret seed drawn
from the OS at the start of a run and kept only in the site's checkpoint (the run's
``seed`` is published in the manifest's training details; subsampling amplification
and the Gaussian mechanism both need randomness the adversary cannot replay). The
latents and the penalty's interpolation come from the public per-step generator, as in
non-DP training. On CPU a resumed run is still bitwise the uninterrupted one.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from shared.artifacts.manifest import DPParameters, DPSegment
from shared.errors import ConfigError, TrainingError
from site_node.pggan.module import PGGANModule, _TickSteps
from site_node.pggan.options import TrainOptions
from site_node.pggan.reals import RealImages
from site_node.pggan.schedule import ProgressSchedule, ScheduleState
from site_node.privacy.accountant import (
    epsilon_spent,
    make_accountant,
    noise_multiplier_for_budget,
    planned_segments,
    steps_within_budget,
    truncate_segments,
)
from site_node.privacy.config import DPOptions
from site_node.privacy.dp_critic import (
    active_parameter_names,
    make_dp_optimizer,
    only_trainable,
    per_sample_critic_grads,
    per_sample_norms,
    write_grad_samples,
)

__all__ = ["DPPGGANModule", "PrivacyPlan", "plan_privacy", "privacy_parameters", "secret_generator"]

log = logging.getLogger("radshare.site.privacy")

_SAMPLING_STREAM, _NOISE_STREAM = 0x5A3F, 0xD15E


@dataclass(frozen=True)
class PrivacyPlan:
    """σ, the per-phase segments of the whole schedule, and the steps the budget allows."""

    noise_multiplier: float
    segments: list[DPSegment]
    max_steps: int


def plan_privacy(dp: DPOptions, schedule: ProgressSchedule, num_records: int) -> PrivacyPlan:
    """Calibrate σ to the target ε over the whole schedule, or bound the steps for a given σ."""
    if dp.noise_multiplier is None:
        assert dp.target_epsilon is not None  # DPOptions requires one of the two
        rates = [(s.sample_rate, s.steps) for s in planned_segments(schedule, num_records, 1.0)]
        sigma = noise_multiplier_for_budget(dp.target_epsilon, dp.delta, rates, dp.accountant)
        segments = planned_segments(schedule, num_records, sigma)
        max_steps = sum(s.steps for s in segments)  # ε(all steps) <= target by calibration
    else:
        sigma = dp.noise_multiplier
        segments = planned_segments(schedule, num_records, sigma)
        max_steps = sum(s.steps for s in segments)
        if dp.target_epsilon is not None:
            max_steps = steps_within_budget(segments, dp.target_epsilon, dp.delta, dp.accountant)
            if max_steps == 0:
                raise ConfigError(
                    f"dp: target_epsilon={dp.target_epsilon} allows no step at noise_multiplier="
                    f"{sigma}; raise the noise or the budget"
                )
    if dp.delta >= 1.0 / num_records:
        log.warning("delta=%g is not below 1/N=%g: a weak guarantee", dp.delta, 1.0 / num_records)
    return PrivacyPlan(sigma, segments, max_steps)


def privacy_parameters(dp: DPOptions, plan: PrivacyPlan, steps: int) -> DPParameters:
    """What the manifest states after ``steps`` DP steps: ε of the segments actually taken."""
    segments = truncate_segments(plan.segments, steps)
    return DPParameters(
        epsilon=epsilon_spent(segments, dp.delta, dp.accountant),
        delta=dp.delta,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        accountant=dp.accountant,
        target_epsilon=dp.target_epsilon,
        segments=tuple(segments),
    )


def secret_generator(
    secret_seed: int, step: int, stream: int, device: Any = "cpu"
) -> torch.Generator:
    """A generator for one step's secret draws (``stream``: sampling or noise)."""
    state = np.random.SeedSequence([secret_seed, stream, step]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 31 ^ int(state[1]))


class DPPGGANModule(PGGANModule):
    """PGGAN with a DP-SGD critic; see the module docstring. ``options.dp`` must be set."""

    def __init__(self, options: TrainOptions, reals: RealImages, *, secret_seed: int | None = None):
        if options.dp is None:
            raise ConfigError("DPPGGANModule needs options.dp (DP-SGD settings)")
        super().__init__(options, reals)
        if self.D.cfg.use_minibatch_stddev:
            raise ConfigError("dp needs use_minibatch_stddev=False (it mixes samples)")
        self.dp: DPOptions = options.dp
        self.num_records = len(reals)
        self.plan = plan_privacy(self.dp, self.schedule, self.num_records)
        self.secret_seed = secrets.randbits(62) if secret_seed is None else secret_seed
        self.accountant = make_accountant(self.dp.accountant)
        self.epsilon_so_far = 0.0
        self.sample_rate = 0.0
        self.last_dp_stats: dict[str, float] = {}
        self._active_names: dict[tuple[int, bool], tuple[str, ...]] = {}
        log.info(
            "DP-SGD critic: sigma=%.4f C=%g delta=%g accountant=%s N=%d, %d of %d planned steps",
            self.plan.noise_multiplier, self.dp.max_grad_norm, self.dp.delta, self.dp.accountant,
            self.num_records, self.plan.max_steps, sum(s.steps for s in self.plan.segments),
        )  # fmt: skip

    # ----------------------------------------------------------------- Lightning hooks

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        opt_G, opt_D = super().configure_optimizers()
        self.dp_optimizer = make_dp_optimizer(
            opt_D,
            noise_multiplier=self.plan.noise_multiplier,
            max_grad_norm=self.dp.max_grad_norm,
            expected_batch_size=self.schedule.phases[0].batch_size,
        )
        self.dp_optimizer.attach_step_hook(self._account_step)
        return [opt_G, self.dp_optimizer]

    def train_dataloader(self) -> DataLoader:
        """The tick's remaining step numbers, ending where the budget does (none skipped:
        a batch skipped by ``on_train_batch_start`` leaves Lightning without a batch size
        for the tick report's epoch-end log). Counted from ``cur_nimg``, so a tick resumed
        midway yields only its remaining steps."""
        tick_end_nimg = min(self.tick_start_nimg + self.tick_nimg, self.schedule.total_nimg)
        steps = self.schedule.steps_in_tick(self.cur_nimg, tick_end_nimg - self.cur_nimg)
        steps = min(steps, self.plan.max_steps - self.step)
        return DataLoader(_TickSteps(self.step, max(steps, 1)), batch_size=None)

    def on_train_epoch_end(self) -> None:
        self.epsilon_so_far = self._live_epsilon()
        if self.budget_spent and not super().finished:
            log.info(
                "privacy budget spent after %d steps: stopping (epsilon %.3f)",
                self.step,
                self.epsilon_so_far,
            )
        super().on_train_epoch_end()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dp"] = {
            "secret_seed": self.secret_seed,  # site-only: the checkpoint never leaves the site
            "noise_multiplier": self.plan.noise_multiplier,
            "accountant": dict(self.accountant.state_dict()),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("dp")
        if saved is None:
            raise TrainingError("checkpoint has no 'dp' state: it was not trained with DP")
        if saved["noise_multiplier"] != self.plan.noise_multiplier:
            raise TrainingError(
                f"checkpoint noise_multiplier {saved['noise_multiplier']} != planned "
                f"{self.plan.noise_multiplier}: the training set or schedule changed"
            )
        self.secret_seed = int(saved["secret_seed"])
        self.accountant.load_state_dict(saved["accountant"])
        self.epsilon_so_far = self._live_epsilon()

    # ------------------------------------------------------------------- state

    @property
    def budget_spent(self) -> bool:
        """True once the steps the privacy budget allows are taken."""
        return self.step >= self.plan.max_steps

    @property
    def finished(self) -> bool:
        return super().finished or self.budget_spent

    def privacy_summary(self) -> dict[str, Any]:
        """The manifest's ``privacy.dp`` (JSON): σ, C, δ, accountant, segments taken and their ε."""
        return privacy_parameters(self.dp, self.plan, self.step).model_dump(mode="json")

    def _live_epsilon(self) -> float:
        return (
            float(self.accountant.get_epsilon(delta=self.dp.delta))
            if self.accountant.history
            else 0.0
        )

    def _account_step(self, optimizer: Any) -> None:
        """DPOptimizer's step hook: one Poisson-subsampled Gaussian step at this phase's q."""
        self.accountant.step(
            noise_multiplier=optimizer.noise_multiplier, sample_rate=self.sample_rate
        )

    # ------------------------------------------------------------------- one step

    def _draw(self, state: ScheduleState) -> dict[str, Any]:
        """The public draws for the generator step; a secret Poisson batch for the critic."""
        draws = super()._draw(state)
        generator = secret_generator(self.secret_seed, self.step, _SAMPLING_STREAM)
        q = state.batch_size / self.num_records
        positions = torch.nonzero(torch.rand(self.num_records, generator=generator) < q).flatten()
        batch_size = int(positions.numel())
        draws["positions"] = positions.numpy()
        draws["z_critic"] = torch.randn(batch_size, self.options.z_dim, generator=generator).to(
            self.device
        )
        draws["eps"] = torch.rand(batch_size, 1, 1, 1, generator=generator).to(self.device)
        flips = torch.rand(batch_size, generator=generator) < 0.5
        draws["flips"] = flips if self.options.horizontal_flip else None
        return draws

    def _critic_step(
        self, state: ScheduleState, reals: torch.Tensor, z: torch.Tensor, eps: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        _, opt_D = self._optimizers()
        with torch.no_grad():
            fakes = self.G.synthesize(z, state.res_log2, state.alpha) if len(z) else reals.clone()
        opt_D.zero_grad(set_to_none=True)
        names = self._active(state)
        with only_trainable(self.D, names):
            grads, terms = per_sample_critic_grads(
                self.D, names, reals, fakes, eps, state.res_log2, state.alpha,
                gp_lambda=self.options.gp_lambda, drift_epsilon=self.options.drift_epsilon,
            )  # fmt: skip
            write_grad_samples(self.D, grads)
            self.dp_optimizer.expected_batch_size = state.batch_size
            self.dp_optimizer.generator = secret_generator(
                self.secret_seed, self.step, _NOISE_STREAM, self.device
            )
            self.sample_rate = state.batch_size / self.num_records
            opt_D.step()
        self._record_dp_stats(grads, len(reals))
        return {name: values.detach().mean() for name, values in terms.items()}

    def _active(self, state: ScheduleState) -> tuple[str, ...]:
        key = (state.res_log2, state.alpha < 1.0)
        if key not in self._active_names:
            self._active_names[key] = active_parameter_names(self.D, state.res_log2, state.alpha)
        return self._active_names[key]

    def _record_dp_stats(self, grads: dict[str, torch.Tensor], batch_size: int) -> None:
        norms = per_sample_norms(grads) if batch_size else torch.zeros(1)
        if (self.step + 1) % self.dp.epsilon_every_steps == 0:
            self.epsilon_so_far = self._live_epsilon()
        self.last_dp_stats = {
            "privacy/batch_size": float(batch_size),
            "privacy/clipped_fraction": float((norms > self.dp.max_grad_norm).float().mean()),
            "privacy/grad_norm_median": float(norms.median()),
            "privacy/epsilon": self.epsilon_so_far,
        }

    def _log_step(
        self, state: ScheduleState, critic: dict[str, torch.Tensor], generator: torch.Tensor
    ) -> None:
        super()._log_step(state, critic, generator)
        self.log_dict(self.last_dp_stats, on_step=True, on_epoch=False, batch_size=state.batch_size)
