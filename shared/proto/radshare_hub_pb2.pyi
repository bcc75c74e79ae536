from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_KIND_UNSPECIFIED: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_GENERATOR: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_LABELLER: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_CLASSIFIER: _ClassVar[ArtifactKind]

class PullPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PULL_PURPOSE_UNSPECIFIED: _ClassVar[PullPurpose]
    PULL_PURPOSE_SYNTHESIS: _ClassVar[PullPurpose]
ARTIFACT_KIND_UNSPECIFIED: ArtifactKind
ARTIFACT_KIND_GENERATOR: ArtifactKind
ARTIFACT_KIND_LABELLER: ArtifactKind
ARTIFACT_KIND_CLASSIFIER: ArtifactKind
PULL_PURPOSE_UNSPECIFIED: PullPurpose
PULL_PURPOSE_SYNTHESIS: PullPurpose

class PublishHeader(_message.Message):
    __slots__ = ("kind", "manifest_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: ArtifactKind
    manifest_json: bytes
    def __init__(self, kind: _Optional[_Union[ArtifactKind, str]] = ..., manifest_json: _Optional[bytes] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("file_name", "offset", "data")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    offset: int
    data: bytes
    def __init__(self, file_name: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PublishHeader
    chunk: FileChunk
    def __init__(self, header: _Optional[_Union[PublishHeader, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...

class FileInfo(_message.Message):
    __slots__ = ("name", "sha256", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ArtifactSummary(_message.Message):
    __slots__ = ("artifact_id", "kind", "site_id", "created", "published_at", "size_bytes", "files", "radshare_version", "integrity")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    RADSHARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    INTEGRITY_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    kind: ArtifactKind
    site_id: str
    created: str
    published_at: str
    size_bytes: int
    files: _containers.RepeatedCompositeFieldContainer[FileInfo]
    radshare_version: str
    integrity: str
    def __init__(self, artifact_id: _Optional[str] = ..., kind: _Optional[_Union[ArtifactKind, str]] = ..., site_id: _Optional[str] = ..., created: _Optional[str] = ..., published_at: _Optional[str] = ..., size_bytes: _Optional[int] = ..., files: _Optional[_Iterable[_Union[FileInfo, _Mapping]]] = ..., radshare_version: _Optional[str] = ..., integrity: _Optional[str] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("artifact", "created")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    artifact: ArtifactSummary
    created: bool
    def __init__(self, artifact: _Optional[_Union[ArtifactSummary, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class UploadStatusRequest(_message.Message):
    __slots__ = ("artifact_id",)
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    def __init__(self, artifact_id: _Optional[str] = ...) -> None: ...

class UploadStatusResponse(_message.Message):
    __slots__ = ("artifact_id", "committed", "received")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    committed: bool
    received: _containers.RepeatedCompositeFieldContainer[FileOffset]
    def __init__(self, artifact_id: _Optional[str] = ..., committed: _Optional[bool] = ..., received: _Optional[_Iterable[_Union[FileOffset, _Mapping]]] = ...) -> None: ...

class FileOffset(_message.Message):
    __slots__ = ("file_name", "size_bytes")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    size_bytes: int
    def __init__(self, file_name: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("kind", "site_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    kind: ArtifactKind
    site_id: str
    def __init__(self, kind: _Optional[_Union[ArtifactKind, str]] = ..., site_id: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("artifacts",)
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactSummary]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[ArtifactSummary, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("artifact_id", "kind", "purpose", "override_reason")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_REASON_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    kind: ArtifactKind
    purpose: PullPurpose
    override_reason: str
    def __init__(self, artifact_id: _Optional[str] = ..., kind: _Optional[_Union[ArtifactKind, str]] = ..., purpose: _Optional[_Union[PullPurpose, str]] = ..., override_reason: _Optional[str] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("artifact", "manifest_json", "signer_public_key_pem")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNER_PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    artifact: ArtifactSummary
    manifest_json: bytes
    signer_public_key_pem: bytes
    def __init__(self, artifact: _Optional[_Union[ArtifactSummary, _Mapping]] = ..., manifest_json: _Optional[bytes] = ..., signer_public_key_pem: _Optional[bytes] = ...) -> None: ...

class PullArchiveRequest(_message.Message):
    __slots__ = ("archive_id", "start_path", "start_offset")
    ARCHIVE_ID_FIELD_NUMBER: _ClassVar[int]
    START_PATH_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    archive_id: str
    start_path: str
    start_offset: int
    def __init__(self, archive_id: _Optional[str] = ..., start_path: _Optional[str] = ..., start_offset: _Optional[int] = ...) -> None: ...

class ArchiveHeader(_message.Message):
    __slots__ = ("archive_id", "manifest_path", "total_bytes", "start_path", "start_offset")
    ARCHIVE_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_PATH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    START_PATH_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    archive_id: str
    manifest_path: str
    total_bytes: int
    start_path: str
    start_offset: int
    def __init__(self, archive_id: _Optional[str] = ..., manifest_path: _Optional[str] = ..., total_bytes: _Optional[int] = ..., start_path: _Optional[str] = ..., start_offset: _Optional[int] = ...) -> None: ...

class ArchiveChunk(_message.Message):
    __slots__ = ("path", "offset", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PullArchiveResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ArchiveHeader
    chunk: ArchiveChunk
    def __init__(self, header: _Optional[_Union[ArchiveHeader, _Mapping]] = ..., chunk: _Optional[_Union[ArchiveChunk, _Mapping]] = ...) -> None: ...

class PutAuditReportRequest(_message.Message):
    __slots__ = ("report_json",)
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    report_json: bytes
    def __init__(self, report_json: _Optional[bytes] = ...) -> None: ...

class PutAuditReportResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class AuditReportsRequest(_message.Message):
    __slots__ = ("generator_id", "site_id")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    generator_id: str
    site_id: str
    def __init__(self, generator_id: _Optional[str] = ..., site_id: _Optional[str] = ...) -> None: ...

class AuditReportsResponse(_message.Message):
    __slots__ = ("report_json",)
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    report_json: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, report_json: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AuthorizeSynthesisRequest(_message.Message):
    __slots__ = ("generator_id", "override_reason")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_REASON_FIELD_NUMBER: _ClassVar[int]
    generator_id: str
    override_reason: str
    def __init__(self, generator_id: _Optional[str] = ..., override_reason: _Optional[str] = ...) -> None: ...

class AuditDecisionResponse(_message.Message):
    __slots__ = ("decision_json",)
    DECISION_JSON_FIELD_NUMBER: _ClassVar[int]
    decision_json: bytes
    def __init__(self, decision_json: _Optional[bytes] = ...) -> None: ...

class AuditStatesRequest(_message.Message):
    __slots__ = ("site_id",)
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    def __init__(self, site_id: _Optional[str] = ...) -> None: ...

class AuditStatesResponse(_message.Message):
    __slots__ = ("decisions_json",)
    DECISIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    decisions_json: bytes
    def __init__(self, decisions_json: _Optional[bytes] = ...) -> None: ...

class WithdrawRequest(_message.Message):
    __slots__ = ("artifact_id", "reason")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    reason: str
    def __init__(self, artifact_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WithdrawResponse(_message.Message):
    __slots__ = ("withdrawal_json", "created")
    WITHDRAWAL_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    withdrawal_json: bytes
    created: bool
    def __init__(self, withdrawal_json: _Optional[bytes] = ..., created: _Optional[bool] = ...) -> None: ...
