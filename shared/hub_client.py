"""The hub's gRPC client: ``radshare-site publish``, ``radshare-hub list/pull/pull-archive``.

Speaks mTLS with a certificate issued by the consortium CA (``radshare-hub certs``).
Uploads are resumable: before each attempt the client asks the hub how many
bytes of each file it already holds (``GetUploadStatus``) and streams only the
rest; a broken connection (UNAVAILABLE) or an interrupted upload (ABORTED) is
retried with exponential backoff. Errors come back as radshare errors whose
``__cause__`` is the ``grpc.RpcError`` (with its status code).

Example::

    tls = ClientTLS.from_dir("certs", "site:a")
    with HubClient("127.0.0.1:50051", tls) as hub:
        result = hub.publish_bundle(Path("runs/a1/bundle"))
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from shared.artifacts.archive import (
    STAGING_ID_FILE,
    ArchiveReceiver,
    PullProgress,
    resume_point,
    verify_staged_archive,
)
from shared.artifacts.audit import AuditReport
from shared.artifacts.audit_state import AuditDecision, WithdrawalRecord
from shared.artifacts.keyring import TrustedKey, resolve_signer_key
from shared.artifacts.records import (
    ArchiveHeader,
    ArtifactKind,
    ArtifactSummary,
    FileChunk,
    ManifestReply,
    PublishHeader,
    PublishItem,
    PublishResult,
    UploadStatus,
)
from shared.artifacts.signing import artifact_id_of, parse_json_object, verify_body
from shared.errors import (
    ArtifactError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    QuotaError,
    RadshareError,
    RegistryError,
    SignatureError,
    UploadInterruptedError,
)
from shared.fileio import safe_file_name
from shared.proto import radshare_hub_pb2 as pb
from shared.proto import radshare_hub_pb2_grpc as pb_grpc
from shared.proto import serde
from shared.tls_diagnosis import check_issued_by, tls_failure

__all__ = ["ClientTLS", "HubClient", "error_from_rpc", "identity_file_stem"]

log = logging.getLogger("radshare.hub_client")

_MANIFEST_FILE = "manifest.json"
_SIGNER_KEY_FILE = "signer.pub"
_MAX_MESSAGE_BYTES = 64 * 2**20
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
_HEX = frozenset("0123456789abcdef")
_RESERVED_NAMES = frozenset({_MANIFEST_FILE, _SIGNER_KEY_FILE})
_CODE_ERRORS: dict[grpc.StatusCode, type[RadshareError]] = {
    grpc.StatusCode.UNAUTHENTICATED: SignatureError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaError,
    grpc.StatusCode.ABORTED: UploadInterruptedError,
    grpc.StatusCode.INVALID_ARGUMENT: ArtifactError,
}


def identity_file_stem(identity: str) -> str:
    """File stem of an identity's certificate and key: ``site:a`` → ``site-a``."""
    return identity.replace(":", "-")


@dataclass(frozen=True)
class ClientTLS:
    """The consortium CA certificate, and this client's certificate and key (PEM files)."""

    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def from_dir(cls, folder: Path | str, identity: str) -> ClientTLS:
        """``<folder>/ca.crt`` and ``<folder>/<stem>.crt|.key`` (``radshare-hub certs`` layout)."""
        folder, stem = Path(folder), identity_file_stem(identity)
        return cls(folder / "ca.crt", folder / f"{stem}.crt", folder / f"{stem}.key")

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials; ConfigError naming a missing file."""
        try:
            ca, key, cert = (p.read_bytes() for p in (self.ca_cert, self.key, self.cert))
        except OSError as error:
            raise ConfigError(f"cannot read TLS material: {error}") from error
        check_issued_by(ca, cert, ca_path=self.ca_cert, cert_path=self.cert)
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )


def error_from_rpc(error: grpc.RpcError, what: str) -> RadshareError:
    """A radshare error for a failed call (class by status code), to ``raise ... from error``."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    tls = tls_failure(details or "") if code is grpc.StatusCode.UNAVAILABLE else None
    if tls is not None:  # a refused handshake is no network outage: say why, never retry
        return RegistryError(f"TLS handshake with the hub failed ({what}): {tls}")
    cls = _CODE_ERRORS.get(code, RegistryError)
    return cls(f"hub refused {what}: {code.name}: {details}")


