"""ε of DP-SGD training, from the parameters an auditor can read, with Opacus's accountants.

Training is a sequence of :class:`~shared.artifacts.manifest.DPSegment` s, one per PGGAN
phase: ``steps`` Poisson-subsampled Gaussian steps with noise multiplier σ and sample
rate ``q = expected_batch_size / num_records``. The phases' batch sizes differ, so q
does too; the accountant composes the segments in order, exactly as an Opacus
accountant whose ``history`` is ``[(σ, q, steps), ...]`` (Mironov 2017 for RDP;
Gopi et al. 2021 for PRV, which reports an upper bound on ε).

Everything here is a pure function of its arguments: the manifest's DP section is
enough to recompute ε (``hub.privacy_audit`` does, at the hub).
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Sequence

from opacus.accountants import create_accountant
from opacus.accountants.accountant import IAccountant
from opacus.accountants.utils import get_noise_multiplier

from shared.artifacts.manifest import DPSegment
from shared.errors import ConfigError
from site_node.pggan.schedule import ProgressSchedule
from site_node.privacy.config import ACCOUNTANTS

__all__ = [
    "MAX_NOISE_MULTIPLIER",
    "epsilon_spent",
    "make_accountant",
    "noise_multiplier_for_budget",
    "planned_segments",
    "steps_within_budget",
    "truncate_segments",
]

log = logging.getLogger("radshare.site.privacy")

#: Beyond this σ the budget is called unreachable (Opacus's own limit).
MAX_NOISE_MULTIPLIER = 1e6


def make_accountant(name: str) -> IAccountant:
    """A fresh Opacus accountant: ``prv`` or ``rdp`` (ConfigError names the valid ones)."""
    if name not in ACCOUNTANTS:
        close = difflib.get_close_matches(name, ACCOUNTANTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"accountant {name!r} is unknown; valid: {', '.join(ACCOUNTANTS)}{hint}")
    return create_accountant(mechanism=name)


def epsilon_spent(segments: Sequence[DPSegment], delta: float, accountant: str) -> float:
    """ε after every segment, composed in order (0.0 when no step was taken)."""
    history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in segments if s.steps > 0]
    if not history:
        return 0.0
    counter = make_accountant(accountant)
    counter.history = history
    return float(counter.get_epsilon(delta=delta))


def planned_segments(
    schedule: ProgressSchedule,
    num_records: int,
    noise_multiplier: float,
    *,
    max_steps: int | None = None,
) -> list[DPSegment]:
    """One segment per phase: its steps (up to ``max_steps`` in all) and ``q = batch / N``.

    A step belongs to the phase it starts in (``site_node.pggan.schedule``), and advances
    ``cur_nimg`` by the phase's batch size, the expected size of its Poisson batch.

    Raises:
        ConfigError: a phase's batch size exceeds ``num_records`` (q would be above 1).
    """
    steps_per_phase = [0] * len(schedule.phases)
    cur_nimg, step = 0, 0
    while cur_nimg < schedule.total_nimg and (max_steps is None or step < max_steps):
        state = schedule.at(cur_nimg)
        steps_per_phase[state.phase_index] += 1
        cur_nimg, step = cur_nimg + state.batch_size, step + 1
    segments = []
    for phase, steps in zip(schedule.phases, steps_per_phase, strict=True):
        if phase.batch_size > num_records:
            raise ConfigError(
                f"batch_sizes[{phase.res_px}]={phase.batch_size} exceeds the {num_records} "
                "training images: Poisson sampling needs batch size <= number of images"
            )
        segments.append(
            DPSegment(
                noise_multiplier=noise_multiplier,
                sample_rate=phase.batch_size / num_records,
                steps=steps,
                label=f"{phase.kind} {phase.res_px}px",
            )
        )
    return segments


def truncate_segments(segments: Sequence[DPSegment], steps: int) -> list[DPSegment]:
    """The first ``steps`` steps of ``segments`` (segments after them keep 0 steps)."""
    left, out = steps, []
    for segment in segments:
        taken = min(segment.steps, left)
        out.append(segment.model_copy(update={"steps": taken}))
        left -= taken
    return out


def _search_noise_multiplier(
    target_epsilon: float,
    delta: float,
    rates_and_steps: Sequence[tuple[float, int]],
    accountant: str,
    tolerance: float,
) -> float:
    """Opacus's ``get_noise_multiplier`` search (double, then bisect) over several rates."""

    def epsilon_at(sigma: float) -> float:
        segments = [
            DPSegment(noise_multiplier=sigma, sample_rate=q, steps=n) for q, n in rates_and_steps
        ]
        return epsilon_spent(segments, delta, accountant)

    sigma_low, sigma_high, eps_high = 0.0, 10.0, math.inf
    while eps_high > target_epsilon:
        sigma_high *= 2
        eps_high = epsilon_at(sigma_high)
        if sigma_high > MAX_NOISE_MULTIPLIER:
            raise ConfigError(f"target_epsilon={target_epsilon} is unreachable for this schedule")
    while target_epsilon - eps_high > tolerance:
        sigma = (sigma_low + sigma_high) / 2
        eps = epsilon_at(sigma)
        if eps < target_epsilon:
            sigma_high, eps_high = sigma, eps
        else:
            sigma_low = sigma
    return sigma_high


def noise_multiplier_for_budget(
    target_epsilon: float,
    delta: float,
    rates_and_steps: Sequence[tuple[float, int]],
    accountant: str,
    *,
    tolerance: float = 0.01,
) -> float:
    """Smallest σ (to ``tolerance`` in ε) whose ε over ``[(q, steps), ...]`` is <= the target.

    One sample rate: Opacus's ``get_noise_multiplier``; several: the same search over the
    composition of all of them.
    """
    kept = [(q, n) for q, n in rates_and_steps if n > 0]
    if not kept:
        raise ConfigError("no DP steps planned: nothing to calibrate the noise for")
    make_accountant(accountant)  # validates the name
    if len({q for q, _ in kept}) == 1:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=kept[0][0],
                steps=sum(n for _, n in kept),
                accountant=accountant,
                epsilon_tolerance=tolerance,
            )
        )
    return _search_noise_multiplier(target_epsilon, delta, kept, accountant, tolerance)


def steps_within_budget(
    segments: Sequence[DPSegment], target_epsilon: float, delta: float, accountant: str
) -> int:
    """The most steps of ``segments`` (taken in order) whose ε is <= ``target_epsilon``."""
    low, high = 0, sum(s.steps for s in segments)
    if epsilon_spent(segments, delta, accountant) <= target_epsilon:
        return high
    while high - low > 1:  # invariant: ε(low) <= target < ε(high)
        middle = (low + high) // 2
        within = epsilon_spent(truncate_segments(segments, middle), delta, accountant)
        low, high = (middle, high) if within <= target_epsilon else (low, middle)
    log.info(
        "budget ε=%.3g allows %d of %d planned steps",
        target_epsilon,
        low,
        sum(s.steps for s in segments),
    )
    return low
