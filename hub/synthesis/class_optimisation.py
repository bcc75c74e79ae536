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

A start may carry a whole target label vector (``--labels match-site``): more findings
to reach (``also``: each with its own jittered threshold) and findings to stay *below*
their Youden threshold (``below``: the labeller must not call them; for a No Finding
target, every callable finding). The ascent then maximises the summed shortfall

    s(z) = Σ_pos min(F_c(G(z)) - T_c - o, 0) + Σ_neg min(Y_c - o - F_c(G(z)), 0)

(``o``: the overshoot), which is ``min(F_c - T_c - o, 0)`` for a one-class start, so
Algorithm 1 is the special case; a start converges when ``s = 0`` with every negative
strictly below its ceiling.

Severity and retries: the jitter of a task is drawn once, from the task's seed, and
every retry of the task keeps it (only ``z0`` is redrawn). Redrawing it on retry (the
behaviour before, ``redraw_severity=True``) keeps the severities that converge easily:
hard, severe targets fail more, are redrawn milder, and kept patients skew mild.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
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
    "severity_jitter",
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
    seed: int  # seeds z0 (and, with redraw_severity, the jitter)
    threshold_logit: float  # T_c for this start
    also: tuple[tuple[int, float], ...] = ()  # more findings to reach: (class, T_c)
    below: tuple[tuple[int, float], ...] = ()  # findings not to call: (class, Youden)

    def positives(self) -> tuple[tuple[int, float], ...]:
        """Every ``(class, T_c)`` this start must reach, the primary target first."""
        return ((self.target, self.threshold_logit), *self.also)


@dataclass(frozen=True)
class Converged:
    """A start whose logit reached its threshold: ``z`` is the latent that did it."""

    start: Start
    z: torch.Tensor  # [z_dim], CPU
    logit: float  # the primary target's
    steps: int
    logits: tuple[float, ...] = ()  # every class's logit at z


@dataclass(frozen=True)
class GaveUp:
    """A start that stalled (plateau) or ran out of steps."""

    start: Start
    reason: Literal["plateau", "step_limit"]
    best_logit: float  # T_c + o + the best shortfall s (one-class start: its best logit)
    steps: int


def start_seed(base_seed: int, task: int, attempt: int) -> int:
    """A 31-bit seed for start ``attempt`` of ``task``, independent across both."""
    return int(np.random.SeedSequence([base_seed, task, attempt]).generate_state(1)[0] >> 1)


