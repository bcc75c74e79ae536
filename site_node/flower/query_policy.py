"""The site's query policy and its append-only query log: a site is no oracle.

    policy = QueryPolicy.from_node_config(context.node_config)
    queries = QueryLog(work_dir / QUERY_LOG_FILE)
    check_policy(policy, query, queries.entries())  # QueryRefusedError before any work
    queries.check_and_accept(policy, query)          # again, under the log's lock
    ...                                              # audit / evaluate
    queries.record(query, "answered", duration_s=12.3)

Every federated query the site's ClientApp receives is written to
``<work-dir>/query-log.jsonl``, one JSON line per event, appended with
``O_APPEND`` and ``fsync``: ``accepted`` when it passes the policy (before any
work), then ``answered`` or ``failed`` with its duration; ``refused`` with the
rule, value and limit; ``skipped`` when the site was not among the chosen ones.
A line holds the time, message type, artifact id, weights sha256, requested
samples, decision, reason and seconds, never a pixel or a patient id. The daily
caps are counted from the ``accepted`` lines of the last 24 hours, so they hold
across restarts and across the ClientApp processes a SuperNode starts (an
``flock`` on the log serialises check and append).

Caps (node config, defaults in :class:`QueryPolicy`): samples (and real reference
images) per audit, permutations per audit, audits and evaluations per artifact in any
24 hours, queries in total in any 24 hours.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError, QueryRefusedError

__all__ = [
    "QUERY_LOG_FILE",
    "Decision",
    "Query",
    "QueryLog",
    "QueryLogEntry",
    "QueryPolicy",
    "check_audit_effort",
    "check_policy",
]

log = logging.getLogger("radshare.site.flower")

QUERY_LOG_FILE = "query-log.jsonl"
WINDOW = timedelta(hours=24)
Decision = Literal["accepted", "answered", "failed", "refused", "skipped"]


@dataclass(frozen=True)
class QueryPolicy:
    """Caps on what the hub may ask; node-config keys are the field names with ``-``."""

    max_audit_samples: int = 5_000
    max_audit_permutations: int = 100_000
    max_audits_per_artifact_per_day: int = 3
    max_evaluations_per_artifact_per_day: int = 10
    max_queries_per_day: int = 50
    allow_federated_labeller: bool = False

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> QueryPolicy:
        """The policy from node-config keys (``max-audit-samples=5000`` ...); defaults otherwise.

        Raises ConfigError naming the key and value for a negative or non-integer cap.
        """
        values: dict[str, object] = {}
        for item in fields(cls):
            key = item.name.replace("_", "-")
            if key not in node_config:
                continue
            raw = node_config[key]
            if item.type == "bool":
                values[item.name] = str(raw).strip().lower() in ("1", "true", "yes", "on")
                continue
            try:
                number = int(str(raw))
            except ValueError:
                raise ConfigError(f"node config {key}={raw!r}: not an integer") from None
            if number < 0:
                raise ConfigError(f"node config {key}={raw!r}: must be >= 0")
            values[item.name] = number
        return cls(**values)  # type: ignore[arg-type]


class QueryLogEntry(BaseModel):
    """One line of the query log (no pixel, no patient id: ids, counts and reasons only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time: datetime
    message_type: str = Field(max_length=64)
    artifact_id: str | None = Field(default=None, max_length=128)
    weights_sha256: str | None = Field(default=None, max_length=64)
    requested_samples: int | None = None
    decision: Decision
    reason: str = Field(default="", max_length=500)
    duration_s: float = Field(default=0.0, ge=0)


@dataclass(frozen=True)
class Query:
    """What a request asks, as the policy sees it (before any work).

    ``artifact_id`` is what the per-artifact cap counts and the log shows: the
    registry id, ``train-real`` for the real-data baseline that needs no
    artifact, or ``inline`` for a federated-labeller validation round.
    """

    message_type: str
    kind: Literal["audit", "evaluation"]
    artifact_id: str
    weights_sha256: str | None = None
    requested_samples: int | None = None


class QueryLog:
    """The append-only JSON-lines query log of one site (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, entry: QueryLogEntry) -> None:
        """Append one line with O_APPEND and fsync (the file is created 0640)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (entry.model_dump_json() + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[QueryLogEntry]:
        """Every readable line, oldest first; a torn or foreign line is skipped with a warning."""
        if not self.path.is_file():
            return []
        out = []
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    out.append(QueryLogEntry.model_validate_json(raw))
                except ValidationError:
                    log.warning("%s line %d: not a query-log entry; skipped", self.path, number)
        return out

    def record(self, query: Query, decision: Decision, reason: str = "", *,
               duration_s: float = 0.0) -> None:  # fmt: skip
        """Append the entry of ``query`` with ``decision``."""
        self.append(
            QueryLogEntry(
                time=datetime.now(UTC),
                message_type=query.message_type,
                artifact_id=query.artifact_id,
                weights_sha256=query.weights_sha256,
                requested_samples=query.requested_samples,
                decision=decision,
                reason=reason[:500],
                duration_s=round(max(duration_s, 0.0), 3),
            )
        )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def check_and_accept(self, policy: QueryPolicy, query: Query) -> None:
        """QueryRefusedError if ``query`` breaks a cap, else log it as accepted; under one lock.

        The caller logs the refusal (:meth:`record`) with the reply it sends.
        """
        with self._locked():
            check_policy(policy, query, self.entries())
            self.record(query, "accepted")


def check_audit_effort(policy: QueryPolicy, num_permutations: int, reference_samples: int) -> None:
    """QueryRefusedError if an audit asks for more permutations or real baseline images than
    the policy allows (compute a hub could otherwise demand at will)."""
    if num_permutations > policy.max_audit_permutations:
        raise QueryRefusedError(
            "max-audit-permutations",
            f"{num_permutations} permutations requested > limit {policy.max_audit_permutations}",
        )
    if reference_samples > policy.max_audit_samples:
        raise QueryRefusedError(
            "max-audit-samples",
            f"{reference_samples} reference images requested > limit {policy.max_audit_samples}",
        )


def _accepted_since(entries: list[QueryLogEntry], since: datetime) -> list[QueryLogEntry]:
    return [e for e in entries if e.decision == "accepted" and e.time >= since]


def check_policy(
    policy: QueryPolicy, query: Query, entries: list[QueryLogEntry], *, now: datetime | None = None
) -> None:
    """QueryRefusedError naming the rule, the value and the limit, if ``query`` breaks a cap."""
    samples = query.requested_samples
    if query.kind == "audit" and samples is not None and samples > policy.max_audit_samples:
        raise QueryRefusedError(
            "max-audit-samples",
            f"{samples} samples requested > limit {policy.max_audit_samples}",
        )
    recent = _accepted_since(entries, (now or datetime.now(UTC)) - WINDOW)
    if len(recent) >= policy.max_queries_per_day:
        raise QueryRefusedError(
            "max-queries-per-day",
            f"{len(recent)} queries answered in the last 24 h; limit {policy.max_queries_per_day}",
        )
    limit = (
        policy.max_audits_per_artifact_per_day
        if query.kind == "audit"
        else policy.max_evaluations_per_artifact_per_day
    )
    same = [
        e for e in recent
        if e.message_type == query.message_type and e.artifact_id == query.artifact_id
    ]  # fmt: skip
    if len(same) >= limit:
        rule = f"max-{'audits' if query.kind == 'audit' else 'evaluations'}-per-artifact-per-day"
        raise QueryRefusedError(
            rule,
            f"{query.message_type} of {query.artifact_id[:16]}: {len(same)} in the last 24 h; "
            f"limit {limit}",
        )
