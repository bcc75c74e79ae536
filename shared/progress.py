"""Progress and ETA of a long count of work: a bar on a terminal, log lines otherwise.

``with ProgressReporter(total, unit="images", ...) as progress: work(progress)``: the work
calls ``progress(n)`` with the items it just finished (``progress(0)`` is a heartbeat, so
that a due log line still comes). Used by the hub's synthesis (images) and the site's
audit SSIM searches ((query, real) pairs). The ETA is the items left at the rate seen so
far in this run. Only counts are shown, never an image or an identifier; the caller's
logger gives the component tag.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["ProgressReporter", "format_rate", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``1h02m``, ``3m07s`` or ``12s``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_rate(per_s: float) -> str:
    """``1.20`` below 100 per second, ``6,400`` from there on."""
    return f"{per_s:.2f}" if per_s < 100 else f"{per_s:,.0f}"


class ProgressReporter:
    """``with ProgressReporter(total, unit="pairs", ...) as progress: search(progress=progress)``.

    Args:
        total: items the whole run finishes, those done before it included.
        unit: what an item is, in the plural (``images``, ``pairs``).
        description: what the bar or the log line says is running.
        logger: where log lines go (off a terminal).
        bar: rich progress bar (True), log lines (False), or a bar only when stderr is a
            terminal (None).
        log_every_s: seconds between log lines.
        completed: items already done before this run (a resumed run); not in the rate.
    """

    def __init__(
        self,
        total: int,
        *,
        unit: str,
        description: str,
        logger: logging.Logger,
        bar: bool | None = None,
        log_every_s: float = 30.0,
        completed: int = 0,
    ) -> None:
        self.total = max(1, int(total))
        self.completed_before = int(completed)
        self.done = 0
        self.unit = unit
        self.description = description
        self.log = logger
        self.use_bar = sys.stderr.isatty() if bar is None else bar
        self.log_every_s = log_every_s
        self._started = time.perf_counter()
        self._last_log = self._started
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressReporter:
        self._started = self._last_log = time.perf_counter()
        if self.use_bar:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(self.unit), TextColumn(f"{{task.fields[rate]}} {self.unit}/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(
                self.description, total=self.total, completed=self.completed_before, rate="-"
            )
        return self

    def __call__(self, items: int) -> None:
        """Count ``items`` more finished items."""
        self.done += int(items)
        now = time.perf_counter()
        if self._bar is not None:
            rate = format_rate(self.rate_per_s(now))
            self._bar.update(self._task, completed=self.completed_before + self.done, rate=rate)
        elif now - self._last_log >= self.log_every_s:
            self._last_log = now
            self.log.info("%s", self.status_line(now))

    def rate_per_s(self, now: float | None = None) -> float:
        """Items finished per second in this run so far."""
        elapsed = (time.perf_counter() if now is None else now) - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far (None before any item finished)."""
        rate = self.rate_per_s(now)
        if rate <= 0:
            return None
        return max(0, self.total - self.completed_before - self.done) / rate

    def status_line(self, now: float | None = None) -> str:
        """``synthesize: 10% (96 of 1,000 images), 1.20 images/s, 1m20s elapsed, ETA 12m33s``."""
        now = time.perf_counter() if now is None else now
        eta = self.eta_seconds(now)
        finished = self.completed_before + self.done
        return (
            f"{self.description}: {100.0 * finished / self.total:.0f}% ({finished:,} of "
            f"{self.total:,} {self.unit}), {format_rate(self.rate_per_s(now))} {self.unit}/s, "
            f"{format_seconds(now - self._started)} elapsed, "
            f"ETA {'?' if eta is None else format_seconds(eta)}"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif exc_type is None:
            self.log.info("%s", self.status_line())