def truncated_normal(seed: int, z_dim: int, truncation: float = 0.7) -> torch.Tensor:
    """``[z_dim]`` standard normal values truncated to ``[-truncation, truncation]``."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.empty(z_dim)
    return torch.nn.init.trunc_normal_(z, 0.0, 1.0, -truncation, truncation, generator=generator)


def severity_jitter(
    base_seed: int, task: int, count: int, settings: ClassOptimisationSettings
) -> np.ndarray:
    """``count`` draws of ``|N(severity_mean, severity_std)|`` for ``task`` (any attempt)."""
    rng = np.random.default_rng([start_seed(base_seed, task, 0), 1])  # apart from z0's stream
    return np.abs(rng.normal(settings.severity_mean_logit, settings.severity_std_logit, count))


def make_start(
    task: int,
    attempt: int,
    target: int,
    youden_logit: float,
    base_seed: int,
    settings: ClassOptimisationSettings,
    *,
    also_youden: Sequence[tuple[int, float]] = (),
    below: Sequence[tuple[int, float]] = (),
    redraw_severity: bool = False,
) -> Start:
    """A start whose thresholds are Youden's plus ``|N(severity_mean, severity_std)|``.

    ``target``/``youden_logit`` and ``also_youden`` (class, Youden) are the findings to
    reach, each with its own jitter; ``below`` (class, Youden) those to stay under. The
    jitter is the task's (:func:`severity_jitter`), the same for every attempt, unless
    ``redraw_severity`` (the biased behaviour before; kept to measure it) draws anew.
    """
    seed = start_seed(base_seed, task, attempt)
    count = 1 + len(also_youden)
    if redraw_severity:
        rng = np.random.default_rng([seed, 1])
        mean, std = settings.severity_mean_logit, settings.severity_std_logit
        jitter = np.abs(rng.normal(mean, std, count))
    else:
        jitter = severity_jitter(base_seed, task, count, settings)
    also = tuple((c, float(y + j)) for (c, y), j in zip(also_youden, jitter[1:], strict=True))
    return Start(
        task, attempt, target, seed, float(youden_logit + jitter[0]), also,
        tuple((c, float(y)) for c, y in below),
    )  # fmt: skip


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
        # Per-class floors (T_c, -inf: none) and ceilings (Youden, +inf: none), [B, C],
        # allocated at the first step (when the labeller's class count is known).
        self.lower: torch.Tensor | None = None
        self.upper: torch.Tensor | None = None

    def bounds(self, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``lower, upper`` ``[B, C]``, built for every occupied slot on first use."""
        if self.lower is None or self.upper is None:
            shape = (len(self.starts), num_classes)
            self.lower = torch.full(shape, -torch.inf, device=self.z.device)
            self.upper = torch.full(shape, torch.inf, device=self.z.device)
            for slot in self.occupied():
                self._set_bounds(slot)
        return self.lower, self.upper

    def _set_bounds(self, slot: int) -> None:
        start = self.starts[slot]
        if self.lower is None or self.upper is None or start is None:
            return
        self.lower[slot] = -torch.inf
        self.upper[slot] = torch.inf
        for c, threshold in start.positives():
            self.lower[slot, c] = threshold
        for c, ceiling in start.below:
            self.upper[slot, c] = ceiling

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
        self._set_bounds(slot)

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
            logits = self.labeller(self.G(z))
            lower, upper = slots.bounds(logits.shape[1])
            floor, ceiling = lower[rows] + cfg.overshoot_logit, upper[rows] - cfg.overshoot_logit
            shortfall = (logits - floor).clamp(max=0) + (ceiling - logits).clamp(max=0)
            score = shortfall.sum(1)  # s(z) <= 0; 0 once every bound holds
            (grad,) = torch.autograd.grad(score.sum(), z)
        logits, score = logits.detach(), score.detach()
        # Plateau bookkeeping, then retire the converged and the hopeless.
        improved = score > slots.best[rows] + cfg.plateau_min_delta_logit
        slots.best[rows] = torch.where(improved, score, slots.best[rows])
        slots.since_best[rows] = torch.where(improved, 0, slots.since_best[rows] + 1)
        done = ((logits >= floor) & (logits < ceiling)).all(1)
        stalled = slots.since_best[rows] >= cfg.plateau_patience_steps
        exhausted = slots.steps[rows] >= cfg.max_steps
        retire = done | stalled | exhausted
        yield from self._retire(slots, rows, logits, done, stalled, retire)
        # Adam ascent for the rest.
        keep = ~retire
        self._adam_ascent(slots, rows[keep], grad[keep])

    def _retire(
        self,
        slots: _Slots,
        rows: torch.Tensor,
        logits: torch.Tensor,
        done: torch.Tensor,
        stalled: torch.Tensor,
        retire: torch.Tensor,
    ) -> Iterator[Converged | GaveUp]:
        z_cpu = slots.z[rows].detach().cpu()
        steps = slots.steps[rows].tolist()
        best = slots.best[rows].tolist()
        rows_l, done_l, stalled_l = logits.tolist(), done.tolist(), stalled.tolist()
        overshoot = self.settings.overshoot_logit
        for i, (slot, retired) in enumerate(zip(rows.tolist(), retire.tolist(), strict=True)):
            if not retired:
                continue
            start = slots.starts[slot]
            assert start is not None
            slots.starts[slot] = None
            if done_l[i]:
                row = tuple(rows_l[i])
                yield Converged(start, z_cpu[i].clone(), row[start.target], steps[i], row)
            else:
                reason: Literal["plateau", "step_limit"] = (
                    "plateau" if stalled_l[i] else "step_limit"
                )
                yield GaveUp(start, reason, start.threshold_logit + overshoot + best[i], steps[i])

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
