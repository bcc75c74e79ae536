"""Pure handlers of the hub API: domain records in, domain records out, no gRPC.

The servicer authenticates the caller and converts messages; everything a
request is judged on happens here, in this order for a publish:

1. role: only a ``site:<id>`` caller may publish, only manifests saying ``<id>``;
2. header: the manifest nests at most 32 levels and parses with its kind's model,
   the kind is allowed, the total size is within ``max_upload_bytes``, its network
   config fits the weights it declares (``manifest_checks``), the Ed25519 signature verifies
   against the site's registered key — all before a single byte is stored;
3. chunks: each lands at its file's staged end and never past the declared size;
4. commit: every file's sha256 and size match the manifest, safetensors headers
   parse and hold exactly the kind's tensors (G_ema only for a generator), then
   the registry commits atomically.

A refusal in 2–4 discards the staged bytes; a stream that simply stops keeps
them, so the client can resume (``upload_status``). Between 2 and 3 the upload
takes a slot and is checked against its site's staged-bytes quota; a stream
that goes silent is closed (``hub.registry.fairness``).

Audit reports: the role is checked before the request's bytes are parsed; a stored
report names a committed generator by its full id.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hub.archives.store import ArchiveStore, archive_stream
from hub.registry.audit_policy import clear_for_synthesis, decide_all
from hub.registry.auth import Action, Caller, Role, authorize
from hub.registry.base import ArtifactRecord, ArtifactRegistry, StagedUpload, StoredAuditReport
from hub.registry.fairness import UploadGate, check_staged_quota, rate_floor, stall_guard
from hub.registry.integrity import (
    damaged_files,
    refuse_damaged,
    verified_chunks,
    with_integrity,
)
from hub.registry.keyring import Keyring
from hub.registry.manifest_checks import check_implied_sizes, check_json_depth, check_numbers
from shared.artifacts.archive import ARCHIVE_MANIFEST
from shared.artifacts.audit import AuditReport, parse_audit_report, verify_audit_report
from shared.artifacts.audit_state import AuditDecision, WithdrawalRecord, check_reason
from shared.artifacts.bundle import SignedManifest, check_bundle_file
from shared.artifacts.manifest import HUB_SITE_ID, parse_manifest
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
from shared.artifacts.signing import load_public_key, parse_json_object
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
    "audit_report_records",
    "audit_reports",
    "audit_states",
    "authorize_synthesis",
    "get_artifact",
    "get_manifest",
    "list_artifacts",
    "publish",
    "pull_archive",
    "put_audit_report",
    "upload_status",
    "withdraw_artifact",
]

log = logging.getLogger("radshare.hub.registry")

#: Kinds a site may publish (classifiers are trained at the hub).
SITE_KINDS = frozenset({ArtifactKind.GENERATOR, ArtifactKind.LABELLER})
#: Kinds an operator registers, signed by the hub's key (site id ``hub``), so that sites
#: can pull and verify the classifiers they are asked to evaluate.
HUB_KINDS = frozenset({ArtifactKind.CLASSIFIER})


@dataclass(frozen=True)
class HubLimits:
    """Configurable limits of the registry service."""

    max_upload_bytes: int = 4 * 2**30
    max_concurrent_uploads: int = 8
    chunk_bytes: int = 2**20
    upload_ttl_s: float = 7 * 86400.0
    max_uploads_per_site: int | None = None  # default: max(1, max_concurrent_uploads // 2)
    upload_stall_timeout_s: float = 60.0  # a stream silent this long is closed (resumable)
    min_upload_bytes_per_s: float = 8192.0  # ... and one slower than this after that (0: off)
    max_staged_bytes_per_site: int | None = None  # default: 2 * max_upload_bytes

    @property
    def uploads_per_site(self) -> int:
        """Concurrent uploads one site may hold."""
        return self.max_uploads_per_site or max(1, self.max_concurrent_uploads // 2)

    @property
    def staged_bytes_per_site(self) -> int:
        """Bytes one site's unfinished uploads may reserve."""
        return self.max_staged_bytes_per_site or 2 * self.max_upload_bytes


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
        self.gate = UploadGate(self.limits.max_concurrent_uploads, self.limits.uploads_per_site)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def _accept_header(
    caller: Caller, item: PublishItem | None, state: HubState, only_kind: ArtifactKind | None
) -> tuple[SignedManifest, bytes]:
    """Check a publish header (steps 1–2); returns the manifest and the site's PEM key."""
    if not isinstance(item, PublishHeader):
        raise ArtifactError("publish stream: the first message must be a header with the manifest")
    where = "manifest.json (publish header)"
    check_json_depth(item.manifest_json, where=where)  # before the recursive parser
    raw = parse_json_object(item.manifest_json, where=where)
    check_numbers(raw, where=where)
    signed = SignedManifest(raw=raw, model=parse_manifest(raw, where=where))
    model = signed.model
    if model.kind in HUB_KINDS:
        authorize(caller, Action.PUBLISH_HUB_ARTIFACT)
        if model.site_id != HUB_SITE_ID:
            raise ArtifactError(
                f"a {model.kind.value} is signed by the hub (site_id {HUB_SITE_ID!r}), "
                f"not {model.site_id!r}"
            )
    else:
        authorize(caller, Action.PUBLISH, site_id=model.site_id)
    expected = only_kind or item.kind
    if expected is not None and model.kind != expected:
        raise ArtifactError(
            f"manifest kind {model.kind.value!r} but this call publishes {expected.value!r}"
        )
    if model.kind not in SITE_KINDS | HUB_KINDS:
        raise ArtifactError(f"kind {model.kind.value!r} may not be published")
    if model.total_bytes > state.limits.max_upload_bytes:
        raise QuotaError(
            f"upload of {model.total_bytes} bytes exceeds the limit of "
            f"{state.limits.max_upload_bytes} bytes (max_upload_bytes)"
        )
    check_implied_sizes(model, where=where)
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
    with state.gate.quota_lock:
        if state.registry.staged(upload.artifact_id) is None:  # a resume is already counted
            check_staged_quota(state.registry, upload, state.limits.staged_bytes_per_site)
        return state.registry.stage(upload)


