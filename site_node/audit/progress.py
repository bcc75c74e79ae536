"""Progress and ETA of the audit's SSIM searches: a bar on a terminal, log lines otherwise.

The searches report finished (query, real) pairs, computed or skipped by the
bound (``shared.metrics.nn_search.exhaustive_topk(progress=...)``); the ETA is the
remaining pairs at the rate seen so far. Only counts are shown, never an image
or an identifier.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["SearchProgress", "format_seconds"]

log = logging.getLogger("radshare.site.audit")


def format_seconds(seconds: float) -> str:
    """``1h02m``, ``3m07s`` or ``12s``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class SearchProgress:
    """``with SearchProgress(total_pairs) as progress: search(..., progress=progress)``.

    Args:
        total_pairs: pairs all the searches will finish.
        bar: rich progress bar (True), log lines (False), or a bar only when stderr is a
            terminal (None).
        log_every_s: seconds between log lines.
        description: what the bar or the log line says is running.
    """

    def __init__(
        self,
        total_pairs: int,
        *,
        bar: bool | None = None,
        log_every_s: float = 30.0,
        description: str = "SSIM search",
    ) -> None:
        self.total_pairs = max(1, int(total_pairs))
        self.done_pairs = 0
        self.use_bar = sys.stderr.isatty() if bar is None else bar
        self.log_every_s = log_every_s
        self.description = description
        self._started = time.perf_counter()
        self._last_log = self._started
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> SearchProgress:
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
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("pairs"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), transient=False,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total_pairs)
        return self

    def __call__(self, pairs: int) -> None:
        """Count ``pairs`` more finished pairs."""
        self.done_pairs += int(pairs)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done_pairs)
            return
        now = time.perf_counter()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info("%s", self.status_line(now))

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far (None before any pair finished)."""
        elapsed = (now or time.perf_counter()) - self._started
        if self.done_pairs == 0 or elapsed <= 0:
            return None
        rate = self.done_pairs / elapsed
        return max(0, self.total_pairs - self.done_pairs) / rate

    def status_line(self, now: float | None = None) -> str:
        """``SSIM search: 45% (450,000 of 1,000,000 pairs), 1m10s elapsed, ETA 1m25s``."""
        now = now or time.perf_counter()
        eta = self.eta_seconds(now)
        percent = 100.0 * self.done_pairs / self.total_pairs
        return (
            f"{self.description}: {percent:.0f}% ({self.done_pairs:,} of {self.total_pairs:,} "
            f"pairs), {format_seconds(now - self._started)} elapsed, "
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
            log.info("%s", self.status_line())
