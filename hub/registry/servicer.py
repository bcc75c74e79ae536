"""The gRPC servicer: authenticate, convert with serde, call a handler, map errors to codes.

This is the only place where radshare errors become gRPC status codes:

========================  ===================
error                     status code
========================  ===================
no verified client cert   UNAUTHENTICATED
SignatureError            UNAUTHENTICATED
PermissionDeniedError     PERMISSION_DENIED
NotFoundError             NOT_FOUND
QuotaError                RESOURCE_EXHAUSTED (BusyError: + ``radshare-retry-after-ms``)
UploadInterruptedError    ABORTED (resume it)
RegistryUnavailableError  UNAVAILABLE (database missing/corrupt: restore, verify)
DataLossError             DATA_LOSS (blob missing/corrupt: re-publish, restore)
ArtifactError (others)    INVALID_ARGUMENT
RegistryError (others)    FAILED_PRECONDITION
AuditPolicyError          FAILED_PRECONDITION (names the generator, state and reason)
anything else             INTERNAL (logged)
========================  ===================
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from hub.registry import handlers
from hub.registry.auth import Caller, caller_from_auth_context
from hub.registry.handlers import HubState
from shared.artifacts.records import ArtifactKind
from shared.errors import (
    ArtifactError,
    ConfigError,
    DataLossError,
    NotFoundError,
    PermissionDeniedError,
    QuotaError,
    RadshareError,
    RegistryError,
    RegistryUnavailableError,
    SignatureError,
    UploadInterruptedError,
)
from shared.proto import radshare_hub_pb2 as pb
from shared.proto import radshare_hub_pb2_grpc as pb_grpc
from shared.proto import serde

__all__ = ["ERROR_CODES", "HubServicer", "status_code_for"]

log = logging.getLogger("radshare.hub.registry")

T = TypeVar("T")

#: radshare error class → gRPC status code (the most specific class wins).
ERROR_CODES: dict[type[Exception], grpc.StatusCode] = {
    SignatureError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    QuotaError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UploadInterruptedError: grpc.StatusCode.ABORTED,
    RegistryUnavailableError: grpc.StatusCode.UNAVAILABLE,
    DataLossError: grpc.StatusCode.DATA_LOSS,
    ArtifactError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    RegistryError: grpc.StatusCode.FAILED_PRECONDITION,
    RadshareError: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_code_for(error: Exception) -> grpc.StatusCode:
    """The status code of an error: its most specific class in ``ERROR_CODES``, else INTERNAL."""
    for cls in type(error).__mro__:
        if cls in ERROR_CODES:
            return ERROR_CODES[cls]
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, error: Exception) -> NoReturn:
    code = status_code_for(error)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("internal error in %s", type(error).__name__, exc_info=error)
        context.abort(code, "internal error (see the hub log)")
    log.info("refused with %s: %s", code.name, error)
    retry_after_s = getattr(error, "retry_after_s", None)  # BusyError: tell the client when
    if retry_after_s is not None:
        context.set_trailing_metadata(serde.retry_after_to_metadata(retry_after_s))
    context.abort(code, str(error))
    raise AssertionError("context.abort returned")  # it raises; this tells the type checker


def _call(context: grpc.ServicerContext, fn: Callable[[Caller], T]) -> T:
    """Authenticate the peer, run ``fn(caller)``, and turn errors into status codes.

    ``context.abort`` raises a bare Exception, so it is only ever called outside the try.
    """
    try:
        caller = caller_from_auth_context(context.auth_context())
        result = None if caller is None else fn(caller)
    except grpc.RpcError:
        log.info("client went away mid-call; staged bytes, if any, are kept for resume")
        raise
    except Exception as error:
        _abort(context, error)
    if caller is None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "a verified client certificate is required")
    return result  # type: ignore[return-value]


def _stream(context: grpc.ServicerContext, chunks: Iterator[Any]) -> Iterator[pb.FileChunk]:
    try:
        for chunk in chunks:
            yield serde.file_chunk_to_proto(chunk)
    except Exception as error:
        _abort(context, error)


class HubServicer(pb_grpc.RadshareHubServicer):
    """Thin adapter from the generated service to ``hub.registry.handlers``."""

    def __init__(self, state: HubState):
        self.state = state

    def _publish(
        self,
        requests: Iterable[pb.PublishRequest],
        context: grpc.ServicerContext,
        only_kind: ArtifactKind | None,
    ) -> pb.PublishResponse:
        def run(caller: Caller) -> pb.PublishResponse:
            items = serde.publish_items_from_proto(requests)
            result = handlers.publish(caller, items, self.state, only_kind=only_kind)
            return serde.publish_result_to_proto(result)

        return _call(context, run)

    def PublishArtifact(self, request_iterator, context):
        return self._publish(request_iterator, context, None)

    def PublishGenerator(self, request_iterator, context):
        return self._publish(request_iterator, context, ArtifactKind.GENERATOR)

    def GetUploadStatus(self, request, context):
        return _call(
            context,
            lambda caller: serde.upload_status_to_proto(
                handlers.upload_status(caller, request.artifact_id, self.state)
            ),
        )

    def _list(
        self, request: pb.ListRequest, context: grpc.ServicerContext, only_kind: ArtifactKind | None
    ) -> pb.ListResponse:
        def run(caller: Caller) -> pb.ListResponse:
            kind = serde.kind_from_proto(request.kind)
            if only_kind is not None and kind not in (None, only_kind):
                raise ArtifactError(f"ListGenerators lists generators, not {kind}")
            found = handlers.list_artifacts(
                caller, self.state, kind=only_kind or kind, site_id=request.site_id
            )
            return pb.ListResponse(artifacts=[serde.summary_to_proto(s) for s in found])

        return _call(context, run)

    def ListArtifacts(self, request, context):
        return self._list(request, context, None)

    def ListGenerators(self, request, context):
        return self._list(request, context, ArtifactKind.GENERATOR)

    def GetManifest(self, request, context):
        def run(caller: Caller) -> pb.GetManifestResponse:
            kind = serde.kind_from_proto(request.kind)
            reply = handlers.get_manifest(caller, self.state, request.artifact_id, kind=kind)
            return serde.manifest_reply_to_proto(reply)

        return _call(context, run)

    def _get(
        self, request: pb.GetRequest, context: grpc.ServicerContext, only_kind: ArtifactKind | None
    ) -> Iterator[pb.FileChunk]:
        def run(caller: Caller) -> Iterator[Any]:
            kind = only_kind or serde.kind_from_proto(request.kind)
            artifact_id, for_synthesis, override = serde.get_request_from_proto(request)
            return handlers.get_artifact(
                caller,
                self.state,
                artifact_id,
                kind=kind,
                for_synthesis=for_synthesis,
                override_reason=override,
            )

        return _stream(context, _call(context, run))

    def GetArtifact(self, request, context):
        return self._get(request, context, None)

    def GetGenerator(self, request, context):
        return self._get(request, context, ArtifactKind.GENERATOR)

    def PullArchive(self, request, context):
        def run(caller: Caller) -> Iterator[Any]:
            archive_id, start_path, start_offset = serde.pull_archive_request_from_proto(request)
            header, chunks = handlers.pull_archive(
                caller, self.state, archive_id, start_path=start_path, start_offset=start_offset
            )
            return itertools.chain([header], chunks)

        return _stream_archive(context, _call(context, run))

    def PutAuditReport(self, request, context):
        def run(caller: Caller) -> pb.PutAuditReportResponse:
            created = handlers.put_audit_report(caller, self.state, request.report_json)
            return pb.PutAuditReportResponse(created=created)

        return _call(context, run)

    def ListAuditReports(self, request, context):
        def run(caller: Caller) -> pb.AuditReportsResponse:
            generator_id, site_id = serde.audit_reports_request_from_proto(request)
            stored = handlers.audit_report_records(
                caller, self.state, generator_id, site_id=site_id
            )
            return serde.audit_report_bytes_to_proto([r.report_json for r in stored])

        return _call(context, run)

    def AuthorizeSynthesis(self, request, context):
        def run(caller: Caller) -> pb.AuditDecisionResponse:
            decision = handlers.authorize_synthesis(
                caller, self.state, request.generator_id, request.override_reason or None
            )
            return serde.audit_decision_to_proto(decision)

        return _call(context, run)

    def ListAuditStates(self, request, context):
        def run(caller: Caller) -> pb.AuditStatesResponse:
            decisions = handlers.audit_states(caller, self.state, site_id=request.site_id or None)
            return serde.audit_states_to_proto(decisions)

        return _call(context, run)

    def WithdrawArtifact(self, request, context):
        def run(caller: Caller) -> pb.WithdrawResponse:
            record, created = handlers.withdraw_artifact(
                caller, self.state, request.artifact_id, request.reason
            )
            return serde.withdraw_response_to_proto(record, created)

        return _call(context, run)


def _stream_archive(
    context: grpc.ServicerContext, items: Iterator[Any]
) -> Iterator[pb.PullArchiveResponse]:
    try:
        for item in items:
            yield serde.archive_item_to_proto(item)
    except Exception as error:
        _abort(context, error)
