"""Pure handlers of the hub API: domain records in, domain records out, no gRPC.

The servicer authenticates the caller and converts messages; everything a
request is judged on happens here, in this order for a publish:

1. role: only a ``site:<id>`` caller may publish, only manifests saying ``<id>``;
2. header: the manifest parses with its kind's model, the kind is allowed,
   the total size is within ``max_upload_bytes``, the Ed25519 signature verifies
   against the site's registered key — all before a single byte is stored;
3. chunks: each lands at its file's staged end and never past the declared size;
4. commit: every file's sha256 and size match the manifest, safetensors headers
   parse and hold exactly the kind's tensors (G_ema only for a generator), then
   the registry commits atomically.

A refusal in 2–4 discards the staged bytes; a stream that simply stops keeps
them, so the client can resume (``upload_status``).

Audit reports: the role is checked before the request's bytes are parsed; a stored
report names a committed generator by its full id.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hub.pooling.store import ARCHIVE_MANIFEST, ArchiveStore, archive_stream
from hub.registry.auth import Action, Caller, Role, authorize
from hub.registry.base import ArtifactRecord, ArtifactRegistry, StagedUpload
from hub.registry.keyring import Keyring
from shared.artifacts.audit import AuditReport, parse_audit_report
from shared.artifacts.bundle import SignedManifest, check_bundle_file
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
from shared.artifacts.signing import load_public_key
from shared.errors import (
    ArtifactError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    QuotaError,
    UploadInterruptedError,
)

__all__ = [
    "HubLimits",
    "HubState",
    "UploadGate",
    "audit_reports",
    "get_artifact",
    "get_manifest",
    "list_artifacts",
    "publish",
    "pull_archive",
    "put_audit_report",
    "upload_status",
]

log = logging.getLogger("radshare.hub.registry")

#: Kinds a site may publish (classifiers are trained at the hub).
SITE_KINDS = frozenset({ArtifactKind.GENERATOR, ArtifactKind.LABELLER})


@dataclass(frozen=True)
class HubLimits:
    """Configurable limits of the registry service."""

    max_upload_bytes: int = 4 * 2**30
    max_concurrent_uploads: int = 8
    chunk_bytes: int = 2**20
    upload_ttl_s: float = 7 * 86400.0


class UploadGate:
    """Admits at most ``limit`` concurrent uploads, and one stream per artifact id."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._active: set[str] = set()

    @contextmanager
    def slot(self, artifact_id: str) -> Iterator[None]:
        """Hold an upload slot; QuotaError when full, UploadInterruptedError when id is busy."""
        with self._lock:
            if artifact_id in self._active:
                raise UploadInterruptedError(
                    f"upload {artifact_id[:12]}… is already streaming; retry when it ends"
                )
            if len(self._active) >= self.limit:
                raise QuotaError(
                    f"{len(self._active)} uploads in progress; the limit is {self.limit} "
                    "(max_concurrent_uploads)"
                )
            self._active.add(artifact_id)
        try:
            yield
        finally:
            with self._lock:
                self._active.discard(artifact_id)


@dataclass
class HubState:
    """Everything a handler needs: registry, site keys, limits, the upload gate, a clock."""

    registry: ArtifactRegistry
    keyring: Keyring
    limits: HubLimits = field(default_factory=HubLimits)
    clock: Callable[[], float] = time.time
    archives: ArchiveStore | None = None  # pooled synthetic archives (PullArchive)
    gate: UploadGate = field(init=False)

    def __post_init__(self) -> None:
        self.gate = UploadGate(self.limits.max_concurrent_uploads)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def _accept_header(
    caller: Caller, item: PublishItem | None, state: HubState, only_kind: ArtifactKind | None
) -> tuple[SignedManifest, bytes]:
    """Check a publish header (steps 1–2); returns the manifest and the site's PEM key."""
    if not isinstance(item, PublishHeader):
        raise ArtifactError("publish stream: the first message must be a header with the manifest")
    signed = SignedManifest.from_json(item.manifest_json, where="manifest.json (publish header)")
    model = signed.model
    authorize(caller, Action.PUBLISH, site_id=model.site_id)
    expected = only_kind or item.kind
    if expected is not None and model.kind != expected:
        raise ArtifactError(
            f"manifest kind {model.kind.value!r} but this call publishes {expected.value!r}"
        )
    if model.kind not in SITE_KINDS:
        raise ArtifactError(f"a site may not publish kind {model.kind.value!r}")
    if model.total_bytes > state.limits.max_upload_bytes:
        raise QuotaError(
            f"upload of {model.total_bytes} bytes exceeds the limit of "
            f"{state.limits.max_upload_bytes} bytes (max_upload_bytes)"
        )
    pem = state.keyring.public_key_pem(model.site_id)
    signed.verify_signature(load_public_key(pem), where=f"manifest of site {model.site_id!r}")
    return signed, pem


