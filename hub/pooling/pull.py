"""The operator's side of ``PullArchive``: a resumable, checksummed download of a pooled archive.

    with ArchivePuller("hub:50051", ClientTLS.from_dir("certs", "operator")) as puller:
        folder = puller.pull("3f9a1c07", Path("archives/pool-1"))

Bytes land in ``<out>.partial/`` as they arrive, one chunk at a time. The manifest comes
first and must hash to the archive id; every file is checked against the manifest's
sha256 and size as soon as its last byte arrives. A pull that stops (a broken
connection, a killed process) leaves ``<out>.partial/`` behind; the next ``pull`` with
the same id finds the first file that is missing or incomplete and asks the hub to
stream from there (``start_path``, ``start_offset``). When everything is verified, the
folder is renamed to ``<out>``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from hub.pooling.store import ARCHIVE_MANIFEST, PoolManifest, manifest_files
from shared.artifacts.records import ArchiveChunk, ArchiveHeader
from shared.errors import ConfigError, IntegrityError
from shared.hub_client import ClientTLS, error_from_rpc
from shared.proto import radshare_hub_pb2_grpc as pb_grpc
from shared.proto import serde

__all__ = ["ArchivePuller", "PullProgress", "resume_point"]

log = logging.getLogger("radshare.hub.pooling")

_ID_FILE = ".archive_id"
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})

#: ``on_chunk(path, offset)`` before each chunk is written (progress, fault injection).
PullProgress = Callable[[str, int], None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def _load_manifest(staging: Path, archive_id: str) -> PoolManifest | None:
    """The staged manifest if complete and matching the id; None if not (yet) there."""
    path = staging / ARCHIVE_MANIFEST
    if not path.is_file():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != archive_id:
        return None  # partial: resume inside it
    return PoolManifest.model_validate_json(data)


def resume_point(staging: Path, archive_id: str | None) -> tuple[str, int]:
    """``(start_path, start_offset)`` to ask for: the first file missing, partial or wrong.

    A complete file whose sha256 does not match is deleted and fetched again.
    """
    if archive_id is None:
        return "", 0
    manifest = _load_manifest(staging, archive_id)
    if manifest is None:
        path = staging / ARCHIVE_MANIFEST
        return ARCHIVE_MANIFEST, path.stat().st_size if path.is_file() else 0
    for rel, entry in manifest_files(manifest):
        path = staging / rel
        size = path.stat().st_size if path.is_file() else 0
        if size < entry.size_bytes:
            return rel, size
        if size > entry.size_bytes or _sha256(path) != entry.sha256:
            path.unlink()
            return rel, 0
    return "", -1  # everything is there


class _Receiver:
    """Writes chunks in order and checks each file when its last byte has arrived."""

    def __init__(self, staging: Path, header: ArchiveHeader, on_chunk: PullProgress | None):
        self.staging, self.header, self.on_chunk = staging, header, on_chunk
        self.manifest = _load_manifest(staging, header.archive_id)

    def expected(self, path: str) -> tuple[int, str] | None:
        if path == ARCHIVE_MANIFEST or self.manifest is None:
            return None
        entry = self.manifest.files.get(path)
        if entry is None:
            raise IntegrityError(f"the hub sent {path!r}, which the manifest does not list")
        return entry.size_bytes, entry.sha256

    def write(self, chunk: ArchiveChunk) -> None:
        if self.on_chunk is not None:
            self.on_chunk(chunk.path, chunk.offset)
        target = self.staging / chunk.path
        if not target.resolve().is_relative_to(self.staging.resolve()):
            raise IntegrityError(f"the hub sent a path outside the archive: {chunk.path!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if chunk.offset == 0 and target.exists():
            target.unlink()  # a file after the resume point is always fetched whole
        size = target.stat().st_size if target.exists() else 0
        if chunk.offset != size:
            raise IntegrityError(f"{chunk.path}: chunk at byte {chunk.offset}, have {size} bytes")
        with open(target, "ab") as handle:
            handle.write(chunk.data)
        self._check(chunk.path, size + len(chunk.data))

    def _check(self, path: str, size: int) -> None:
        if path == ARCHIVE_MANIFEST:
            self.manifest = _load_manifest(self.staging, self.header.archive_id)
            return
        expected = self.expected(path)
        if expected is None or size < expected[0]:
            return
        if size != expected[0] or _sha256(self.staging / path) != expected[1]:
            (self.staging / path).unlink()
            raise IntegrityError(f"{path}: received bytes do not match the manifest's sha256")


class ArchivePuller:
    """A connection to one hub for pulling archives (operator certificate)."""

    def __init__(
        self,
        target: str,
        tls: ClientTLS | grpc.ChannelCredentials,
        *,
        retries: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 24 * 3600.0,
    ):
        credentials = tls.credentials() if isinstance(tls, ClientTLS) else tls
        options = [("grpc.max_receive_message_length", 64 * 2**20)]
        self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.RadshareHubStub(self._channel)
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> ArchivePuller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pull(self, archive_id: str, out_dir: Path, *, on_chunk: PullProgress | None = None) -> Path:
        """Download (or finish downloading) an archive into ``out_dir`` (must not exist).

        Raises:
            ConfigError: ``out_dir`` exists. IntegrityError: bytes that fail their checksum.
            PermissionDeniedError, NotFoundError, RegistryError: the hub refused.
        """
        out_dir = Path(out_dir)
        if out_dir.exists():
            raise ConfigError(f"{out_dir}: already exists; pull never overwrites")
        staging = out_dir.with_name(f"{out_dir.name}.partial")
        staging.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            try:
                full_id = self._pull_once(archive_id, staging, on_chunk)
                break
            except grpc.RpcError as error:
                if error.code() not in _RETRYABLE or attempt == self.retries:
                    raise error_from_rpc(error, f"PullArchive {archive_id}") from error
                delay = min(self.backoff_s * 2**attempt, 5.0)
                log.warning("pull %s: %s; resuming in %.1f s", archive_id, error.code().name, delay)
                time.sleep(delay)
        self._verify_all(staging, full_id)
        (staging / _ID_FILE).unlink()
        os.rename(staging, out_dir)
        return out_dir

    def _pull_once(self, archive_id: str, staging: Path, on_chunk: PullProgress | None) -> str:
        id_file = staging / _ID_FILE
        known = id_file.read_text().strip() if id_file.is_file() else None
        start_path, start_offset = resume_point(staging, known)
        if start_offset < 0:
            return str(known)
        request = serde.pull_archive_request_to_proto(known or archive_id, start_path, start_offset)
        receiver = None
        for message in self._stub.PullArchive(request, timeout=self.timeout_s):
            item = serde.archive_item_from_proto(message)
            if isinstance(item, ArchiveHeader):
                receiver = self._accept_header(item, archive_id, known, staging, on_chunk)
            elif receiver is None:
                raise IntegrityError("PullArchive: a chunk before the header")
            else:
                receiver.write(item)
        if receiver is None:
            raise IntegrityError("PullArchive: the stream had no header")
        return receiver.header.archive_id

    @staticmethod
    def _accept_header(
        header: ArchiveHeader,
        asked: str,
        known: str | None,
        staging: Path,
        on_chunk: PullProgress | None,
    ) -> _Receiver:
        if not header.archive_id.startswith(asked.lower()) or (
            known and header.archive_id != known
        ):
            raise IntegrityError(f"asked for archive {asked}, the hub sent {header.archive_id}")
        (staging / _ID_FILE).write_text(header.archive_id)
        log.info(
            "pulling archive %s (%d bytes) from %r",
            header.archive_id[:12],
            header.total_bytes,
            header.start_path or "start",
        )
        return _Receiver(staging, header, on_chunk)

    @staticmethod
    def _verify_all(staging: Path, archive_id: str) -> None:
        manifest = _load_manifest(staging, archive_id)
        if manifest is None:
            raise IntegrityError(
                f"{staging}: the manifest is missing or does not hash to {archive_id}"
            )
        listed = {rel for rel, _ in manifest_files(manifest)} | {ARCHIVE_MANIFEST, _ID_FILE}
        extra = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()]
        unexpected = sorted(set(extra) - listed)
        if unexpected:
            raise IntegrityError(f"{staging}: files the manifest does not list: {unexpected[:3]}")
        for rel, entry in manifest_files(manifest):
            path = staging / rel
            if (
                not path.is_file()
                or path.stat().st_size != entry.size_bytes
                or _sha256(path) != entry.sha256
            ):
                raise IntegrityError(f"{rel}: missing or not matching the manifest's sha256")
