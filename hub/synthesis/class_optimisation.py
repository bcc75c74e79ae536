"""Batched latent class optimisation: Algorithm 1 of Segal et al. (2021), many latents at once.

For one start, Algorithm 1 draws ``z`` from the prior and ascends the labeller's logit
``F_c(G(z))`` for the target class ``c`` until it reaches the threshold ``T_c``. Here a
batch of ``B`` slots runs that loop together on one device:

* every slot has its own target class ``c`` and threshold ``T_c`` (Youden's threshold
  plus a severity jitter ``|N(1, 1)|`` in logit units, Segal et al. §4.3), and its own
  ``z`` drawn from a normal truncated to ``[-0.7, 0.7]`` (resampled outside);
* one forward/backward pass per step through ``G`` and the labeller (both in eval mode
  and frozen, so rows never interact) gives every slot its logit and its gradient;
* a slot whose logit reaches ``T_c`` is retired with the ``z`` that reached it, and
  a slot that has not improved its logit by ``plateau_min_delta_logit`` for
  ``plateau_patience_steps`` steps, or has used ``max_steps``, gives up; both are
  refilled from the queue of pending starts at once, so the device stays full;
* the ascent is Adam with per-row moments and step counts, so a row's trajectory is the
  one it would have alone.

``overshoot_logit`` (default 0, Algorithm 1 as published) makes a start go on to
``T_c + overshoot`` before it retires; local sampling still keeps follow-ups at ``T_c``,
so fewer of them fall below it (a latent that just crossed ``T_c`` sits on the boundary).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

log = logging.getLogger("radshare.hub.synthesis")

__all__ = [
    "BatchedClassOptimiser",
    "ClassOptimisationSettings",
    "ClassOptimisationStats",
    "Converged",
    "GaveUp",
    "Start",
    "make_start",
    "start_seed",
    "truncated_normal",
]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class ClassOptimisationSettings:
    """Knobs of the batched optimiser (defaults: Segal et al. where they say, else ours)."""

    batch_size: int = 64
    learning_rate: float = 0.05  # Adam step size, in latent units
    max_steps: int = 200
    plateau_patience_steps: int = 40
    plateau_min_delta_logit: float = 0.01
    truncation: float = 0.7
    severity_mean_logit: float = 1.0
    severity_std_logit: float = 1.0
    overshoot_logit: float = 0.0  # converge at T_c + overshoot (0: Algorithm 1 as published)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "plateau_patience_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not self.truncation > 0:
            raise ValueError("learning_rate and truncation must be > 0")


@dataclass(frozen=True)
class Start:
    """One optimisation start: which task it serves, its class, threshold and seed."""

    task: int  # the caller's id (a synthetic patient)
    attempt: int  # 0 for the first start of a task, then 1, 2, ...
    target: int  # class index in the labeller's output
    seed: int  # seeds z0 and the severity jitter
    threshold_logit: float  # T_c for this start


@dataclass(frozen=True)
class Converged:
    """A start whose logit reached its threshold: ``z`` is the latent that did it."""

    start: Start
    z: torch.Tensor  # [z_dim], CPU
    logit: float
    steps: int


@dataclass(frozen=True)
class GaveUp:
    """A start that stalled (plateau) or ran out of steps."""

    start: Start
    reason: Literal["plateau", "step_limit"]
    best_logit: float
    steps: int


def start_seed(base_seed: int, task: int, attempt: int) -> int:
    """A 31-bit seed for start ``attempt`` of ``task``, independent across both."""
    return int(np.random.SeedSequence([base_seed, task, attempt]).generate_state(1)[0] >> 1)


def truncated_normal(seed: int, z_dim: int, truncation: float = 0.7) -> torch.Tensor:
    """``[z_dim]`` standard normal values truncated to ``[-truncation, truncation]``."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.empty(z_dim)
    return torch.nn.init.trunc_normal_(z, 0.0, 1.0, -truncation, truncation, generator=generator)


