"""The labeller: a DenseNet-121 multi-label classifier at the generator's own resolution.

Segal et al. (2021, §3.3 and §4.3) label a PGGAN's samples with a DenseNet-121 and
found class optimisation far more reliable when the classifier reads the
generator's resolution directly instead of a resized image; so the labeller takes
one channel at ``resolution_px`` and nothing else.

Tensor contract: ``labeller(x)`` with ``x`` of shape ``[N, 1, R, R]`` float32 in
``[-1, 1]`` (``R = cfg.resolution_px``) returns logits ``[N, C]`` over
``cfg.class_names``; ``labeller.embed(x)`` returns the penultimate features
``[N, labeller.num_features]`` (after the last ReLU and global average pooling),
used for feature-space audits and Fréchet distances.

The architecture is MONAI's ``DenseNet121`` (no torchvision, no download). A
labeller's export is ``labeller.safetensors`` (state dict) + ``labeller.json``
(:class:`LabellerCard`: config, per-class Youden thresholds in logit units,
validation and test AUCs, DP parameters if any); loading never unpickles. A labeller
is published as a signed bundle (``shared.artifacts.bundle``): ``manifest.json``
(:class:`LabellerManifest`, kind ``labeller``, the card's fields plus site, files and
signature) + ``labeller.safetensors``; importing this module registers that kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal, cast

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from monai.networks.nets import DenseNet121
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file, save_file
from torch import nn

from shared.artifacts.bundle import (
    SignedManifest,
    TensorInfo,
    read_bundle,
    register_tensor_check,
    write_bundle,
)
from shared.artifacts.manifest import ArtifactKind, BundleManifest, DPParameters, register_manifest
from shared.errors import ArtifactError, IntegrityError
from shared.labels import NIH_LABELS

__all__ = [
    "CARD_FILE",
    "LABELLER_SCHEMA_VERSION",
    "WEIGHTS_FILE",
    "ClassMetrics",
    "DPParameters",
    "Labeller",
    "LabellerCard",
    "LabellerConfig",
    "LabellerDataSummary",
    "LabellerManifest",
    "LabellerTrainingSummary",
    "labeller_tensor_spec",
    "load_labeller_bundle",
    "load_labeller_export",
    "save_labeller_export",
    "write_labeller_bundle",
]

LABELLER_SCHEMA_VERSION = 1
WEIGHTS_FILE = "labeller.safetensors"
CARD_FILE = "labeller.json"


class LabellerConfig(BaseModel):
    """Everything needed to rebuild a labeller (stored in its card and manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution_px: int = Field(64, description="input size; must equal the generator's")
    class_names: tuple[str, ...] = Field(NIH_LABELS, description="output order of the logits")
    init_features: Annotated[int, Field(ge=1, description="DenseNet stem width (121: 64)")] = 64
    growth_rate: Annotated[int, Field(ge=1, description="DenseNet growth rate (121: 32)")] = 32
    block_config: Annotated[
        tuple[int, int, int, int], Field(description="layers per dense block (121: 6, 12, 24, 16)")
    ] = (6, 12, 24, 16)

    @field_validator("resolution_px")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        # The stem and three transitions halve the image five times: 32 px is the floor.
        if value < 32 or value & (value - 1):
            raise ValueError(f"resolution_px must be a power of two >= 32, got {value}")
        return value

    @field_validator("class_names")
    @classmethod
    def _known_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in NIH_LABELS]
        if unknown:
            raise ValueError(f"unknown class names {unknown}; valid: {', '.join(NIH_LABELS)}")
        if not value or len(set(value)) != len(value):
            raise ValueError(f"class_names must be non-empty and unique, got {list(value)}")
        return value


class Labeller(nn.Module):
    """DenseNet-121 over one channel: ``[N, 1, R, R]`` in [-1, 1] → logits ``[N, C]``."""

    def __init__(self, cfg: LabellerConfig):
        super().__init__()
        self.cfg = cfg
        self.net = DenseNet121(
            spatial_dims=2,
            in_channels=1,
            out_channels=len(cfg.class_names),
            init_features=cfg.init_features,
            growth_rate=cfg.growth_rate,
            block_config=cfg.block_config,
        )

    @property
    def num_features(self) -> int:
        """Width of :meth:`embed`'s output."""
        return int(cast(nn.Linear, self.net.class_layers.out).in_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, num_features]`` (ReLU, global average pool)."""
        r = self.cfg.resolution_px
        if x.ndim != 4 or x.shape[1:] != (1, r, r):
            raise ValueError(f"labeller expects [N, 1, {r}, {r}], got {list(x.shape)}")
        trunk = cast(nn.Module, self.net.features)
        head = cast(nn.Sequential, self.net.class_layers)  # relu, pool, flatten, out
        return head[:-1](trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, len(class_names)]``."""
        return cast(nn.Sequential, self.net.class_layers)[-1](self.embed(x))