def _retryable(error: grpc.RpcError) -> bool:
    """UNAVAILABLE or ABORTED, but not a refused TLS handshake (retrying cannot fix that)."""
    details = error.details() if isinstance(error, grpc.Call) else ""
    return error.code() in _RETRYABLE and tls_failure(details or "") is None


class _Guarded:
    """Wraps a request iterator and keeps the exception it raised.

    gRPC swallows an exception raised while iterating requests and reports only
    ``UNKNOWN: Exception iterating requests!``; keeping it lets the caller raise
    the real cause (an unreadable file, a failing progress callback).
    """

    def __init__(self, items: Iterator[PublishItem]):
        self._items = items
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[PublishItem]:
        try:
            yield from self._items
        except BaseException as error:
            self.error = error
            raise


def _trailing(error: grpc.RpcError) -> Any:
    return error.trailing_metadata() if isinstance(error, grpc.Call) else None


class _BusyBackoff:
    """Delays between retries of a busy hub: exponential, jittered, within a total wait."""

    def __init__(self, base_s: float, budget_s: float, cap_s: float = 10.0):
        self.base_s, self.budget_s, self.cap_s = max(base_s, 0.05), budget_s, cap_s
        self.attempts, self.waited_s = 0, 0.0

    def next_delay_s(self, retry_after_s: float, error: grpc.RpcError, what: str) -> float:
        """The next delay (at least the hub's hint); QuotaError once the budget is spent."""
        ceiling_s = min(self.cap_s, self.base_s * 2**self.attempts)
        delay_s = max(retry_after_s, random.uniform(ceiling_s / 2, ceiling_s))
        delay_s = min(delay_s, self.budget_s - self.waited_s)
        if delay_s <= 0:
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            raise QuotaError(
                f"hub refused {what}: still busy after {self.attempts + 1} attempts over "
                f"{self.waited_s:.1f} s (busy_wait_s={self.budget_s:g}): {details}"
            ) from error
        self.attempts += 1
        self.waited_s += delay_s
        return delay_s


