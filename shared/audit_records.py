"""What the hub asks of a site in ``query.audit`` and what the site answers: Flower records.

Request (hub → site): the :class:`AuditRequest` as JSON in the ConfigRecord
``audit.request``: the generator's registry id, the sha256 of its weights file
(the manifest's ``files["generator.safetensors"].sha256``), the audit settings
and the chosen sites. No weights travel in the message: the site pulls the
bundle from the hub's registry itself, verifies its signature against the
consortium keyring and checks that sha256 before it audits anything, so a hub
cannot ask a site about weights nobody registered (``site_node.flower``).
:func:`request_from_records` refuses a request that carries any ArrayRecord.

Reply (site → hub): the :class:`~shared.artifacts.audit.AuditReport` the site
built and signed with its site key, as the exact bytes it signed
(:func:`~shared.artifacts.audit.sign_audit_report`), in the ConfigRecord
``audit.report``. The hub keeps those bytes verbatim and hands them to the
registry. The report model forbids extra fields and caps every list, so no
pixel or patient id can ride along; :func:`report_from_records` refuses a reply
that holds any other record.

A refusal under the site's query policy is a reply error with code
:data:`REFUSED_CODE` whose reason names the rule, the value and the limit.

:func:`summary_to_records` / :func:`summary_from_records` keep the flat
(metrics + strings) form of a summary for callers that exchange bare summaries.

Shared by ``site_node.flower`` and ``hub.flower.audit_server``.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, MetricRecord, RecordDict
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.artifacts.audit import AuditReport, AuditSettings, AuditSummary, parse_audit_report
from shared.errors import ArtifactError, FederationError

__all__ = [
    "FAILED_CODE",
    "MAX_REPORT_BYTES",
    "MESSAGE_TYPE",
    "META_RECORD",
    "METRICS_RECORD",
    "REFUSED_CODE",
    "REPORT_RECORD",
    "REQUEST_RECORD",
    "SITE_KEY",
    "SKIPPED_CODE",
    "AuditRequest",
    "report_from_records",
    "report_to_records",
    "request_from_records",
    "request_to_records",
    "summary_from_records",
    "summary_to_records",
]

MESSAGE_TYPE = "query.audit"
REQUEST_RECORD = "audit.request"
REPORT_RECORD = "audit.report"
METRICS_RECORD = "audit.metrics"
META_RECORD = "audit.meta"
SITE_KEY = "site_id"  # in audit.meta, beside the summary's fields
#: Reply error codes: the task failed at the site; the site was not among the chosen ones;
#: the site refused the request under its query policy (shared by ``evaluate.classifier``).
FAILED_CODE = 1001
SKIPPED_CODE = 1002
REFUSED_CODE = 1003
#: The largest signed report a hub accepts in a reply (a report is a few KiB).
MAX_REPORT_BYTES = 256 * 2**10
_SHA256 = r"^[0-9a-f]{64}$"
_SEP = "/"


class AuditRequest(BaseModel):
    """What a site needs to audit a generator against its own data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator_id: str = Field(pattern=_SHA256, description="the generator's registry id")
    weights_sha256: str = Field(
        pattern=_SHA256, description="sha256 of the bundle's generator.safetensors"
    )
    settings: AuditSettings = Field(default_factory=AuditSettings)
    sites: list[str] | None = Field(
        default=None, description="site ids that should audit (None: every site asked)"
    )

    def addressed_to(self, site_id: str) -> bool:
        """Whether ``site_id`` is one of the chosen sites."""
        return self.sites is None or site_id in self.sites


def request_to_records(request: AuditRequest) -> RecordDict:
    """Request records: the request's JSON only (never weights)."""
    return RecordDict({REQUEST_RECORD: ConfigRecord({"json": request.model_dump_json()})})


def request_from_records(content: RecordDict) -> AuditRequest:
    """The request of a ``query.audit`` message; FederationError if malformed or carrying arrays."""
    if content.array_records:
        raise FederationError(
            f"{MESSAGE_TYPE}: the request carries arrays {sorted(content.array_records)}; "
            "a site audits only registered generators, named by registry id and sha256"
        )
    if REQUEST_RECORD not in content.config_records:
        raise FederationError(f"{MESSAGE_TYPE}: no ConfigRecord {REQUEST_RECORD!r}")
    try:
        return AuditRequest.model_validate_json(str(content.config_records[REQUEST_RECORD]["json"]))
    except (KeyError, ValueError) as error:
        raise FederationError(f"{MESSAGE_TYPE}: invalid request: {error}") from error


def report_to_records(signed_report: bytes) -> RecordDict:
    """Reply records: the site-signed AuditReport bytes, unchanged."""
    return RecordDict({REPORT_RECORD: ConfigRecord({"json": signed_report})})


def report_from_records(content: RecordDict) -> tuple[bytes, AuditReport]:
    """The signed report bytes of a reply, and the report they hold (signature not checked).

    Raises FederationError for any other record, a missing or oversized report, or
    bytes that are not an AuditReport.
    """
    names = set(content.keys())
    if names != {REPORT_RECORD} or REPORT_RECORD not in content.config_records:
        raise FederationError(
            f"{MESSAGE_TYPE} reply holds records {sorted(names)}; expected [{REPORT_RECORD!r}]"
        )
    data = content.config_records[REPORT_RECORD].get("json")
    if not isinstance(data, bytes):
        raise FederationError(f"{MESSAGE_TYPE} reply: {REPORT_RECORD!r} holds no report bytes")
    if len(data) > MAX_REPORT_BYTES:
        raise FederationError(
            f"{MESSAGE_TYPE} reply: report of {len(data)} bytes > {MAX_REPORT_BYTES} allowed"
        )
    try:
        return data, parse_audit_report(data, where=f"{MESSAGE_TYPE} reply")
    except ArtifactError as error:
        raise FederationError(str(error)) from error


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