def make_start(
    task: int,
    attempt: int,
    target: int,
    youden_logit: float,
    base_seed: int,
    settings: ClassOptimisationSettings,
) -> Start:
    """A start whose threshold is Youden's plus ``|N(severity_mean, severity_std)|``."""
    seed = start_seed(base_seed, task, attempt)
    rng = np.random.default_rng([seed, 1])  # a stream apart from z0's
    jitter = abs(rng.normal(settings.severity_mean_logit, settings.severity_std_logit))
    return Start(task, attempt, target, seed, float(youden_logit + jitter))


@dataclass
class ClassOptimisationStats:
    """Counts per target class: starts, converged, give-ups by reason, steps to converge."""

    converged: Counter = field(default_factory=Counter)
    gave_up_plateau: Counter = field(default_factory=Counter)
    gave_up_step_limit: Counter = field(default_factory=Counter)
    steps_converged: Counter = field(default_factory=Counter)

    def record(self, outcome: Converged | GaveUp, class_name: str) -> None:
        """Count one finished start under ``class_name``."""
        if isinstance(outcome, Converged):
            self.converged[class_name] += 1
            self.steps_converged[class_name] += outcome.steps
        elif outcome.reason == "plateau":
            self.gave_up_plateau[class_name] += 1
        else:
            self.gave_up_step_limit[class_name] += 1

    def starts(self, class_name: str) -> int:
        """Finished starts of ``class_name``."""
        return (
            self.converged[class_name]
            + self.gave_up_plateau[class_name]
            + self.gave_up_step_limit[class_name]
        )

    def give_up_rate(self, class_name: str) -> float:
        """Give-ups / finished starts (NaN before any start)."""
        n = self.starts(class_name)
        return float("nan") if n == 0 else 1.0 - self.converged[class_name] / n

    def classes(self) -> list[str]:
        """Every class with at least one finished start, sorted."""
        return sorted(
            set(self.converged) | set(self.gave_up_plateau) | set(self.gave_up_step_limit)
        )


class _Slots:
    """Per-slot state of the batch, as tensors on the device."""

    def __init__(self, batch_size: int, z_dim: int, device: torch.device):
        self.z = torch.zeros(batch_size, z_dim, device=device)
        self.m = torch.zeros_like(self.z)
        self.v = torch.zeros_like(self.z)
        self.steps = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.best = torch.zeros(batch_size, device=device)
        self.since_best = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.target = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.threshold = torch.zeros(batch_size, device=device)
        self.starts: list[Start | None] = [None] * batch_size

    def load(self, slot: int, start: Start, z0: torch.Tensor) -> None:
        self.z[slot] = z0
        self.m[slot] = 0
        self.v[slot] = 0
        self.steps[slot] = 0
        self.best[slot] = -torch.inf
        self.since_best[slot] = 0
        self.target[slot] = start.target
        self.threshold[slot] = start.threshold_logit
        self.starts[slot] = start

    def occupied(self) -> list[int]:
        return [i for i, s in enumerate(self.starts) if s is not None]


