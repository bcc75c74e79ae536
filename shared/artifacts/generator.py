"""The generator bundle: what rebuilds and describes a site's generator, and its read/write.

Layout::

    <bundle>/manifest.json            GeneratorManifest + the site's Ed25519 signature
    <bundle>/generator.safetensors    G_ema's state dict, nothing else

A site writes it with :func:`write_generator_bundle` (``radshare-site publish``);
anyone loads it with :func:`load_generator`, which verifies the signature
against the consortium's key for the manifest's site (``shared.artifacts.keyring``),
every file's sha256, and that the tensors are exactly ``Generator(cfg)``'s (no
discriminator, optimiser or data), then rebuilds G without Lightning or pickle.
A training export (``generator.json`` + ``g_ema.safetensors``, unsigned) is a
different thing, read at the hub only with ``--trust-local-export``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, field_validator, model_validator

from shared.artifacts.bundle import (
    SignedManifest,
    TensorInfo,
    check_state_dict,
    read_verified,
    state_dict_spec,
    write_bundle,
)
from shared.artifacts.keyring import TrustedKey
from shared.artifacts.manifest import (
    ArtifactKind,
    BundleManifest,
    DPParameters,
    Strict,
    check_labels,
)
from shared.errors import ArtifactError
from shared.labels import NIH_LABELS
from shared.networks.generator import Generator, GeneratorConfig

__all__ = [
    "GENERATOR_FILE",
    "DataSummary",
    "GeneratorManifest",
    "LocalAuditSummary",
    "PrivacySummary",
    "TrainingPhase",
    "TrainingSummary",
    "WarmStartSummary",
    "check_generator_bundle",
    "check_generator_tensors",
    "generator_tensor_spec",
    "load_generator",
    "write_generator_bundle",
]

#: The weights file of a generator bundle.
GENERATOR_FILE = "generator.safetensors"


class TrainingPhase(Strict):
    """One phase of progressive training: a fade-in or a stabilisation at one resolution."""

    kind: Literal["fade", "stabilise"]
    resolution_px: int = Field(ge=4)
    kimg: float = Field(ge=0, description="thousands of real images shown in this phase")
    batch_size: int | None = Field(None, ge=1)


class WarmStartSummary(Strict):
    """The base G/D pair a warm-started generator was fine-tuned from (no paths)."""

    base_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the base checkpoint")
    base_kimg: float | None = Field(None, ge=0, description="kimg the base was trained for")
    base_resolution_px: int | None = Field(None, ge=4)
    base_augment: str | None = Field(None, description="the base's critic augmentation")


class TrainingSummary(Strict):
    """How long and how the generator was trained (no paths, no identifiers)."""

    kimg: float = Field(ge=0, description="thousands of real images shown in total")
    phases: list[TrainingPhase] = Field(default_factory=list)
    steps: int | None = Field(None, ge=0)
    details: dict[str, Any] = Field(
        default_factory=dict, description="other hyper-parameters (loss, optimiser, EMA, seed, ...)"
    )
    warm_start: WarmStartSummary | None = Field(
        None, description="the base of a warm start; None (or absent): trained from scratch"
    )


class DataSummary(Strict):
    """What the generator was trained on, as counts only: never an identifier."""

    num_images: int = Field(ge=0)
    counts_per_label: dict[str, int] = Field(description="label → number of training images")

    @field_validator("counts_per_label")
    @classmethod
    def _known_labels(cls, value: dict[str, int]) -> dict[str, int]:
        check_labels(value)
        for label, count in value.items():
            if count < 0:
                raise ValueError(f"counts_per_label[{label!r}] must be >= 0, got {count}")
        return value


class LocalAuditSummary(Strict):
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


class PrivacySummary(Strict):
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
        check_labels(self.label_space)
        unknown = sorted(set(self.data.counts_per_label) - set(self.label_space))
        if unknown:
            raise ValueError(f"data.counts_per_label has labels outside label_space: {unknown}")
        return self


def generator_tensor_spec(cfg: GeneratorConfig) -> dict[str, TensorInfo]:
    """Every tensor ``Generator(cfg).state_dict()`` holds, built on the meta device (no memory)."""
    return state_dict_spec(lambda: Generator(cfg))


def check_generator_tensors(
    cfg: GeneratorConfig, tensors: Mapping[str, TensorInfo], *, where: str
) -> None:
    """ArtifactError unless ``tensors`` are exactly G's state dict (no D, optimiser or data)."""
    check_state_dict(generator_tensor_spec(cfg), tensors, where=where, what="G_ema's")


def check_generator_bundle(
    model: BundleManifest, file_name: str, tensors: Mapping[str, TensorInfo]
) -> None:
    """The generator kind's tensor check (``shared.artifacts.kinds``)."""
    if not isinstance(model, GeneratorManifest):
        raise ArtifactError(f"{file_name}: kind {model.kind.value!r} is not a generator")
    check_generator_tensors(model.generator_config, tensors, where=file_name)


def write_generator_bundle(
    out_dir: Path,
    state_dict: Mapping[str, Any],
    fields: Mapping[str, Any],
    private_key: Ed25519PrivateKey,
) -> SignedManifest:
    """Write a generator bundle from G_ema's ``state_dict`` and the manifest ``fields``.

    Refuses (ArtifactError) any tensor that is not in ``Generator(cfg).state_dict()``.
    """
    from safetensors.torch import save_file

    fields = {**fields, "kind": ArtifactKind.GENERATOR.value}
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(
        dir=out_dir.parent if out_dir.parent.exists() else None
    ) as tmp:
        weights = Path(tmp) / GENERATOR_FILE
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(weights), metadata={"format": "pt"})
        return write_bundle(out_dir, fields, {GENERATOR_FILE: weights}, private_key)


def load_generator(bundle_dir: Path, trusted: TrustedKey, *, device: str = "cpu") -> Generator:
    """Verify a generator bundle and rebuild G from its manifest's config (no Lightning, no pickle).

    ``trusted``: a keyring (the signer is looked up by the manifest's site id) or
    one explicit key; see ``shared.artifacts.bundle.read_bundle``. Returns G in
    eval mode with gradients off. The weights are read once, hashed,
    header-checked, then loaded from those same bytes.
    """
    from safetensors.torch import load as load_safetensors

    signed, data = read_verified(Path(bundle_dir), trusted)
    if not isinstance(signed.model, GeneratorManifest):
        raise ArtifactError(f"{bundle_dir}: kind {signed.model.kind.value!r} is not a generator")
    G = Generator(signed.model.generator_config)
    G.load_state_dict(load_safetensors(data[GENERATOR_FILE]), strict=True)
    return G.to(device).eval().requires_grad_(False)
