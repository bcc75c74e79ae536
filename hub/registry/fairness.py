"""Fair sharing of the hub's upload capacity between sites.

Three limits keep one site (broken or hostile) from starving the others:

* **slots**: at most ``max_concurrent_uploads`` streams at once, and at most
  ``max_uploads_per_site`` of them from one site (default half the slots), so a
  site that opens every stream it can still leaves room for the others; the
  per-site limit counts a caller's open publish streams from their first byte,
  so streams that never send a header cannot pin the server's worker threads;
* **stalls**: a publish stream that sends no message for ``upload_stall_timeout_s``
  is closed with ABORTED; its slot is freed and its staged bytes are kept, so an
  honest but slow client resumes where it stopped; so is a stream that drips
  (after ``upload_stall_timeout_s``, an average below ``min_upload_bytes_per_s``);
* **staged bytes**: the bytes a site's unfinished uploads reserve (their declared
  sizes) may not exceed ``max_staged_bytes_per_site`` (default twice
  ``max_upload_bytes``); a resumed upload is already counted and always admitted.

Full slots and a full quota raise ``BusyError`` (RESOURCE_EXHAUSTED with a
retry hint); the client backs off and retries within a bounded wait.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import TypeVar

from hub.registry.base import ArtifactRegistry, StagedUpload
from shared.errors import BusyError, UploadInterruptedError

__all__ = ["UploadGate", "check_staged_quota", "rate_floor", "stall_guard"]

T = TypeVar("T")

#: Seconds a refused client is told to wait before it retries.
RETRY_AFTER_S = 1.0


class UploadGate:
    """Admits at most ``limit`` concurrent uploads, ``per_site_limit`` per site, one per id.

    ``quota_lock`` serialises the staged-bytes check with the staging it admits.
    """

    def __init__(self, limit: int, per_site_limit: int | None = None):
        self.limit = limit
        self.per_site_limit = per_site_limit or limit
        self.quota_lock = threading.Lock()
        self._lock = threading.Lock()
        self._active: dict[str, str] = {}  # artifact id → site id
        self._streams: Counter[str] = Counter()  # caller identity → open publish streams

    def streams_open(self, identity: str) -> int:
        """Publish streams ``identity`` has open (header or not)."""
        with self._lock:
            return self._streams[identity]

    @contextmanager
    def stream(self, identity: str) -> Iterator[None]:
        """Count one open publish stream of ``identity``; BusyError past the per-site limit."""
        with self._lock:
            if self._streams[identity] >= self.per_site_limit:
                raise BusyError(
                    f"{identity!r} has {self._streams[identity]} publish streams open; the limit "
                    f"per site is {self.per_site_limit} (max_uploads_per_site)",
                    RETRY_AFTER_S,
                )
            self._streams[identity] += 1
        try:
            yield
        finally:
            with self._lock:
                self._streams[identity] -= 1

    @contextmanager
    def slot(self, artifact_id: str, site_id: str = "") -> Iterator[None]:
        """Hold an upload slot; BusyError when full, UploadInterruptedError when id is busy."""
        with self._lock:
            if artifact_id in self._active:
                raise UploadInterruptedError(
                    f"upload {artifact_id[:12]}… is already streaming; retry when it ends"
                )
            if len(self._active) >= self.limit:
                raise BusyError(
                    f"{len(self._active)} uploads in progress; the limit is {self.limit} "
                    "(max_concurrent_uploads)",
                    RETRY_AFTER_S,
                )
            mine = Counter(self._active.values())[site_id]
            if mine >= self.per_site_limit:
                raise BusyError(
                    f"site {site_id!r} has {mine} uploads in progress; the limit per site is "
                    f"{self.per_site_limit} (max_uploads_per_site)",
                    RETRY_AFTER_S,
                )
            self._active[artifact_id] = site_id
        try:
            yield
        finally:
            with self._lock:
                self._active.pop(artifact_id, None)


def check_staged_quota(registry: ArtifactRegistry, upload: StagedUpload, quota_bytes: int) -> None:
    """BusyError if staging ``upload`` would take its site's reserved bytes past ``quota_bytes``.

    Reserved bytes are the declared sizes of the site's other staged uploads; an
    upload already staged under the same id is a resume and is not counted twice.
    """
    others = [
        s
        for s in registry.staged_uploads()
        if s.site_id == upload.site_id and s.artifact_id != upload.artifact_id
    ]
    reserved = sum(sum(s.declared.values()) for s in others)
    received = sum(sum(s.received.values()) for s in others)
    needed = sum(upload.declared.values())
    if reserved + needed > quota_bytes:
        raise BusyError(
            f"site {upload.site_id!r} has {len(others)} unfinished upload(s) staged, reserving "
            f"{reserved} bytes ({received} received); this upload needs {needed} more, and the "
            f"quota is {quota_bytes} bytes per site (max_staged_bytes_per_site): resume or "
            "finish those uploads (staged uploads expire after upload_ttl_s)",
            RETRY_AFTER_S,
        )


class _Reader(threading.Thread):
    """Reads an iterator into a small queue, so its consumer can wait with a timeout."""

    def __init__(self, items: Iterator[T]):
        super().__init__(name="radshare-upload-reader", daemon=True)
        self.items = items
        self.queue: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=2)
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            for item in self.items:
                if not self._put((True, item)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put((False, error))
            return
        self._put((False, None))

    def _put(self, entry: tuple[bool, object]) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False


def stall_guard(
    items: Iterator[T], stall_s: float, on_stall: Callable[[], Exception]
) -> Generator[T, None, None]:
    """Yield ``items``; raise ``on_stall()`` when none arrives within ``stall_s`` seconds.

    The items are read in a helper thread; it ends when the source ends or fails
    (a gRPC request iterator does once its call is finished), and errors of the
    source are raised here, in the consumer.
    """
    reader = _Reader(iter(items))
    reader.start()
    try:
        while True:
            try:
                ok, value = reader.queue.get(timeout=stall_s)
            except queue.Empty:
                raise on_stall() from None
            if ok:
                yield value  # type: ignore[misc]
            elif value is None:
                return
            else:
                raise value  # type: ignore[misc]
    finally:
        reader.stopped.set()


def rate_floor(
    items: Iterator[T],
    min_bytes_per_s: float,
    grace_s: float,
    on_slow: Callable[[int, float], Exception],
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield ``items``; raise ``on_slow(bytes, seconds)`` once, after ``grace_s``, the
    stream's average falls below ``min_bytes_per_s`` (counted on items' ``data``; 0: off).
    """
    started_s, total_bytes = clock(), 0
    for item in items:
        total_bytes += len(getattr(item, "data", b""))
        elapsed_s = clock() - started_s
        if min_bytes_per_s and elapsed_s > grace_s and total_bytes < min_bytes_per_s * elapsed_s:
            raise on_slow(total_bytes, elapsed_s)
        yield item
