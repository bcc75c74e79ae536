"""``shared.progress``: the one progress/ETA reporter of synthesis (images) and audits (pairs)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shared.progress import ProgressReporter, format_rate, format_seconds

LOG = logging.getLogger("radshare.test.progress")


def _reporter(total: int, **kwargs: Any) -> ProgressReporter:
    return ProgressReporter(total, unit="pairs", description="SSIM search", logger=LOG, **kwargs)


def test_progress_logs_percent_and_eta_when_not_on_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    with _reporter(1000, bar=False, log_every_s=0.0) as progress:
        progress(250)
        progress(250)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3  # two due lines, one at the end
    assert lines[0].startswith("SSIM search: 25% (250 of 1,000 pairs), ")
    assert " pairs/s, " in lines[0] and " elapsed, ETA " in lines[0] and "ETA ?" not in lines[0]
    assert lines[-1].startswith("SSIM search: 50% (500 of 1,000 pairs)")
    assert progress.eta_seconds() is not None


def test_no_log_line_before_it_is_due_and_none_after_an_error(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    with pytest.raises(RuntimeError), _reporter(1000, bar=False, log_every_s=3600.0) as progress:
        progress(10)
        raise RuntimeError("search failed")
    assert caplog.records == []


def test_eta_is_remaining_items_at_the_rate_so_far():
    progress = _reporter(1000, bar=False)
    progress._started = 0.0  # 400 pairs in 10 s: 600 more take 15 s
    progress.done = 400
    assert progress.eta_seconds(now=10.0) == pytest.approx(15.0)
    assert progress.rate_per_s(now=10.0) == pytest.approx(40.0)
    assert _reporter(1000, bar=False).eta_seconds() is None  # nothing finished yet


def test_a_resumed_run_counts_earlier_items_in_the_total_not_in_the_rate():
    progress = _reporter(1000, bar=False, completed=200)
    progress._started = 0.0  # 400 more pairs in 10 s: 40 pairs/s, 400 left take 10 s
    progress.done = 400
    assert progress.rate_per_s(now=10.0) == pytest.approx(40.0)
    assert progress.eta_seconds(now=10.0) == pytest.approx(10.0)
    line = progress.status_line(now=10.0)
    assert line == "SSIM search: 60% (600 of 1,000 pairs), 40.00 pairs/s, 10s elapsed, ETA 10s"


def test_the_bar_shows_earlier_and_new_items(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    with _reporter(100, bar=True, completed=30) as progress:
        progress(20)
        task = progress._bar.tasks[0]
        assert (task.completed, task.total) == (50, 100)
    assert caplog.records == []  # a bar, no log lines


def test_formats():
    assert [format_seconds(s) for s in (12, 187, 3720)] == ["12s", "3m07s", "1h02m"]
    assert [format_rate(r) for r in (1.2, 99.994, 6429.4)] == ["1.20", "99.99", "6,429"]
