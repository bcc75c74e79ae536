"""Plain records the hub API speaks in (no protobuf, no torch): kinds, summaries, chunks.

``shared.proto.serde`` converts them to and from protobuf; the hub's handlers
and the hub client see only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ArchiveChunk",
    "ArchiveHeader",
    "ArtifactKind",
    "ArtifactSummary",
    "FileChunk",
    "FileInfo",
    "ManifestReply",
    "PublishHeader",
    "PublishItem",
    "PublishResult",
    "UploadStatus",
]


class ArtifactKind(StrEnum):
    """What a bundle holds."""

    GENERATOR = "generator"
    LABELLER = "labeller"
    CLASSIFIER = "classifier"


@dataclass(frozen=True)
class FileInfo:
    """One stored file of an artifact."""

    name: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ArtifactSummary:
    """What the hub lists about a published artifact."""

    artifact_id: str
    kind: ArtifactKind
    site_id: str
    created: str
    published_at: str
    size_bytes: int
    files: tuple[FileInfo, ...]
    radshare_version: str
    #: Stored bytes' last verified state at the hub (``ok``, ``missing``, ``corrupt``,
    #: ``unchecked``; "" where unknown): an observation, so not part of equality.
    integrity: str = field(default="", compare=False)


@dataclass(frozen=True)
class PublishHeader:
    """First item of a publish stream: the kind and the signed manifest bytes."""

    kind: ArtifactKind | None
    manifest_json: bytes


@dataclass(frozen=True)
class FileChunk:
    """A slice of one bundle file starting at byte ``offset``."""

    file_name: str
    offset: int
    data: bytes


PublishItem = PublishHeader | FileChunk


@dataclass(frozen=True)
class PublishResult:
    """The hub's answer to a publish: the artifact, and whether this call created it."""

    artifact: ArtifactSummary
    created: bool


@dataclass(frozen=True)
class UploadStatus:
    """How much of an upload the hub holds: committed, or bytes staged per file."""

    artifact_id: str
    committed: bool
    received: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestReply:
    """A manifest as the hub serves it, with the site key it verified the signature with."""

    artifact: ArtifactSummary
    manifest_json: bytes
    signer_public_key_pem: bytes


@dataclass(frozen=True)
class ArchiveHeader:
    """First item of a ``PullArchive`` stream: which archive, its manifest, how much follows."""

    archive_id: str  # sha256 of the manifest's bytes
    manifest_path: str  # the manifest's path inside the archive (streamed first)
    total_bytes: int  # the manifest plus every listed file
    start_path: str  # where this stream starts ("" = at the manifest)
    start_offset: int


@dataclass(frozen=True)
class ArchiveChunk:
    """A slice of one archive file (``path`` relative to the archive) from byte ``offset``."""

    path: str
    offset: int
    data: bytes