class ClassMetrics(BaseModel):
    """One class of a labeller: its Youden threshold and how well it separates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    threshold_logit: float | None = Field(
        None, description="Youden's J cut-off on the validation ROC; None: no val positives"
    )
    val_auc: float | None = None
    test_auc: float | None = None
    test_auc_ci95: tuple[float, float] | None = None
    train_positives: Annotated[int, Field(ge=0)] = 0
    val_positives: Annotated[int, Field(ge=0)] = 0
    test_positives: Annotated[int, Field(ge=0)] = 0


class LabellerTrainingSummary(BaseModel):
    """How a labeller was trained (numbers and names only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs_trained: Annotated[int, Field(ge=0)] = 0
    best_val_macro_auc: float | None = None
    lr: float = 1e-3
    batch_size: Annotated[int, Field(ge=1)] = 32
    seed: int = 0
    loss: str = "weighted binary cross entropy (Guendel et al.)"
    augmentation: dict[str, float] = Field(default_factory=dict)


class LabellerDataSummary(BaseModel):
    """What a labeller was trained and evaluated on, as counts only: never an identifier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images_per_split: dict[Literal["train", "val", "test"], int] = Field(default_factory=dict)


class _LabellerDescription(BaseModel):
    """Fields shared by the export card and the bundle manifest."""

    labeller_config: LabellerConfig
    classes: list[ClassMetrics]
    val_macro_auc: float | None = None
    test_macro_auc: float | None = None
    input_format: str = "[N, 1, R, R] float32 in [-1, 1]; R = labeller_config.resolution_px"
    training: LabellerTrainingSummary = Field(default_factory=lambda: LabellerTrainingSummary())
    data: LabellerDataSummary = Field(default_factory=lambda: LabellerDataSummary())
    dp: DPParameters | None = None

    @model_validator(mode="after")
    def _classes_match_config(self) -> _LabellerDescription:
        names = [c.name for c in self.classes]
        if names != list(self.labeller_config.class_names):
            raise ValueError(
                f"classes {names} do not match labeller_config.class_names "
                f"{list(self.labeller_config.class_names)}"
            )
        return self

    @property
    def thresholds_logit(self) -> dict[str, float | None]:
        """Class name → Youden threshold in logit units (None: class cannot be judged)."""
        return {c.name: c.threshold_logit for c in self.classes}


class LabellerCard(_LabellerDescription):
    """``labeller.json`` beside the weights of a training export."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = LABELLER_SCHEMA_VERSION
    kind: Literal["labeller"] = "labeller"


@register_manifest
class LabellerManifest(_LabellerDescription, BundleManifest):
    """Manifest of a labeller bundle: ``labeller.safetensors`` holds the state dict only."""

    FILE_NAMES: ClassVar[tuple[str, ...]] = (WEIGHTS_FILE,)

    kind: Literal[ArtifactKind.LABELLER] = ArtifactKind.LABELLER
    resolution_px: int

    @model_validator(mode="after")
    def _resolution_matches(self) -> LabellerManifest:
        if self.resolution_px != self.labeller_config.resolution_px:
            raise ValueError(
                f"resolution_px {self.resolution_px} != labeller_config.resolution_px "
                f"{self.labeller_config.resolution_px}"
            )
        return self

    def card(self) -> LabellerCard:
        """The description as an export card."""
        return LabellerCard.model_validate(self.model_dump(include=set(_DESCRIPTION_FIELDS)))


_DESCRIPTION_FIELDS = tuple(_LabellerDescription.model_fields)


def labeller_tensor_spec(cfg: LabellerConfig) -> dict[str, TensorInfo]:
    """Every tensor ``Labeller(cfg).state_dict()`` holds (built on the meta device)."""
    with torch.device("meta"):
        labeller = Labeller(cfg)
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    return {
        name: TensorInfo(dtypes.get(t.dtype, str(t.dtype)), tuple(t.shape))
        for name, t in labeller.state_dict().items()
    }


@register_tensor_check(ArtifactKind.LABELLER)
def _check_labeller_tensors(
    model: BundleManifest, file_name: str, tensors: Mapping[str, TensorInfo]
) -> None:
    assert isinstance(model, LabellerManifest)
    expected = labeller_tensor_spec(model.labeller_config)
    if set(tensors) != set(expected):
        extra, missing = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
        raise ArtifactError(
            f"{file_name}: not the labeller's tensors: extra {extra[:5]}, missing {missing[:5]}"
        )
    for name, spec in expected.items():
        if tensors[name] != spec:
            raise ArtifactError(f"{file_name}: tensor {name!r} is {tensors[name]}, expected {spec}")


def write_labeller_bundle(
    out_dir: Path | str,
    labeller: Labeller,
    card: LabellerCard,
    site_id: str,
    private_key: Ed25519PrivateKey,
) -> SignedManifest:
    """Write a signed labeller bundle (``manifest.json`` + ``labeller.safetensors``)."""
    out_dir = Path(out_dir)
    fields = {
        **card.model_dump(mode="json", include=set(_DESCRIPTION_FIELDS)),
        "kind": ArtifactKind.LABELLER.value,
        "site_id": site_id,
        "resolution_px": card.labeller_config.resolution_px,
    }
    with tempfile.TemporaryDirectory(
        dir=out_dir.parent if out_dir.parent.exists() else None
    ) as tmp:
        weights = Path(tmp) / WEIGHTS_FILE
        state = {k: v.detach().cpu().contiguous() for k, v in labeller.state_dict().items()}
        save_file(state, str(weights), metadata={"format": "pt"})
        return write_bundle(out_dir, fields, {WEIGHTS_FILE: weights}, private_key)


def load_labeller_bundle(
    bundle_dir: Path | str,
    public_key: Ed25519PublicKey | Path | bytes | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[Labeller, LabellerCard, str]:
    """Verify a labeller bundle (signature, sha256, tensors); return it, its card and its id."""
    bundle_dir = Path(bundle_dir)
    signed = read_bundle(bundle_dir, public_key)
    if not isinstance(signed.model, LabellerManifest):
        raise ArtifactError(f"{bundle_dir}: kind {signed.model.kind.value!r} is not a labeller")
    data = (bundle_dir / WEIGHTS_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != signed.model.files[WEIGHTS_FILE].sha256:
        raise IntegrityError(f"{bundle_dir / WEIGHTS_FILE}: changed after verification")
    labeller = Labeller(signed.model.labeller_config)
    labeller.load_state_dict(load_safetensors(data), strict=True)
    return labeller.to(map_location).eval(), signed.model.card(), signed.artifact_id


def save_labeller_export(export_dir: Path | str, labeller: Labeller, card: LabellerCard) -> Path:
    """Write ``labeller.safetensors`` and ``labeller.json`` atomically into ``export_dir``."""
    if card.labeller_config != labeller.cfg:
        raise ArtifactError("card.labeller_config differs from the labeller's own config")
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in labeller.state_dict().items()}
    tmp = export_dir / f"{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, export_dir / WEIGHTS_FILE)
    tmp = export_dir / f"{CARD_FILE}.tmp"
    tmp.write_text(card.model_dump_json(indent=2))
    os.replace(tmp, export_dir / CARD_FILE)
    return export_dir


def load_labeller_export(
    export_dir: Path | str, map_location: str | torch.device = "cpu"
) -> tuple[Labeller, LabellerCard]:
    """Rebuild a labeller from ``labeller.json`` and ``labeller.safetensors`` (eval mode).

    Raises:
        ArtifactError: a missing file, an invalid card or weights that do not fit the config.
    """
    export_dir = Path(export_dir)
    card_path, weights_path = export_dir / CARD_FILE, export_dir / WEIGHTS_FILE
    for path in (card_path, weights_path):
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (a labeller export needs both files)")
    try:
        card = LabellerCard.model_validate(json.loads(card_path.read_text()))
    except ValueError as error:
        raise ArtifactError(f"{card_path}: invalid labeller card: {error}") from error
    labeller = Labeller(card.labeller_config)
    try:
        labeller.load_state_dict(load_file(str(weights_path), device=str(map_location)))
    except RuntimeError as error:
        raise ArtifactError(f"{weights_path}: weights do not fit the config: {error}") from error
    return labeller.to(map_location).eval(), card
