"""Protobuf ↔ domain records for the hub API: the only module that touches ``*_pb2`` messages.

Functions come in pairs, ``x_to_proto`` / ``x_from_proto``, as in Flower's serde.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from shared.artifacts.audit import AuditReport, parse_audit_report
from shared.artifacts.audit_state import AuditDecision, WithdrawalRecord, parse_decisions
from shared.artifacts.records import (
    ArchiveChunk,
    ArchiveHeader,
    ArtifactKind,
    ArtifactSummary,
    FileChunk,
    FileInfo,
    ManifestReply,
    PublishHeader,
    PublishItem,
    PublishResult,
    UploadStatus,
)
from shared.errors import ArtifactError
from shared.proto import radshare_hub_pb2 as pb

__all__ = [
    "RETRY_AFTER_KEY",
    "archive_item_from_proto",
    "archive_item_to_proto",
    "audit_decision_from_proto",
    "audit_decision_to_proto",
    "audit_report_bytes_to_proto",
    "audit_reports_from_proto",
    "audit_reports_request_from_proto",
    "audit_reports_request_to_proto",
    "audit_reports_to_proto",
    "audit_states_from_proto",
    "audit_states_to_proto",
    "file_chunk_from_proto",
    "file_chunk_to_proto",
    "get_request_from_proto",
    "get_request_to_proto",
    "kind_from_proto",
    "kind_to_proto",
    "manifest_reply_from_proto",
    "manifest_reply_to_proto",
    "publish_items_from_proto",
    "publish_request_to_proto",
    "publish_result_from_proto",
    "publish_result_to_proto",
    "pull_archive_request_from_proto",
    "pull_archive_request_to_proto",
    "put_audit_report_to_proto",
    "retry_after_from_metadata",
    "retry_after_to_metadata",
    "summary_from_proto",
    "summary_to_proto",
    "upload_status_from_proto",
    "upload_status_to_proto",
    "withdraw_response_from_proto",
    "withdraw_response_to_proto",
]

_KIND_TO_PROTO = {
    ArtifactKind.GENERATOR: pb.ARTIFACT_KIND_GENERATOR,
    ArtifactKind.LABELLER: pb.ARTIFACT_KIND_LABELLER,
    ArtifactKind.CLASSIFIER: pb.ARTIFACT_KIND_CLASSIFIER,
}
_KIND_FROM_PROTO = {value: kind for kind, value in _KIND_TO_PROTO.items()}


def kind_to_proto(kind: ArtifactKind | None) -> pb.ArtifactKind:
    """None → ARTIFACT_KIND_UNSPECIFIED."""
    return pb.ARTIFACT_KIND_UNSPECIFIED if kind is None else _KIND_TO_PROTO[kind]


def kind_from_proto(value: int) -> ArtifactKind | None:
    """ARTIFACT_KIND_UNSPECIFIED → None; an unknown number is an ArtifactError."""
    if value == pb.ARTIFACT_KIND_UNSPECIFIED:
        return None
    try:
        return _KIND_FROM_PROTO[pb.ArtifactKind.ValueType(value)]
    except KeyError:
        raise ArtifactError(f"field 'kind': unknown artifact kind number {value}") from None


def summary_to_proto(summary: ArtifactSummary) -> pb.ArtifactSummary:
    return pb.ArtifactSummary(
        artifact_id=summary.artifact_id,
        kind=kind_to_proto(summary.kind),
        site_id=summary.site_id,
        created=summary.created,
        published_at=summary.published_at,
        size_bytes=summary.size_bytes,
        files=[
            pb.FileInfo(name=f.name, sha256=f.sha256, size_bytes=f.size_bytes)
            for f in summary.files
        ],
        radshare_version=summary.radshare_version,
        integrity=summary.integrity,
    )


def summary_from_proto(message: pb.ArtifactSummary) -> ArtifactSummary:
    kind = kind_from_proto(message.kind)
    if kind is None:
        raise ArtifactError(f"artifact {message.artifact_id}: field 'kind' is unspecified")
    return ArtifactSummary(
        artifact_id=message.artifact_id,
        kind=kind,
        site_id=message.site_id,
        created=message.created,
        published_at=message.published_at,
        size_bytes=message.size_bytes,
        files=tuple(FileInfo(f.name, f.sha256, f.size_bytes) for f in message.files),
        radshare_version=message.radshare_version,
        integrity=message.integrity,
    )


def file_chunk_to_proto(chunk: FileChunk) -> pb.FileChunk:
    return pb.FileChunk(file_name=chunk.file_name, offset=chunk.offset, data=chunk.data)


def file_chunk_from_proto(message: pb.FileChunk) -> FileChunk:
    return FileChunk(file_name=message.file_name, offset=message.offset, data=message.data)


def publish_request_to_proto(item: PublishItem) -> pb.PublishRequest:
    if isinstance(item, PublishHeader):
        header = pb.PublishHeader(kind=kind_to_proto(item.kind), manifest_json=item.manifest_json)
        return pb.PublishRequest(header=header)
    return pb.PublishRequest(chunk=file_chunk_to_proto(item))


def publish_items_from_proto(messages: Iterable[pb.PublishRequest]) -> Iterator[PublishItem]:
    """Lazily convert a publish stream; a message with neither header nor chunk is an error."""
    for message in messages:
        which = message.WhichOneof("item")
        if which == "header":
            yield PublishHeader(kind_from_proto(message.header.kind), message.header.manifest_json)
        elif which == "chunk":
            yield file_chunk_from_proto(message.chunk)
        else:
            raise ArtifactError("publish stream: a message has neither 'header' nor 'chunk'")


def publish_result_to_proto(result: PublishResult) -> pb.PublishResponse:
    return pb.PublishResponse(artifact=summary_to_proto(result.artifact), created=result.created)


def publish_result_from_proto(message: pb.PublishResponse) -> PublishResult:
    return PublishResult(artifact=summary_from_proto(message.artifact), created=message.created)


def upload_status_to_proto(status: UploadStatus) -> pb.UploadStatusResponse:
    received = [
        pb.FileOffset(file_name=k, size_bytes=v) for k, v in sorted(status.received.items())
    ]
    return pb.UploadStatusResponse(
        artifact_id=status.artifact_id, committed=status.committed, received=received
    )


def upload_status_from_proto(message: pb.UploadStatusResponse) -> UploadStatus:
    return UploadStatus(
        artifact_id=message.artifact_id,
        committed=message.committed,
        received={r.file_name: r.size_bytes for r in message.received},
    )


def manifest_reply_to_proto(reply: ManifestReply) -> pb.GetManifestResponse:
    return pb.GetManifestResponse(
        artifact=summary_to_proto(reply.artifact),
        manifest_json=reply.manifest_json,
        signer_public_key_pem=reply.signer_public_key_pem,
    )


def manifest_reply_from_proto(message: pb.GetManifestResponse) -> ManifestReply:
    return ManifestReply(
        artifact=summary_from_proto(message.artifact),
        manifest_json=message.manifest_json,
        signer_public_key_pem=message.signer_public_key_pem,
    )


def pull_archive_request_to_proto(
    archive_id: str, start_path: str = "", start_offset: int = 0
) -> pb.PullArchiveRequest:
    return pb.PullArchiveRequest(
        archive_id=archive_id, start_path=start_path, start_offset=start_offset
    )


def pull_archive_request_from_proto(message: pb.PullArchiveRequest) -> tuple[str, str, int]:
    """``(archive_id, start_path, start_offset)``."""
    return message.archive_id, message.start_path, int(message.start_offset)


def archive_item_to_proto(item: ArchiveHeader | ArchiveChunk) -> pb.PullArchiveResponse:
    if isinstance(item, ArchiveHeader):
        header = pb.ArchiveHeader(
            archive_id=item.archive_id,
            manifest_path=item.manifest_path,
            total_bytes=item.total_bytes,
            start_path=item.start_path,
            start_offset=item.start_offset,
        )
        return pb.PullArchiveResponse(header=header)
    chunk = pb.ArchiveChunk(path=item.path, offset=item.offset, data=item.data)
    return pb.PullArchiveResponse(chunk=chunk)


def archive_item_from_proto(message: pb.PullArchiveResponse) -> ArchiveHeader | ArchiveChunk:
    """A header or a chunk; a message with neither is an ArtifactError."""
    which = message.WhichOneof("item")
    if which == "header":
        h = message.header
        return ArchiveHeader(
            h.archive_id, h.manifest_path, int(h.total_bytes), h.start_path, int(h.start_offset)
        )
    if which == "chunk":
        c = message.chunk
        return ArchiveChunk(c.path, int(c.offset), c.data)
    raise ArtifactError("PullArchive stream: a message has neither 'header' nor 'chunk'")


def put_audit_report_to_proto(report: AuditReport | bytes) -> pb.PutAuditReportRequest:
    """The report as JSON bytes (signed bytes go as they are); the hub validates them."""
    data = report if isinstance(report, bytes) else report.model_dump_json().encode()
    return pb.PutAuditReportRequest(report_json=data)


def audit_report_bytes_to_proto(reports: Sequence[bytes]) -> pb.AuditReportsResponse:
    """Stored reports as the exact bytes kept (what each site signed)."""
    return pb.AuditReportsResponse(report_json=list(reports))


def get_request_to_proto(
    artifact_id: str,
    kind: ArtifactKind | None = None,
    *,
    for_synthesis: bool = False,
    override_reason: str | None = None,
) -> pb.GetRequest:
    purpose = pb.PULL_PURPOSE_SYNTHESIS if for_synthesis else pb.PULL_PURPOSE_UNSPECIFIED
    return pb.GetRequest(
        artifact_id=artifact_id,
        kind=kind_to_proto(kind),
        purpose=purpose,
        override_reason=override_reason or "",
    )


def get_request_from_proto(message: pb.GetRequest) -> tuple[str, bool, str | None]:
    """``(artifact_id, for_synthesis, override_reason)``; an unknown purpose is an error."""
    if message.purpose not in (pb.PULL_PURPOSE_UNSPECIFIED, pb.PULL_PURPOSE_SYNTHESIS):
        raise ArtifactError(f"field 'purpose': unknown pull purpose number {message.purpose}")
    for_synthesis = message.purpose == pb.PULL_PURPOSE_SYNTHESIS
    return message.artifact_id, for_synthesis, message.override_reason or None


def audit_decision_to_proto(decision: AuditDecision) -> pb.AuditDecisionResponse:
    return pb.AuditDecisionResponse(decision_json=decision.model_dump_json().encode())


def audit_decision_from_proto(message: pb.AuditDecisionResponse) -> AuditDecision:
    [decision] = parse_decisions(
        b"[" + message.decision_json + b"]", where="AuthorizeSynthesis decision_json"
    )
    return decision


def audit_states_to_proto(decisions: Sequence[AuditDecision]) -> pb.AuditStatesResponse:
    data = "[" + ",".join(d.model_dump_json() for d in decisions) + "]"
    return pb.AuditStatesResponse(decisions_json=data.encode())


def audit_states_from_proto(message: pb.AuditStatesResponse) -> list[AuditDecision]:
    return parse_decisions(message.decisions_json, where="ListAuditStates decisions_json")


def withdraw_response_to_proto(record: WithdrawalRecord, created: bool) -> pb.WithdrawResponse:
    return pb.WithdrawResponse(withdrawal_json=record.model_dump_json().encode(), created=created)


def withdraw_response_from_proto(message: pb.WithdrawResponse) -> tuple[WithdrawalRecord, bool]:
    from pydantic import ValidationError

    try:
        record = WithdrawalRecord.model_validate_json(message.withdrawal_json)
    except ValidationError as error:
        raise ArtifactError(f"WithdrawArtifact withdrawal_json: {error.errors()[0]}") from None
    return record, message.created


def audit_reports_request_to_proto(
    generator_id: str, site_id: str | None = None
) -> pb.AuditReportsRequest:
    return pb.AuditReportsRequest(generator_id=generator_id, site_id=site_id or "")


def audit_reports_request_from_proto(message: pb.AuditReportsRequest) -> tuple[str, str | None]:
    """``(generator_id, site_id)``; an empty site id is None (every site)."""
    return message.generator_id, message.site_id or None


def audit_reports_to_proto(reports: Sequence[AuditReport]) -> pb.AuditReportsResponse:
    return pb.AuditReportsResponse(report_json=[r.model_dump_json().encode() for r in reports])


def audit_reports_from_proto(message: pb.AuditReportsResponse) -> list[AuditReport]:
    """Each report validated (ArtifactError naming the field of one that is not a report)."""
    return [
        parse_audit_report(data, where=f"ListAuditReports report_json[{i}]")
        for i, data in enumerate(message.report_json)
    ]


#: Trailing-metadata key of a refusal that frees itself (BusyError): milliseconds to wait.
RETRY_AFTER_KEY = "radshare-retry-after-ms"


def retry_after_to_metadata(retry_after_s: float) -> tuple[tuple[str, str], ...]:
    """Trailing metadata telling the client to retry after ``retry_after_s`` seconds."""
    return ((RETRY_AFTER_KEY, str(max(0, round(retry_after_s * 1000)))),)


def retry_after_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """Seconds to wait before retrying, or None: the refusal is not one that frees itself."""
    for key, value in metadata or ():
        if key == RETRY_AFTER_KEY:
            try:
                return max(0.0, int(value) / 1000.0)
            except ValueError:
                return None
    return None