def _receive(
    items: Iterator[PublishItem], staged: StagedUpload, registry: ArtifactRegistry
) -> None:
    """Write chunks until the stream ends (step 3)."""
    received = dict(staged.received)
    for item in items:
        if not isinstance(item, FileChunk):
            raise ArtifactError("publish stream: a second header after the first")
        declared = staged.declared.get(item.file_name)
        if declared is None:
            raise ArtifactError(f"chunk for {item.file_name!r}, which the manifest does not list")
        end = item.offset + len(item.data)
        if end > declared:
            raise ArtifactError(
                f"chunk of {item.file_name!r} ends at byte {end}, past its declared size {declared}"
            )
        received[item.file_name] = registry.append(
            staged.artifact_id, item.file_name, item.offset, item.data
        )
    missing = {
        n: (received.get(n, 0), s) for n, s in staged.declared.items() if received.get(n, 0) != s
    }
    if missing:
        parts = ", ".join(
            f"{n} has {got} of {size} bytes" for n, (got, size) in sorted(missing.items())
        )
        raise UploadInterruptedError(
            f"upload {staged.artifact_id[:12]}… is incomplete: {parts}; resume it"
        )


def _verify_staged(signed: SignedManifest, registry: ArtifactRegistry) -> tuple[FileInfo, ...]:
    """Hash and inspect every staged file against the manifest (step 4)."""
    artifact_id, files = signed.artifact_id, []
    for name, entry in sorted(signed.model.files.items()):
        digest, size = hashlib.sha256(), 0
        with registry.open_staged(artifact_id, name) as handle:
            while block := handle.read(2**20):
                digest.update(block)
                size += len(block)
        if digest.hexdigest() != entry.sha256 or size != entry.size_bytes:
            raise IntegrityError(
                f"{name}: received sha256 {digest.hexdigest()[:16]}… ({size} bytes) but the "
                "manifest "
                f"says {entry.sha256[:16]}… ({entry.size_bytes} bytes)"
            )
        with registry.open_staged(artifact_id, name) as handle:
            check_bundle_file(signed.model, name, handle, size, where=name)
        files.append(FileInfo(name, entry.sha256, size))
    return tuple(files)


def _summary(
    signed: SignedManifest, files: tuple[FileInfo, ...], published_at: str
) -> ArtifactSummary:
    model = signed.model
    return ArtifactSummary(
        artifact_id=signed.artifact_id,
        kind=model.kind,
        site_id=model.site_id,
        created=model.created.isoformat(timespec="seconds"),
        published_at=published_at,
        size_bytes=sum(f.size_bytes for f in files),
        files=files,
        radshare_version=model.radshare_version,
    )


def _stage(signed: SignedManifest, manifest_json: bytes, state: HubState) -> StagedUpload:
    model = signed.model
    declared = {name: entry.size_bytes for name, entry in model.files.items()}
    upload = StagedUpload(
        signed.artifact_id, model.kind, model.site_id, manifest_json, declared, state.clock()
    )
    return state.registry.stage(upload)


def publish(
    caller: Caller,
    items: Iterator[PublishItem],
    state: HubState,
    *,
    only_kind: ArtifactKind | None = None,
) -> PublishResult:
    """Receive, verify and commit one bundle (resuming a staged upload of the same id).

    ``items`` is a header followed by chunks. Returns the artifact and whether
    this call created it (False: identical content was already committed).
    Raises PermissionDeniedError, ArtifactError (and subclasses), QuotaError,
    UploadInterruptedError (incomplete stream: staged bytes are kept).
    """
    header = next(items, None)
    signed, pem = _accept_header(caller, header, state, only_kind)
    assert isinstance(header, PublishHeader)
    artifact_id, registry = signed.artifact_id, state.registry
    existing = registry.find(artifact_id)
    if existing is not None:
        log.info("publish %s by %s: already committed", artifact_id[:12], caller.identity)
        return PublishResult(existing.summary, created=False)
    with state.gate.slot(artifact_id):
        staged = _stage(signed, header.manifest_json, state)
        try:
            _receive(items, staged, registry)
        except ArtifactError:
            registry.discard(artifact_id)
            raise
        try:
            files = _verify_staged(signed, registry)
            summary = _summary(signed, files, _iso(state.clock()))
            record, created = registry.commit(
                ArtifactRecord(summary, header.manifest_json, pem, caller.identity)
            )
        except BaseException:
            registry.discard(artifact_id)  # verified-and-failed bytes are never resumed
            raise
    log.info(
        "publish %s (%s, site %s, %d bytes) by %s: %s",
        artifact_id[:12],
        summary.kind,
        summary.site_id,
        summary.size_bytes,
        caller.identity,
        "committed" if created else "exists",
    )
    return PublishResult(record.summary, created)


