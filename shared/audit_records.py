"""What the hub asks of a site in ``query.audit`` and what the site answers: Flower records.

Request (hub → site): the :class:`AuditRequest` (generator id and config, audit
settings, sample seed) as JSON in the ConfigRecord ``audit.request``, and the
generator's G_ema weights in the ArrayRecord ``audit.generator``. Weights are a
published artifact; nothing of any site's data travels this way.

Reply (site → hub): the site's :class:`~shared.artifacts.audit.AuditSummary`,
flattened into typed records — numbers (counts, quantiles, p-values, histogram
edges and counts) in the MetricRecord ``audit.metrics``, and short strings and
booleans (names, the verdict's rule and reasons, flags) in the ConfigRecord
``audit.meta``. No ArrayRecord, no pixel, no patient id: the summary model
forbids anything else, and :func:`summary_from_records` refuses a reply that
holds more than these two records. Keys are the summary's field paths joined by
``/`` (quantile names hold dots).

Shared by ``site_node.flower.audit_task`` and ``hub.flower.audit_server``.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, MetricRecord, RecordDict
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.artifacts.audit import AuditSettings, AuditSummary
from shared.errors import FederationError
from shared.networks.generator import GeneratorConfig

__all__ = [
    "FAILED_CODE",
    "GENERATOR_RECORD",
    "MESSAGE_TYPE",
    "META_RECORD",
    "METRICS_RECORD",
    "REQUEST_RECORD",
    "SITE_KEY",
    "SKIPPED_CODE",
    "AuditRequest",
    "request_from_records",
    "request_to_records",
    "summary_from_records",
    "summary_to_records",
]

MESSAGE_TYPE = "query.audit"
REQUEST_RECORD = "audit.request"
GENERATOR_RECORD = "audit.generator"
METRICS_RECORD = "audit.metrics"
META_RECORD = "audit.meta"
SITE_KEY = "site_id"  # in audit.meta, beside the summary's fields
#: Reply error codes: the task failed at the site; the site was not among the chosen ones.
FAILED_CODE = 1001
SKIPPED_CODE = 1002
_SEP = "/"


class AuditRequest(BaseModel):
    """What a site needs to audit a generator against its own data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator_id: str = Field(min_length=1, max_length=128)
    generator_config: GeneratorConfig
    settings: AuditSettings = Field(default_factory=AuditSettings)
    sites: list[str] | None = Field(
        default=None, description="site ids that should audit (None: every site asked)"
    )

    def addressed_to(self, site_id: str) -> bool:
        """Whether ``site_id`` is one of the chosen sites."""
        return self.sites is None or site_id in self.sites


def request_to_records(request: AuditRequest, weights: Any) -> RecordDict:
    """Request records; ``weights`` is an ``ArrayRecord`` of G_ema's state dict."""
    return RecordDict(
        {
            REQUEST_RECORD: ConfigRecord({"json": request.model_dump_json()}),
            GENERATOR_RECORD: weights,
        }
    )


def request_from_records(content: RecordDict) -> AuditRequest:
    """The request of a ``query.audit`` message; FederationError if malformed."""
    if REQUEST_RECORD not in content.config_records:
        raise FederationError(f"{MESSAGE_TYPE}: no ConfigRecord {REQUEST_RECORD!r}")
    if GENERATOR_RECORD not in content.array_records:
        raise FederationError(f"{MESSAGE_TYPE}: no ArrayRecord {GENERATOR_RECORD!r} (weights)")
    try:
        return AuditRequest.model_validate_json(str(content.config_records[REQUEST_RECORD]["json"]))
    except (KeyError, ValueError) as error:
        raise FederationError(f"{MESSAGE_TYPE}: invalid request: {error}") from error


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a JSON value by ``/``-joined path (lists of scalars are leaves)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{_SEP}{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summary_to_records(summary: AuditSummary, site_id: str) -> RecordDict:
    """Reply records: numbers in ``audit.metrics``; strings, booleans, site id in ``audit.meta``."""
    metrics, meta = MetricRecord(), ConfigRecord({SITE_KEY: site_id})
    for path, value in _flatten(summary.model_dump(mode="json")).items():
        if value is None or value == []:
            continue  # restored from the model's defaults
        numeric = (
            all(_is_number(v) for v in value) if isinstance(value, list) else _is_number(value)
        )
        if numeric:
            metrics[path] = value
        else:
            meta[path] = value
    return RecordDict({METRICS_RECORD: metrics, META_RECORD: meta})


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(_SEP)
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def summary_from_records(content: RecordDict) -> tuple[str, AuditSummary]:
    """The site's id and summary from a reply; FederationError for any other record or field."""
    names = set(content.keys())
    if names != {METRICS_RECORD, META_RECORD}:
        raise FederationError(f"{MESSAGE_TYPE} reply holds records {sorted(names)}; expected "
                              f"{sorted({METRICS_RECORD, META_RECORD})}")  # fmt: skip
    flat: dict[str, Any] = dict(content.metric_records[METRICS_RECORD])
    flat.update(dict(content.config_records[META_RECORD]))
    site_id = str(flat.pop(SITE_KEY, ""))
    try:
        return site_id, AuditSummary.model_validate(_unflatten(flat))
    except ValidationError as error:
        raise FederationError(f"{MESSAGE_TYPE} reply is not an audit summary: {error}") from error