def _stalled(state: HubState, artifact_id: str | None) -> UploadInterruptedError:
    """The error for a stream that went silent: what is kept, and that the slot is freed."""
    timeout_s = state.limits.upload_stall_timeout_s
    if artifact_id is None:
        return UploadInterruptedError(
            f"publish stream sent no header within {timeout_s:g} s (upload_stall_timeout_s)"
        )
    staged = state.registry.staged(artifact_id)
    kept = sum(staged.received.values()) if staged is not None else 0
    return UploadInterruptedError(
        f"upload {artifact_id[:12]}… sent nothing for {timeout_s:g} s (upload_stall_timeout_s): "
        f"the stream is closed and its slot freed; the {kept} bytes staged are kept, resume it"
    )


def _paced(
    items: Iterator[PublishItem], state: HubState, artifact_id: str
) -> Iterator[PublishItem]:
    """``items``, closed with UploadInterruptedError if they drip in (``rate_floor``)."""
    limits = state.limits

    def too_slow(total_bytes: int, elapsed_s: float) -> UploadInterruptedError:
        staged = state.registry.staged(artifact_id)
        kept = sum(staged.received.values()) if staged is not None else 0
        return UploadInterruptedError(
            f"upload {artifact_id[:12]}… sent {total_bytes} bytes in {elapsed_s:.0f} s, below "
            f"{limits.min_upload_bytes_per_s:g} bytes/s (min_upload_bytes_per_s): the stream is "
            f"closed and its slot freed; the {kept} bytes staged are kept, resume it"
        )

    return rate_floor(items, limits.min_upload_bytes_per_s, limits.upload_stall_timeout_s, too_slow)


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
    current: list[str | None] = [None]  # the artifact id, once the header names it
    guarded = stall_guard(
        items, state.limits.upload_stall_timeout_s, lambda: _stalled(state, current[0])
    )
    try:
        with state.gate.stream(caller.identity):
            return _publish(caller, guarded, state, only_kind, current)
    finally:
        guarded.close()  # stops its reader thread


def _publish(
    caller: Caller,
    items: Iterator[PublishItem],
    state: HubState,
    only_kind: ArtifactKind | None,
    current: list[str | None],
) -> PublishResult:
    header = next(items, None)
    signed, pem = _accept_header(caller, header, state, only_kind)
    current[0] = signed.artifact_id
    assert isinstance(header, PublishHeader)
    artifact_id, registry = signed.artifact_id, state.registry
    existing = registry.find(artifact_id)
    if existing is not None and not damaged_files(registry, existing):
        log.info("publish %s by %s: already committed", artifact_id[:12], caller.identity)
        return PublishResult(existing.summary, created=False)
    # New, or committed with a missing/corrupt blob: receive it (commit repairs the blob).
    with state.gate.slot(artifact_id, signed.model.site_id):
        staged = _stage(signed, header.manifest_json, state)
        try:
            _receive(_paced(items, state, artifact_id), staged, registry)
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
    operator = caller.role is Role.OPERATOR  # operators upload the hub's classifiers
    authorize(caller, Action.PUBLISH_HUB_ARTIFACT if operator else Action.PUBLISH)
    existing = state.registry.find(artifact_id)
    if existing is not None and not damaged_files(state.registry, existing):
        return UploadStatus(artifact_id, committed=True)  # a damaged one is re-sent: repair
    staged = state.registry.staged(artifact_id)
    if staged is None or staged.site_id != caller.site_id:
        return UploadStatus(artifact_id, committed=False)
    return UploadStatus(artifact_id, committed=False, received=dict(staged.received))