class HubClient:
    """A connection to one hub; every method is one (retried where safe) RPC."""

    def __init__(
        self,
        target: str,
        tls: ClientTLS | grpc.ChannelCredentials,
        *,
        chunk_bytes: int = 2**20,
        retries: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 3600.0,
        server_name: str | None = None,
        busy_wait_s: float = 120.0,
    ):
        credentials = tls.credentials() if isinstance(tls, ClientTLS) else tls
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", 200),  # reconnect soon after a hub restart
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.target = target
        self.chunk_bytes = chunk_bytes
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.busy_wait_s = busy_wait_s
        self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.RadshareHubStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, rpc: Any, request: Any, what: str, timeout_s: float = 60.0) -> Any:
        """``rpc(request)``, its reply; a gRPC error becomes a RadshareError naming ``what``."""
        try:
            return rpc(request, timeout=timeout_s)
        except grpc.RpcError as error:
            raise error_from_rpc(error, what) from error

    def health(self, service: str = "") -> str:
        """Standard gRPC health of ``service`` ("" = the whole server), e.g. 'SERVING'."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service=service)
        reply = self._unary(stub.Check, request, "Health.Check", timeout_s=10.0)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    # Publishing.

    def upload_status(self, artifact_id: str) -> UploadStatus:
        """Bytes of each file the hub holds for ``artifact_id`` (or that it is committed)."""
        request = pb.UploadStatusRequest(artifact_id=artifact_id)
        reply = self._unary(self._stub.GetUploadStatus, request, "GetUploadStatus")
        return serde.upload_status_from_proto(reply)

    def publish_bundle(self, bundle_dir: Path, **kwargs: Any) -> PublishResult:
        """Upload a bundle folder (``manifest.json`` + the files it lists); see ``upload``."""
        bundle_dir = Path(bundle_dir)
        manifest_json = (bundle_dir / _MANIFEST_FILE).read_bytes()
        raw = parse_json_object(manifest_json, where=str(bundle_dir / _MANIFEST_FILE))
        files = {name: bundle_dir / name for name in raw.get("files", {})}
        return self.upload(manifest_json, files, **kwargs)

    def upload(
        self,
        manifest_json: bytes,
        files: Mapping[str, Path],
        *,
        on_chunk: Callable[[str, int], None] | None = None,
    ) -> PublishResult:
        """Publish a signed manifest and its files, resuming after broken connections.

        Generators go through ``PublishGenerator``, other kinds through
        ``PublishArtifact``. ``on_chunk(file_name, offset)`` is called before each
        chunk is sent (progress bars, fault-injection tests). The hub verifies
        everything; this method sends bytes as they are. A refusal that frees itself
        (RESOURCE_EXHAUSTED with a retry hint: slots busy, staged quota full) is retried
        with jittered exponential backoff for at most ``busy_wait_s`` seconds, then
        raised as a QuotaError saying how long it waited; ``retries=0`` retries nothing.
        """
        raw = parse_json_object(manifest_json, where="manifest.json")
        artifact_id = artifact_id_of(raw)
        kind = ArtifactKind(raw["kind"]) if raw.get("kind") in set(ArtifactKind) else None
        rpc = (
            self._stub.PublishGenerator
            if kind is ArtifactKind.GENERATOR
            else self._stub.PublishArtifact
        )
        attempt, busy = 0, _BusyBackoff(self.backoff_s, self.busy_wait_s)
        while True:
            items: _Guarded | None = None
            try:
                status = serde.upload_status_from_proto(
                    self._stub.GetUploadStatus(
                        pb.UploadStatusRequest(artifact_id=artifact_id), timeout=60.0
                    )
                )
                offsets = None if status.committed else status.received
                items = _Guarded(
                    self._items(PublishHeader(kind, manifest_json), files, offsets, on_chunk)
                )
                reply = rpc(map(serde.publish_request_to_proto, items), timeout=self.timeout_s)
                return serde.publish_result_from_proto(reply)
            except grpc.RpcError as error:
                if (
                    items is not None and items.error is not None
                ):  # our own side failed (a file, a callback)
                    raise items.error from error
                what = f"publish of {artifact_id[:12]}…"
                retry_after_s = serde.retry_after_from_metadata(_trailing(error))
                if retry_after_s is not None and self.retries > 0:
                    delay = busy.next_delay_s(retry_after_s, error, what)
                elif _retryable(error) and attempt < self.retries:
                    delay = min(self.backoff_s * 2**attempt, 5.0)
                    attempt += 1
                else:
                    raise error_from_rpc(error, what) from error
                log.warning(
                    "publish %s: %s (%s); retrying in %.1f s",
                    artifact_id[:12],
                    error.code().name,
                    error.details(),
                    delay,
                )
                time.sleep(delay)

    def _items(
        self,
        header: PublishHeader,
        files: Mapping[str, Path],
        offsets: Mapping[str, int] | None,
        on_chunk: Callable[[str, int], None] | None,
    ) -> Iterator[PublishItem]:
        yield header
        if offsets is None:  # already committed: the header alone gets the summary back
            return
        for name, path in sorted(files.items()):
            offset = offsets.get(name, 0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                while block := handle.read(self.chunk_bytes):
                    if on_chunk is not None:
                        on_chunk(name, offset)
                    yield FileChunk(name, offset, block)
                    offset += len(block)

    # Reading.

    def list(
        self, kind: ArtifactKind | None = None, site_id: str | None = None
    ) -> list[ArtifactSummary]:
        """Published artifacts (ListGenerators when ``kind`` is GENERATOR, else ListArtifacts)."""
        request = pb.ListRequest(kind=serde.kind_to_proto(kind), site_id=site_id or "")
        rpc = (
            self._stub.ListGenerators
            if kind is ArtifactKind.GENERATOR
            else self._stub.ListArtifacts
        )
        reply = self._unary(rpc, request, "list")
        return [serde.summary_from_proto(s) for s in reply.artifacts]

    def get_manifest(self, artifact_id: str, kind: ArtifactKind | None = None) -> ManifestReply:
        """An artifact's signed manifest (id or unique prefix) and the key it verified with."""
        request = pb.GetRequest(artifact_id=artifact_id, kind=serde.kind_to_proto(kind))
        reply = self._unary(self._stub.GetManifest, request, f"GetManifest {artifact_id}")
        return serde.manifest_reply_from_proto(reply)

    # Audit reports.

    def put_audit_report(self, report: AuditReport | bytes) -> bool:
        """Store a memorisation audit report at the hub (operators); False if already stored.

        ``report``: a site's signed report bytes (sent as they are; the hub verifies the
        signature against its keyring and stores these bytes), or an unsigned legacy
        report. The hub keeps every report (a re-audit adds one). Its ``generator_id``
        must name a published generator (NotFoundError otherwise).
        """
        what = "PutAuditReport" if isinstance(report, bytes) else (
            f"PutAuditReport {report.generator_id[:12]} site {report.site_id}"
        )  # fmt: skip
        request = serde.put_audit_report_to_proto(report)
        return bool(self._unary(self._stub.PutAuditReport, request, what).created)

    def audit_report_bytes(
        self, generator_id: str, site_id: str | None = None
    ) -> builtins.list[bytes]:
        """A generator's reports as the exact bytes the hub stores (to verify), newest first."""
        return list(self._list_audit_reports(generator_id, site_id).report_json)

    def _list_audit_reports(self, generator_id: str, site_id: str | None) -> Any:
        """The ``ListAuditReports`` reply: a generator's stored report bytes (one site's)."""
        request = serde.audit_reports_request_to_proto(generator_id, site_id)
        return self._unary(self._stub.ListAuditReports, request, f"ListAuditReports {generator_id}")

    # Audit policy and withdrawal.

    def authorize_synthesis(
        self, generator_id: str, override_reason: str | None = None
    ) -> AuditDecision:
        """The hub's audit decision for synthesis (operators); refused: RegistryError naming why.

        An override reason lets an overridable refusal through; the hub records it.
        """
        request = pb.AuthorizeSynthesisRequest(
            generator_id=generator_id, override_reason=override_reason or ""
        )
        what = f"synthesis with generator {generator_id}"
        reply = self._unary(self._stub.AuthorizeSynthesis, request, what)
        return serde.audit_decision_from_proto(reply)

    def audit_states(self, site_id: str | None = None) -> builtins.list[AuditDecision]:
        """Every generator's audit decision and latest override (operators, auditors)."""
        request = pb.AuditStatesRequest(site_id=site_id or "")
        reply = self._unary(self._stub.ListAuditStates, request, "ListAuditStates")
        return serde.audit_states_from_proto(reply)

    def withdraw(self, artifact_id: str, reason: str) -> tuple[WithdrawalRecord, bool]:
        """Withdraw an artifact (operators: any; sites: their own); ``(record, created)``."""
        request = pb.WithdrawRequest(artifact_id=artifact_id, reason=reason)
        reply = self._unary(self._stub.WithdrawArtifact, request, f"withdrawal of {artifact_id}")
        return serde.withdraw_response_from_proto(reply)

    def audit_reports(
        self, generator_id: str, site_id: str | None = None
    ) -> builtins.list[AuditReport]:
        """A generator's audit reports (id or 8+ hex prefix), newest first (operators, auditors)."""
        return serde.audit_reports_from_proto(self._list_audit_reports(generator_id, site_id))

    def pull(
        self,
        artifact_id: str,
        out_dir: Path,
        kind: ArtifactKind | None = None,
        *,
        trusted: TrustedKey,
        for_synthesis: bool = False,
        override_reason: str | None = None,
    ) -> Path:
        """Download a bundle into ``out_dir`` (must not exist); verifies hashes and signature.

        ``trusted``: the consortium keyring (``ConsortiumKeyring``) in which the signer
        is looked up by the manifest's ``site_id``, or one pinned key; the key the hub
        sends along is never used to verify. Every file name is checked before anything
        is written (one plain name, no ``..``, no separator, no NUL).

        ``for_synthesis``: the hub applies its audit policy first (refused: RegistryError
        naming the reason, nothing written), letting an overridable refusal through with
        ``override_reason`` (recorded at the hub).

        Writes the manifest as published, every file, and ``signer.pub`` (the key the hub
        says it verified with: informative only), then renames the folder into place.
        """
        out_dir = Path(out_dir)
        if out_dir.exists():
            raise ConfigError(f"{out_dir}: already exists; pull never overwrites")
        reply = self.get_manifest(artifact_id, kind)
        where = f"manifest of {artifact_id}"
        raw = parse_json_object(reply.manifest_json, where=where)
        site_id = str(raw.get("site_id"))
        verify_body(raw, resolve_signer_key(trusted, site_id), where=f"{where} (site {site_id!r})")
        _check_file_names(raw.get("files", {}), where)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
        try:
            self._download(
                reply,
                raw.get("files", {}),
                tmp,
                for_synthesis=for_synthesis,
                override_reason=override_reason,
            )
            (tmp / _MANIFEST_FILE).write_bytes(reply.manifest_json)
            (tmp / _SIGNER_KEY_FILE).write_bytes(reply.signer_public_key_pem)
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out_dir

    def _download(
        self,
        reply: ManifestReply,
        declared: Mapping[str, Any],
        folder: Path,
        *,
        for_synthesis: bool = False,
        override_reason: str | None = None,
    ) -> None:
        summary = reply.artifact
        request = serde.get_request_to_proto(
            summary.artifact_id,
            summary.kind,
            for_synthesis=for_synthesis,
            override_reason=override_reason,
        )
        rpc = (
            self._stub.GetGenerator
            if summary.kind is ArtifactKind.GENERATOR
            else self._stub.GetArtifact
        )
        sizes = {name: 0 for name in declared}
        digests = {name: hashlib.sha256() for name in declared}
        try:
            for message in rpc(request, timeout=self.timeout_s):
                chunk = serde.file_chunk_from_proto(message)
                _check_file_names([chunk.file_name], f"download of {summary.artifact_id[:12]}…")
                if chunk.file_name not in sizes or chunk.offset != sizes[chunk.file_name]:
                    raise IntegrityError(
                        f"unexpected chunk {chunk.file_name!r} at byte {chunk.offset}"
                    )
                with open(folder / chunk.file_name, "ab") as handle:
                    handle.write(chunk.data)
                sizes[chunk.file_name] += len(chunk.data)
                digests[chunk.file_name].update(chunk.data)
        except grpc.RpcError as error:
            raise error_from_rpc(error, f"download of {summary.artifact_id[:12]}…") from error
        for name, entry in declared.items():
            if digests[name].hexdigest() != entry.get("sha256") or sizes[name] != entry.get(
                "size_bytes"
            ):
                raise IntegrityError(
                    f"{name}: downloaded bytes do not match the manifest's sha256/size"
                )

    # Pooled archives.

    def pull_archive(
        self,
        archive_id: str,
        out_dir: Path,
        *,
        on_chunk: PullProgress | None = None,
        timeout_s: float = 24 * 3600.0,
    ) -> Path:
        """Download (or finish downloading) a pooled archive into ``out_dir`` (must not exist).

        Bytes land in ``<out>.partial/`` as they arrive. The manifest comes first and
        must hash to the archive id; every file is checked against the manifest's sha256
        and size as soon as its last byte arrives, and every path is checked before
        anything is written. A pull that stops leaves ``<out>.partial/``; the next call
        asks the hub to stream from the first missing or incomplete file
        (``start_path``, ``start_offset``). When all is verified the folder is renamed
        to ``out_dir``. ``on_chunk(path, offset)`` runs before each chunk is written.

        Raises:
            ConfigError: ``out_dir`` exists. IntegrityError: an unsafe path or bytes that
            fail their checksum. PermissionDeniedError, NotFoundError, RegistryError: the
            hub refused.
        """
        out_dir = Path(out_dir)
        if out_dir.exists():
            raise ConfigError(f"{out_dir}: already exists; pull never overwrites")
        staging = out_dir.with_name(f"{out_dir.name}.partial")
        staging.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            try:
                full_id = self._pull_archive_once(archive_id, staging, on_chunk, timeout_s)
                break
            except grpc.RpcError as error:
                if not _retryable(error) or attempt == self.retries:
                    raise error_from_rpc(error, f"PullArchive {archive_id}") from error
                delay = min(self.backoff_s * 2**attempt, 5.0)
                log.warning("pull %s: %s; resuming in %.1f s", archive_id, error.code().name, delay)
                time.sleep(delay)
        verify_staged_archive(staging, full_id)
        (staging / STAGING_ID_FILE).unlink()
        os.rename(staging, out_dir)
        return out_dir

    def _pull_archive_once(
        self, archive_id: str, staging: Path, on_chunk: PullProgress | None, timeout_s: float
    ) -> str:
        id_file = staging / STAGING_ID_FILE
        known = id_file.read_text().strip() if id_file.is_file() else None
        start_path, start_offset = resume_point(staging, known)
        if known is not None and start_offset < 0:
            return known
        request = serde.pull_archive_request_to_proto(known or archive_id, start_path, start_offset)
        receiver: ArchiveReceiver | None = None
        for message in self._stub.PullArchive(request, timeout=timeout_s):
            item = serde.archive_item_from_proto(message)
            if isinstance(item, ArchiveHeader):
                _accept_archive_header(item, archive_id, known)
                id_file.write_text(item.archive_id)
                log.info("pulling archive %s (%d bytes)", item.archive_id[:12], item.total_bytes)
                receiver = ArchiveReceiver(staging, item.archive_id, on_chunk)
            elif receiver is None:
                raise IntegrityError("PullArchive: a chunk before the header")
            else:
                receiver.write(item)
        if receiver is None:
            raise IntegrityError("PullArchive: the stream had no header")
        return receiver.archive_id


def _check_file_names(names: Any, where: str) -> None:
    """IntegrityError unless ``names`` are plain bundle file names (as the hub checks them)."""
    if not isinstance(names, Mapping | builtins.list):
        raise IntegrityError(f"{where}: 'files' is not a mapping")
    for name in names:
        if not isinstance(name, str) or not safe_file_name(name) or name in _RESERVED_NAMES:
            raise IntegrityError(f"{where}: unsafe file name {name!r} from the hub; refused")


def _accept_archive_header(header: ArchiveHeader, asked: str, known: str | None) -> None:
    """IntegrityError unless the header names the archive asked for (a 64-hex id)."""
    if len(header.archive_id) != 64 or not set(header.archive_id) <= _HEX:
        raise IntegrityError(f"the hub sent a malformed archive id {header.archive_id!r}")
    if not header.archive_id.startswith(asked.lower()) or (known and header.archive_id != known):
        raise IntegrityError(f"asked for archive {asked}, the hub sent {header.archive_id}")
