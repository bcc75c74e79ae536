"""Versioned manifest models of every bundle a site or the hub publishes.

``BundleManifest`` is the part every kind shares (kind, schema version, site,
creation time, files with sha256, radshare version, signature);
``GeneratorManifest`` adds what rebuilds and describes a generator. Later
kinds (labeller, classifier) subclass ``BundleManifest`` and call
``register_manifest``, and the whole publish / list / pull path then carries
them unchanged. Models forbid extra fields, so nothing unvetted (a patient id,
a file path) can ride along in a manifest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.artifacts.records import ArtifactKind
from shared.artifacts.signing import Signature
from shared.errors import ArtifactError, LabelError
from shared.labels import NIH_LABELS, validate_labels
from shared.networks.generator import GeneratorConfig

__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "SITE_ID_PATTERN",
    "ArtifactKind",
    "BundleManifest",
    "DPParameters",
    "DPSegment",
    "DataSummary",
    "FileEntry",
    "GeneratorManifest",
    "LocalAuditSummary",
    "PrivacySummary",
    "TrainingPhase",
    "TrainingSummary",
    "manifest_model",
    "parse_manifest",
    "register_manifest",
]

#: The manifest's file name inside a bundle folder.
MANIFEST_FILE = "manifest.json"

#: The manifest schema version this code writes and reads.
SCHEMA_VERSION = 1

#: A site id: lower-case letters, digits, '-' and '_', starting with a letter or digit.
SITE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(safetensors|json)$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_labels(labels: Any) -> None:
    """validate_labels, as the ValueError pydantic turns into a field error."""
    try:
        validate_labels(labels)
    except LabelError as error:
        raise ValueError(str(error)) from None


class FileEntry(_Strict):
    """One file of a bundle: its sha256 and size."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class BundleManifest(_Strict):
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


class TrainingPhase(_Strict):
    """One phase of progressive training: a fade-in or a stabilisation at one resolution."""

    kind: Literal["fade", "stabilise"]
    resolution_px: int = Field(ge=4)
    kimg: float = Field(ge=0, description="thousands of real images shown in this phase")
    batch_size: int | None = Field(None, ge=1)


class TrainingSummary(_Strict):
    """How long and how the generator was trained (no paths, no identifiers)."""

    kimg: float = Field(ge=0, description="thousands of real images shown in total")
    phases: list[TrainingPhase] = Field(default_factory=list)
    steps: int | None = Field(None, ge=0)
    details: dict[str, Any] = Field(
        default_factory=dict, description="other hyper-parameters (loss, optimiser, EMA, seed, ...)"
    )


class DataSummary(_Strict):
    """What the generator was trained on, as counts only: never an identifier."""

    num_images: int = Field(ge=0)
    counts_per_label: dict[str, int] = Field(description="label → number of training images")

    @field_validator("counts_per_label")
    @classmethod
    def _known_labels(cls, value: dict[str, int]) -> dict[str, int]:
        _check_labels(value)
        for label, count in value.items():
            if count < 0:
                raise ValueError(f"counts_per_label[{label!r}] must be >= 0, got {count}")
        return value


class DPSegment(_Strict):
    """Consecutive DP-SGD steps with one noise multiplier and one Poisson sample rate.

    ``(noise_multiplier, sample_rate, steps)`` is one entry of an Opacus accountant's
    ``history``; an auditor recomputes ε by composing the segments in order.
    """

    noise_multiplier: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1, description="each record's inclusion probability")
    steps: int = Field(ge=0)
    label: str | None = Field(default=None, max_length=64, description="e.g. 'fade 16px'")


class DPParameters(_Strict):
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


class LocalAuditSummary(_Strict):
    """The site's pre-publication audit, as aggregates (filled in by the audit step)."""

    passed: bool
    method: str = Field(min_length=1, description="e.g. 'ssim-nn' (SSIM nearest neighbours)")
    metrics: dict[str, float] = Field(default_factory=dict)
    thresholds: dict[str, float] = Field(default_factory=dict)
    report_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    override_reason: str | None = Field(
        None,
        min_length=10,
        max_length=500,
        description="set when the site published despite a failed, stale or missing audit",
    )


class PrivacySummary(_Strict):
    """DP parameters (None: trained without DP) and the local audit summary (None: not run)."""

    dp: DPParameters | None = None
    audit: LocalAuditSummary | None = None


class GeneratorManifest(BundleManifest):
    """Manifest of a generator bundle: ``generator.safetensors`` holds G_ema only."""

    FILE_NAMES: ClassVar[tuple[str, ...]] = ("generator.safetensors",)

    kind: Literal[ArtifactKind.GENERATOR] = ArtifactKind.GENERATOR
    generator_config: GeneratorConfig
    resolution_px: int
    z_dim: int
    label_space: tuple[str, ...] = NIH_LABELS
    training: TrainingSummary
    data: DataSummary
    privacy: PrivacySummary = Field(default_factory=PrivacySummary)

    @model_validator(mode="after")
    def _consistent(self) -> GeneratorManifest:
        cfg = self.generator_config
        if self.resolution_px != cfg.resolution_px:
            raise ValueError(
                f"resolution_px {self.resolution_px} != generator_config.resolution_px "
                f"{cfg.resolution_px}"
            )
        if self.z_dim != cfg.z_dim:
            raise ValueError(f"z_dim {self.z_dim} != generator_config.z_dim {cfg.z_dim}")
        _check_labels(self.label_space)
        unknown = sorted(set(self.data.counts_per_label) - set(self.label_space))
        if unknown:
            raise ValueError(f"data.counts_per_label has labels outside label_space: {unknown}")
        return self


_MODELS: dict[ArtifactKind, type[BundleManifest]] = {}


def register_manifest(model: type[BundleManifest]) -> type[BundleManifest]:
    """Register the manifest model of one kind (usable as a class decorator)."""
    kind = model.model_fields["kind"].default
    if not isinstance(kind, ArtifactKind):
        raise TypeError(f"{model.__name__}.kind needs an ArtifactKind default, got {kind!r}")
    _MODELS[kind] = model
    return model


register_manifest(GeneratorManifest)


def manifest_model(kind: ArtifactKind | str) -> type[BundleManifest]:
    """The manifest model registered for ``kind``; ArtifactError listing the known kinds."""
    try:
        return _MODELS[ArtifactKind(kind)]
    except (ValueError, KeyError):
        known = sorted(k.value for k in _MODELS)
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