def list_artifacts(
    caller: Caller, state: HubState, *, kind: ArtifactKind | None = None, site_id: str | None = None
) -> list[ArtifactSummary]:
    """Committed artifacts, oldest first, filtered by kind and site, with their integrity."""
    authorize(caller, Action.LIST)
    return with_integrity(state.registry, state.registry.list(kind=kind, site_id=site_id or None))


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
    caller: Caller,
    state: HubState,
    artifact_id: str,
    *,
    kind: ArtifactKind | None = None,
    for_synthesis: bool = False,
    override_reason: str | None = None,
) -> Iterator[FileChunk]:
    """Every file of an artifact, in name order, as chunks of ``limits.chunk_bytes``.

    Authorisation and lookup happen before the first chunk is produced. A pull
    ``for_synthesis`` must pass the audit policy (``hub.registry.audit_policy``):
    AuditPolicyError (FAILED_PRECONDITION) naming the reason, unless an overridable
    refusal comes with ``override_reason``, which is recorded as given by the caller.
    """
    authorize(caller, Action.PULL)
    record = _record(state, artifact_id, kind)
    if for_synthesis:
        authorize_synthesis(caller, state, record.artifact_id, override_reason)
    refuse_damaged(state.registry, record)  # DataLossError before a byte is sent
    log.info("pull %s by %s", record.artifact_id[:12], caller.identity)
    return verified_chunks(state.registry, record, state.limits.chunk_bytes)


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
    stored: bytes | None = None
    if report.signature is not None:  # site-signed: verify, then keep the bytes as sent
        where = f"audit report of site {report.site_id!r} on {record.artifact_id[:12]}…"
        pem = state.keyring.public_key_pem(report.site_id)
        verify_audit_report(report_json, load_public_key(pem, where=where), where=where)
        if report.generator_id != record.artifact_id:
            raise ArtifactError(
                f"{where}: field 'generator_id' {report.generator_id!r} must be the full id "
                f"{record.artifact_id} (it is signed)"
            )
        stored = bytes(report_json)
    elif report.generator_id != record.artifact_id:  # unsigned legacy: stored as unverified
        report = report.model_copy(update={"generator_id": record.artifact_id})
    created = state.registry.put_audit_report(report, caller.identity, stored)
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


def audit_report_records(
    caller: Caller, state: HubState, generator_id: str, *, site_id: str | None = None
) -> list[StoredAuditReport]:
    """Like :func:`audit_reports`, with the exact bytes stored (what the site signed)."""
    authorize(caller, Action.READ_REPORT)
    record = _record(state, generator_id, ArtifactKind.GENERATOR)
    return state.registry.audit_report_records(record.artifact_id, site_id or None)


def authorize_synthesis(
    caller: Caller, state: HubState, generator_id: str, override_reason: str | None
) -> AuditDecision:
    """The audit policy's decision for synthesis (operators); AuditPolicyError if refused.

    An override is recorded as given by ``caller.identity`` (see
    ``hub.registry.audit_policy.clear_for_synthesis``).
    """
    authorize(caller, Action.RUN_JOB)
    decision = clear_for_synthesis(
        state.registry,
        state.keyring,
        generator_id,
        caller=caller.identity,
        override_reason=override_reason or None,
        checked_by="hub",
    )
    log.info(
        "synthesis of %s cleared for %s: %s%s",
        decision.generator_id[:12],
        caller.identity,
        decision.state,
        f" (override: {decision.override.reason})" if decision.override else "",
    )
    return decision


def audit_states(
    caller: Caller, state: HubState, *, site_id: str | None = None
) -> list[AuditDecision]:
    """Every generator's audit decision and latest override (operators, auditors)."""
    authorize(caller, Action.LIST)
    generators = state.registry.list(kind=ArtifactKind.GENERATOR, site_id=site_id or None)
    return decide_all(
        state.registry, state.keyring, [g.artifact_id for g in generators], checked_by="hub"
    )


def withdraw_artifact(
    caller: Caller, state: HubState, artifact_id: str, reason: str
) -> tuple[WithdrawalRecord, bool]:
    """Withdraw an artifact (operators: any; a site: only its own); never undone.

    Returns the withdrawal and whether this call made it (False: withdrawn before).
    """
    authorize(caller, Action.WITHDRAW)
    record = _record(state, artifact_id, None)
    authorize(caller, Action.WITHDRAW, site_id=record.summary.site_id)
    withdrawal = WithdrawalRecord(
        generator_id=record.artifact_id,
        reason=check_reason(reason, "withdraw reason"),
        withdrawn_by=caller.identity,
    )
    stored, created = state.registry.withdraw(withdrawal)
    log.warning(
        "artifact %s withdrawn by %s: %s%s",
        record.artifact_id[:12],
        stored.withdrawn_by,
        stored.reason,
        "" if created else " (already withdrawn)",
    )
    return stored, created