def upload_status(caller: Caller, artifact_id: str, state: HubState) -> UploadStatus:
    """What the hub holds of an upload: committed, or bytes staged per file (to resume from)."""
    authorize(caller, Action.PUBLISH)
    if state.registry.find(artifact_id) is not None:
        return UploadStatus(artifact_id, committed=True)
    staged = state.registry.staged(artifact_id)
    if staged is None or staged.site_id != caller.site_id:
        return UploadStatus(artifact_id, committed=False)
    return UploadStatus(artifact_id, committed=False, received=dict(staged.received))


def list_artifacts(
    caller: Caller, state: HubState, *, kind: ArtifactKind | None = None, site_id: str | None = None
) -> list[ArtifactSummary]:
    """Committed artifacts, oldest first, filtered by kind and site."""
    authorize(caller, Action.LIST)
    return state.registry.list(kind=kind, site_id=site_id or None)


def _record(state: HubState, artifact_id: str, kind: ArtifactKind | None) -> ArtifactRecord:
    record = state.registry.get(artifact_id)
    if kind is not None and record.summary.kind != kind:
        raise NotFoundError(f"artifact {artifact_id!r} is a {record.summary.kind}, not a {kind}")
    return record


def get_manifest(
    caller: Caller, state: HubState, artifact_id: str, *, kind: ArtifactKind | None = None
) -> ManifestReply:
    """The signed manifest as published, and the site key the hub verified it with."""
    authorize(caller, Action.READ_MANIFEST)
    record = _record(state, artifact_id, kind)
    return ManifestReply(record.summary, record.manifest_json, record.signer_public_key_pem)


def get_artifact(
    caller: Caller, state: HubState, artifact_id: str, *, kind: ArtifactKind | None = None
) -> Iterator[FileChunk]:
    """Every file of an artifact, in name order, as chunks of ``limits.chunk_bytes``.

    Authorisation and lookup happen before the first chunk is produced.
    """
    authorize(caller, Action.PULL)
    record = _record(state, artifact_id, kind)
    log.info("pull %s by %s", record.artifact_id[:12], caller.identity)
    return _chunks(state, record)


def _chunks(state: HubState, record: ArtifactRecord) -> Iterator[FileChunk]:
    for info in record.summary.files:
        with state.registry.open_file(record.artifact_id, info.name) as handle:
            offset = 0
            while block := handle.read(state.limits.chunk_bytes):
                yield FileChunk(info.name, offset, block)
                offset += len(block)


def pull_archive(
    caller: Caller,
    state: HubState,
    archive_id: str,
    *,
    start_path: str = "",
    start_offset: int = 0,
) -> tuple[ArchiveHeader, Iterator[ArchiveChunk]]:
    """A pooled archive's header and chunks (manifest first, then files in path order).

    Operators only. Authorisation, lookup and the resume position are checked before
    the first chunk; files are read from disk one chunk at a time.
    """
    authorize(caller, Action.PULL)
    if caller.role is not Role.OPERATOR:
        raise PermissionDeniedError(
            f"{caller.identity!r} (role {caller.role}) may not pull archives"
        )
    if state.archives is None:
        raise NotFoundError("this hub serves no archives")
    full, total, chunks = archive_stream(
        state.archives,
        archive_id,
        start_path=start_path,
        start_offset=start_offset,
        chunk_bytes=state.limits.chunk_bytes,
    )
    log.info("pull archive %s from %r by %s", full[:12], start_path or "start", caller.identity)
    return ArchiveHeader(full, ARCHIVE_MANIFEST, total, start_path, start_offset), chunks


def put_audit_report(caller: Caller, state: HubState, report_json: bytes) -> bool:
    """Validate and store one AuditReport (operators only); False if it was stored already.

    The role is checked first, then the JSON (ArtifactError naming the field), then
    that ``generator_id`` (full id or unique prefix) is a committed generator
    (NotFoundError); the report is stored under the generator's full id.
    """
    authorize(caller, Action.WRITE_REPORT)
    report = parse_audit_report(report_json, where="PutAuditReport report_json")
    record = _record(state, report.generator_id, ArtifactKind.GENERATOR)
    if report.generator_id != record.artifact_id:
        report = report.model_copy(update={"generator_id": record.artifact_id})
    created = state.registry.put_audit_report(report, caller.identity)
    log.info(
        "audit report of %s by site %s (received %s) from %s: %s",
        record.artifact_id[:12],
        report.site_id,
        report.received.isoformat(timespec="seconds"),
        caller.identity,
        "stored" if created else "already stored",
    )
    return created


def audit_reports(
    caller: Caller, state: HubState, generator_id: str, *, site_id: str | None = None
) -> list[AuditReport]:
    """A generator's reports (full id or unique prefix), newest first; one site's if given."""
    authorize(caller, Action.READ_REPORT)
    record = _record(state, generator_id, ArtifactKind.GENERATOR)
    return state.registry.audit_reports(record.artifact_id, site_id or None)
