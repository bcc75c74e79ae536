"""The progressive-growing schedule: phase, resolution, fade alpha and batch size at ``cur_nimg``.

Karras et al. 2018 (as Han et al. and Segal et al. used it): stabilise at 4×4, then for
every doubling a *fade* phase (the new level's ``alpha`` rises linearly 0 → 1 over the
phase) followed by a *stabilise* phase (``alpha = 1``). Everything is counted in real
images shown to the critic (``nimg``; ``kimg = nimg / 1000``), so a schedule is a pure
function of ``cur_nimg`` and the same on every machine and after every resume.

A training step that starts in a phase belongs to it, even if its batch carries
``cur_nimg`` past the phase's end (as in Karras et al.'s loop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from shared.errors import ConfigError

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "Phase",
    "ProgressSchedule",
    "ScheduleState",
    "build_phases",
    "format_batch_sizes",
    "parse_batch_sizes",
    "uniform_batch_sizes",
]

# Han et al. (2020), supplement: 128 up to 32², then halved per doubling to fit 16 GB.
DEFAULT_BATCH_SIZES: dict[int, int] = {
    4: 128,
    8: 128,
    16: 128,
    32: 128,
    64: 64,
    128: 32,
    256: 16,
    512: 8,
    1024: 4,
}


@dataclass(frozen=True)
class Phase:
    """One phase of the schedule: ``kind`` at ``2**res_log2`` px over ``[start_nimg, end_nimg)``."""

    kind: Literal["stabilise", "fade"]
    res_log2: int
    start_nimg: int
    length_nimg: int
    batch_size: int

    @property
    def res_px(self) -> int:
        return 2**self.res_log2

    @property
    def end_nimg(self) -> int:
        return self.start_nimg + self.length_nimg

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (kimg, not nimg, as the papers report it)."""
        return {
            "kind": self.kind,
            "resolution_px": self.res_px,
            "kimg": self.length_nimg / 1000,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class ScheduleState:
    """Where training stands at one ``cur_nimg``."""

    phase_index: int
    phase: Phase
    alpha: float

    @property
    def res_log2(self) -> int:
        return self.phase.res_log2

    @property
    def batch_size(self) -> int:
        return self.phase.batch_size

    def describe(self) -> str:
        """Short label for logs and the progress bar, e.g. ``fade 16px``."""
        return f"{self.phase.kind} {self.phase.res_px}px"


def parse_batch_sizes(text: str) -> dict[int, int]:
    """Parse ``"4:128,8:128,64:32"`` into ``{4: 128, 8: 128, 64: 32}``."""
    sizes: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        res_text, _, size_text = item.partition(":")
        try:
            sizes[int(res_text)] = int(size_text)
        except ValueError:
            raise ConfigError(
                f"--batch-sizes: expected RES:SIZE pairs like '4:128,64:64', got {item!r}"
            ) from None
    return sizes


def format_batch_sizes(sizes: Mapping[int, int]) -> str:
    """``{4: 128, 64: 32}`` as ``"4:128,64:32"`` (what :func:`parse_batch_sizes` reads)."""
    return ",".join(f"{res_px}:{size}" for res_px, size in sizes.items())


def uniform_batch_sizes(resolution_px: int, batch_size: int) -> dict[int, int]:
    """``batch_size`` at every level from 4 px to ``resolution_px``."""
    return {2**res_log2: batch_size for res_log2 in range(2, int(math.log2(resolution_px)) + 1)}


def _batch_size_at(res_px: int, batch_sizes: Mapping[int, int]) -> int:
    merged = {**DEFAULT_BATCH_SIZES, **batch_sizes}
    if res_px not in merged or merged[res_px] < 1:
        raise ConfigError(f"batch_sizes: no positive batch size for {res_px}px (got {merged})")
    return merged[res_px]


def build_phases(
    resolution_px: int,
    stabilise_kimg: float,
    fade_kimg: float,
    batch_sizes: Mapping[int, int] | None = None,
) -> list[Phase]:
    """Phases from 4×4 to ``resolution_px``: stabilise 4², then (fade, stabilise) per doubling.

    ``batch_sizes`` maps resolution (px) to batch size and overrides
    :data:`DEFAULT_BATCH_SIZES` per resolution; a fade phase uses its new resolution's size.
    """
    if stabilise_kimg <= 0 or fade_kimg <= 0:
        raise ConfigError(f"kimg per phase must be > 0, got {stabilise_kimg} / {fade_kimg}")
    max_res_log2 = int(math.log2(resolution_px))
    stabilise_nimg, fade_nimg = round(stabilise_kimg * 1000), round(fade_kimg * 1000)
    phases: list[Phase] = []
    start_nimg = 0
    for res_log2 in range(2, max_res_log2 + 1):
        batch_size = _batch_size_at(2**res_log2, batch_sizes or {})
        kinds: tuple[Literal["stabilise", "fade"], ...] = (
            ("stabilise",) if res_log2 == 2 else ("fade", "stabilise")
        )
        for kind in kinds:
            length_nimg = fade_nimg if kind == "fade" else stabilise_nimg
            phases.append(Phase(kind, res_log2, start_nimg, length_nimg, batch_size))
            start_nimg += length_nimg
    return phases


class ProgressSchedule:
    """The list of phases, queried by ``cur_nimg``."""

    def __init__(self, phases: list[Phase]):
        if not phases:
            raise ConfigError("a schedule needs at least one phase")
        self.phases = phases
        self.total_nimg = phases[-1].end_nimg

    def at(self, cur_nimg: int) -> ScheduleState:
        """Phase, alpha and batch size for the step that starts at ``cur_nimg``."""
        index = len(self.phases) - 1
        for i, phase in enumerate(self.phases):
            if cur_nimg < phase.end_nimg:
                index = i
                break
        phase = self.phases[index]
        alpha = 1.0
        if phase.kind == "fade":
            alpha = min(max((cur_nimg - phase.start_nimg) / phase.length_nimg, 0.0), 1.0)
        return ScheduleState(index, phase, alpha)

    def next_nimg(self, cur_nimg: int) -> int:
        """``cur_nimg`` after one step that starts at ``cur_nimg``."""
        return cur_nimg + self.at(cur_nimg).batch_size

    def steps_in_tick(self, tick_start_nimg: int, tick_nimg: int) -> int:
        """Steps from ``tick_start_nimg`` until ``tick_nimg`` more images (or the end) are shown."""
        end_nimg = min(tick_start_nimg + tick_nimg, self.total_nimg)
        steps, cur_nimg = 0, tick_start_nimg
        while cur_nimg < end_nimg:
            cur_nimg = self.next_nimg(cur_nimg)
            steps += 1
        return steps