class BatchedClassOptimiser:
    """Ascends ``labeller(G(z))[:, c]`` for a full batch of starts until each converges or quits.

    ``G`` maps ``[N, z_dim]`` to ``[N, 1, R, R]`` in [-1, 1]; ``labeller`` maps that to
    logits ``[N, C]``. Both are put in eval mode and frozen.
    """

    def __init__(
        self,
        G: nn.Module,
        labeller: nn.Module,
        z_dim: int,
        settings: ClassOptimisationSettings | None = None,
        device: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        self.G = G.to(self.device).eval().requires_grad_(False)
        self.labeller = labeller.to(self.device).eval().requires_grad_(False)
        self.z_dim = z_dim
        self.settings = settings or ClassOptimisationSettings()
        self.log_every_s = 10.0

    def run(self, pending: deque[Start]) -> Iterator[Converged | GaveUp]:
        """Optimise every start in ``pending`` (read lazily: the caller may append retries).

        Logs what it is doing every ``log_every_s`` seconds (step, active starts, converged
        and given up so far): before the first image is written this is the only sign of
        progress a long CPU run gives.
        """
        cfg = self.settings
        slots = _Slots(cfg.batch_size, self.z_dim, self.device)
        tally: Counter[str] = Counter()
        last_log = time.perf_counter()
        while True:
            self._fill(slots, pending)
            rows = slots.occupied()
            if not rows:
                return
            tally["steps"] += 1
            for outcome in self._step(slots, torch.tensor(rows, device=self.device)):
                tally["converged" if isinstance(outcome, Converged) else "gave_up"] += 1
                yield outcome
            if time.perf_counter() - last_log >= self.log_every_s:
                last_log = time.perf_counter()
                log.info(
                    "optimising latents: step %d, %d starts active (up to %d steps each), "
                    "%d converged, %d given up so far, %d waiting",
                    tally["steps"], len(rows), cfg.max_steps, tally["converged"],
                    tally["gave_up"], len(pending),
                )  # fmt: skip

    def _fill(self, slots: _Slots, pending: deque[Start]) -> None:
        for slot, current in enumerate(slots.starts):
            if current is None and pending:
                start = pending.popleft()
                z0 = truncated_normal(start.seed, self.z_dim, self.settings.truncation)
                slots.load(slot, start, z0.to(self.device))

    def target_logits(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``labeller(G(z))[i, target[i]]`` for every row."""
        logits = self.labeller(self.G(z))
        return logits.gather(1, target[:, None]).squeeze(1)

    def _step(self, slots: _Slots, rows: torch.Tensor) -> Iterator[Converged | GaveUp]:
        cfg = self.settings
        z = slots.z[rows].detach().requires_grad_(True)
        with torch.enable_grad():
            logit = self.target_logits(z, slots.target[rows])
            (grad,) = torch.autograd.grad(logit.sum(), z)
        logit = logit.detach()
        # Plateau bookkeeping, then retire the converged and the hopeless.
        improved = logit > slots.best[rows] + cfg.plateau_min_delta_logit
        slots.best[rows] = torch.where(improved, logit, slots.best[rows])
        slots.since_best[rows] = torch.where(improved, 0, slots.since_best[rows] + 1)
        done = logit >= slots.threshold[rows] + cfg.overshoot_logit
        stalled = slots.since_best[rows] >= cfg.plateau_patience_steps
        exhausted = slots.steps[rows] >= cfg.max_steps
        retire = done | stalled | exhausted
        yield from self._retire(slots, rows, logit, done, stalled, retire)
        # Adam ascent for the rest.
        keep = ~retire
        self._adam_ascent(slots, rows[keep], grad[keep])

    def _retire(
        self,
        slots: _Slots,
        rows: torch.Tensor,
        logit: torch.Tensor,
        done: torch.Tensor,
        stalled: torch.Tensor,
        retire: torch.Tensor,
    ) -> Iterator[Converged | GaveUp]:
        z_cpu = slots.z[rows].detach().cpu()
        steps = slots.steps[rows].tolist()
        best = slots.best[rows].tolist()
        logits, done_l, stalled_l = logit.tolist(), done.tolist(), stalled.tolist()
        for i, (slot, retired) in enumerate(zip(rows.tolist(), retire.tolist(), strict=True)):
            if not retired:
                continue
            start = slots.starts[slot]
            assert start is not None
            slots.starts[slot] = None
            if done_l[i]:
                yield Converged(start, z_cpu[i].clone(), logits[i], steps[i])
            else:
                reason: Literal["plateau", "step_limit"] = (
                    "plateau" if stalled_l[i] else "step_limit"
                )
                yield GaveUp(start, reason, best[i], steps[i])

    def _adam_ascent(self, slots: _Slots, rows: torch.Tensor, grad: torch.Tensor) -> None:
        if rows.numel() == 0:
            return
        beta1, beta2 = ADAM_BETAS
        slots.steps[rows] += 1
        t = slots.steps[rows].to(grad.dtype)[:, None]
        m = beta1 * slots.m[rows] + (1 - beta1) * grad
        v = beta2 * slots.v[rows] + (1 - beta2) * grad * grad
        slots.m[rows], slots.v[rows] = m, v
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        slots.z[rows] = slots.z[rows] + self.settings.learning_rate * m_hat / (
            v_hat.sqrt() + ADAM_EPS
        )
