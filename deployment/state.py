"""The demo's resumable record: one JSON file saying which step is done, failed or blocked.

``<out>/state.json`` is rewritten atomically after every change::

    {"schema_version": 1, "config_sha256": "...", "steps": {
        "site.a.ingest": {"status": "done", "elapsed_s": 12.3, "outputs": {...}},
        "hub.federated-audit": {"status": "partial", "outputs": {"a": {...}},
                                "error": "site b unavailable"}}}

A rerun with the same configuration skips ``done`` steps and runs the others again;
``partial`` steps keep their outputs so that only what is missing is redone.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.errors import ConfigError
from shared.fileio import atomic_write_text

__all__ = ["DemoState", "StepRecord", "StepStatus"]

StepStatus = Literal["running", "done", "partial", "failed", "blocked"]
STATE_SCHEMA_VERSION = 1


class StepRecord(BaseModel):
    """What happened to one step: status, seconds, outputs (paths, numbers), error text."""

    status: StepStatus
    elapsed_s: float = 0.0
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    attempts: int = 0


class _StateFile(BaseModel):
    schema_version: int = STATE_SCHEMA_VERSION
    config_sha256: str
    steps: dict[str, StepRecord] = Field(default_factory=dict)


class DemoState:
    """Load, query and update ``state.json``; every update is written at once, atomically.

    Steps of different sites may run in threads at once: updates are serialised.
    """

    def __init__(self, path: Path, config_json: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        digest = hashlib.sha256(config_json.encode()).hexdigest()
        if path.is_file():
            self._data = _StateFile.model_validate_json(path.read_text())
            if self._data.config_sha256 != digest:
                raise ConfigError(
                    f"{path}: written by a demo with other settings; use a new --out "
                    f"or --fresh (config sha256 {self._data.config_sha256[:12]} != {digest[:12]})"
                )
        else:
            self._data = _StateFile(config_sha256=digest)
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, self._data.model_dump_json(indent=2))

    def get(self, step: str) -> StepRecord | None:
        """The record of ``step``, or None if it never started."""
        return self._data.steps.get(step)

    def done(self, step: str) -> bool:
        """Whether ``step`` completed (a rerun skips it)."""
        record = self.get(step)
        return record is not None and record.status == "done"

    def outputs(self, step: str) -> dict[str, Any]:
        """The outputs ``step`` recorded (empty if none)."""
        record = self.get(step)
        return dict(record.outputs) if record is not None else {}

    def set(self, step: str, record: StepRecord) -> None:
        """Record ``step`` and save."""
        with self._lock:
            self._data.steps[step] = record
            self._save()

    def steps(self) -> dict[str, StepRecord]:
        """Every recorded step, in the order they first ran."""
        return dict(self._data.steps)

    def run(
        self,
        step: str,
        action: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        needs: tuple[str, ...] = (),
    ) -> StepRecord:
        """Run ``action(previous_outputs)`` unless ``step`` is done or a need is not done.

        ``action`` returns the step's outputs; raising marks it failed (the error text is
        kept for the report). A returned ``{"_partial": "why"}`` marks it partial.
        """
        if self.done(step):
            return self._data.steps[step]
        missing = [need for need in needs if not self.done(need)]
        previous = self.get(step)
        if missing:
            record = StepRecord(status="blocked", error=f"needs {', '.join(missing)}")
            self.set(step, record)
            return record
        attempts = (previous.attempts if previous else 0) + 1
        prior_outputs = dict(previous.outputs) if previous else {}
        self.set(step, StepRecord(status="running", outputs=prior_outputs, attempts=attempts))
        started = time.monotonic()
        try:
            outputs = action(prior_outputs)
        except Exception as error:
            record = StepRecord(
                status="failed",
                elapsed_s=time.monotonic() - started,
                outputs=prior_outputs,
                error=f"{type(error).__name__}: {error}",
                attempts=attempts,
            )
        else:
            partial = outputs.pop("_partial", None)
            record = StepRecord(
                status="partial" if partial else "done",
                elapsed_s=time.monotonic() - started,
                outputs=outputs,
                error=partial,
                attempts=attempts,
            )
        self.set(step, record)
        return record


def config_json(config: BaseModel) -> str:
    """The canonical JSON of a configuration (what the state's sha256 is taken of)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)
