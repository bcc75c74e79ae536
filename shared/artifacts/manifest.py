"""The part of a manifest every bundle kind shares, and parsing by kind.

``BundleManifest`` is what every kind has (kind, schema version, site,
creation time, files with sha256, radshare version, signature); each kind's
module in ``shared.artifacts`` (``generator``, ``labeller``, ``classifier``)
subclasses it, and ``shared.artifacts.kinds`` lists them explicitly, so the
whole publish / list / pull path carries every kind unchanged. ``DPParameters``
is here because generators and labellers both record it. Models forbid extra
fields, so nothing unvetted (a patient id, a file path) can ride along in a
manifest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.artifacts.records import ArtifactKind
from shared.artifacts.signing import Signature
from shared.errors import ArtifactError, LabelError
from shared.labels import validate_labels

__all__ = [
    "HUB_SITE_ID",
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "SITE_ID_PATTERN",
    "ArtifactKind",
    "BundleManifest",
    "DPParameters",
    "DPSegment",
    "FileEntry",
    "Strict",
    "check_labels",
    "manifest_model",
    "parse_manifest",
]

#: The manifest's file name inside a bundle folder.
MANIFEST_FILE = "manifest.json"

#: The manifest schema version this code writes and reads.
SCHEMA_VERSION = 1

#: A site id: lower-case letters, digits, '-' and '_', starting with a letter or digit.
SITE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

#: The reserved signer id of artifacts the hub itself signs (classifier bundles).
HUB_SITE_ID = "hub"

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(safetensors|json)$")


class Strict(BaseModel):
    """Frozen, no extra fields: the base of every manifest part."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def check_labels(labels: Any) -> None:
    """validate_labels, as the ValueError pydantic turns into a field error."""
    try:
        validate_labels(labels)
    except LabelError as error:
        raise ValueError(str(error)) from None


class FileEntry(Strict):
    """One file of a bundle: its sha256 and size."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class BundleManifest(Strict):
    """What every bundle's ``manifest.json`` holds, whatever its kind."""

    #: File names a bundle of this kind must hold (and may hold nothing else).
    FILE_NAMES: ClassVar[tuple[str, ...]] = ()

    schema_version: int = SCHEMA_VERSION
    kind: ArtifactKind
    site_id: str = Field(pattern=SITE_ID_PATTERN)
    created: datetime = Field(description="when the bundle was made (UTC)")
    radshare_version: str = Field(min_length=1)
    files: dict[str, FileEntry] = Field(description="file name → sha256 and size")
    signature: Signature | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is not supported (this code reads {SCHEMA_VERSION})"
            )
        return value

    @field_validator("created")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError(f"created must carry a time zone, got {value.isoformat()}")
        return value.astimezone(UTC)

    @field_validator("files")
    @classmethod
    def _safe_names(cls, value: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in value:
            if not _FILE_NAME.match(name) or name == MANIFEST_FILE:
                raise ValueError(
                    f"file name {name!r} is not allowed in a bundle "
                    "(letters, digits, . _ -, ending in .safetensors or .json)"
                )
        return value

    @model_validator(mode="after")
    def _expected_files(self) -> BundleManifest:
        expected = set(self.FILE_NAMES)
        if expected and set(self.files) != expected:
            raise ValueError(
                f"files must be exactly {sorted(expected)} for kind {self.kind.value!r}, "
                f"got {sorted(self.files)}"
            )
        return self

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of every file."""
        return sum(entry.size_bytes for entry in self.files.values())


class DPSegment(Strict):
    """Consecutive DP-SGD steps with one noise multiplier and one Poisson sample rate.

    ``(noise_multiplier, sample_rate, steps)`` is one entry of an Opacus accountant's
    ``history``; an auditor recomputes ε by composing the segments in order.
    """

    noise_multiplier: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1, description="each record's inclusion probability")
    steps: int = Field(ge=0)
    label: str | None = Field(default=None, max_length=64, description="e.g. 'fade 16px'")


class DPParameters(Strict):
    """Differential-privacy parameters of training (DP-SGD on the critic)."""

    epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    noise_multiplier: float = Field(ge=0)
    max_grad_norm: float = Field(gt=0)
    accountant: str = Field("prv", min_length=1)
    target_epsilon: float | None = Field(default=None, gt=0, description="the budget asked for")
    segments: tuple[DPSegment, ...] = Field(
        default=(), description="steps per training phase, in order: what ε composes"
    )


def manifest_model(kind: ArtifactKind | str) -> type[BundleManifest]:
    """The manifest model of ``kind`` (``shared.artifacts.kinds``); ArtifactError if unknown."""
    # kinds imports every kind module, and they import this one: look the table up on use.
    from shared.artifacts.kinds import KINDS

    try:
        return KINDS[ArtifactKind(kind)].manifest
    except (ValueError, KeyError):
        known = sorted(k.value for k in KINDS)
        raise ArtifactError(f"no manifest model for kind {kind!r}; known kinds: {known}") from None


def _describe(error: ValidationError, where: str) -> str:
    parts = []
    for item in error.errors()[:3]:
        field = ".".join(str(p) for p in item["loc"]) or "(manifest)"
        value = repr(item.get("input"))[:80]
        parts.append(f"field {field!r}: {item['msg']} (value {value})")
    return f"{where}: " + "; ".join(parts)


def parse_manifest(raw: Mapping[str, Any], *, where: str = MANIFEST_FILE) -> BundleManifest:
    """Validate a manifest's JSON object with the model its ``kind`` names."""
    model = manifest_model(str(raw.get("kind")))
    try:
        return model.model_validate(dict(raw))
    except ValidationError as error:
        raise ArtifactError(_describe(error, where)) from error
