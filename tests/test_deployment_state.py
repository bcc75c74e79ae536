"""The demo's resumable state: done steps are skipped, failures and blocks are recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployment.state import DemoState
from shared.errors import ConfigError


def test_done_steps_are_skipped_on_a_rerun(tmp_path: Path):
    calls: list[str] = []
    state = DemoState(tmp_path / "state.json", '{"profile": "tiny"}')
    state.run("a", lambda _: calls.append("a") or {"x": 1})
    again = DemoState(tmp_path / "state.json", '{"profile": "tiny"}')
    record = again.run("a", lambda _: calls.append("a2") or {"x": 2})
    assert calls == ["a"] and record.status == "done" and record.outputs == {"x": 1}


def test_failure_is_recorded_and_blocks_dependents_then_retried(tmp_path: Path):
    state = DemoState(tmp_path / "state.json", "{}")

    def boom(_):
        raise RuntimeError("disk full")

    failed = state.run("train", boom)
    blocked = state.run("publish", lambda _: {}, needs=("train",))
    assert failed.status == "failed" and "disk full" in (failed.error or "")
    assert blocked.status == "blocked" and "train" in (blocked.error or "")
    retried = state.run("train", lambda _: {"run": "r"})
    assert retried.status == "done" and retried.attempts == 2
    assert state.run("publish", lambda _: {"id": "g"}, needs=("train",)).status == "done"
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["steps"]["publish"]["outputs"] == {"id": "g"}


def test_partial_keeps_outputs_for_the_next_attempt(tmp_path: Path):
    state = DemoState(tmp_path / "state.json", "{}")
    first = state.run("audit", lambda prior: {"a": "ok", "_partial": "site b unavailable"})
    assert first.status == "partial" and first.error == "site b unavailable"
    second = state.run("audit", lambda prior: {**prior, "b": "ok"})
    assert second.status == "done" and second.outputs == {"a": "ok", "b": "ok"}


def test_other_settings_refuse_to_resume(tmp_path: Path):
    DemoState(tmp_path / "state.json", '{"profile": "tiny"}')
    with pytest.raises(ConfigError, match="other settings"):
        DemoState(tmp_path / "state.json", '{"profile": "cpu"}')
