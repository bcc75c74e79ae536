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
validation and test AUCs, DP parameters if any); loading never unpickles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from monai.networks.nets import DenseNet121
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from shared.errors import ArtifactError
from shared.labels import NIH_LABELS

__all__ = [
    "LABELLER_SCHEMA_VERSION",
    "ClassMetrics",
    "DPParameters",
    "Labeller",
    "LabellerCard",
    "LabellerConfig",
    "load_labeller_export",
    "save_labeller_export",
]

LABELLER_SCHEMA_VERSION = 1
WEIGHTS_FILE = "labeller.safetensors"
CARD_FILE = "labeller.json"


class LabellerConfig(BaseModel):
    """Everything needed to rebuild a labeller (stored in its card and manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution_px: int = Field(64, description="input size; must equal the generator's")
    class_names: tuple[str, ...] = Field(NIH_LABELS, description="output order of the logits")
    init_features: int = Field(64, ge=1, description="DenseNet stem width (121: 64)")
    growth_rate: int = Field(32, ge=1, description="DenseNet growth rate (121: 32)")
    block_config: tuple[int, int, int, int] = Field(
        (6, 12, 24, 16), description="layers per dense block (121: 6, 12, 24, 16)"
    )

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
        return int(self.net.class_layers.out.in_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, num_features]`` (ReLU, global average pool)."""
        r = self.cfg.resolution_px
        if x.ndim != 4 or x.shape[1:] != (1, r, r):
            raise ValueError(f"labeller expects [N, 1, {r}, {r}], got {list(x.shape)}")
        head = self.net.class_layers
        return head.flatten(head.pool(head.relu(self.net.features(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, len(class_names)]``."""
        return self.net.class_layers.out(self.embed(x))


class ClassMetrics(BaseModel):
    """One class of a labeller: its Youden threshold and how well it separates."""

    model_config = ConfigDict(extra="forbid")

    name: str
    threshold_logit: float | None = Field(
        None, description="Youden's J cut-off on the validation ROC; None: no val positives"
    )
    val_auc: float | None = None
    test_auc: float | None = None
    test_auc_ci95: tuple[float, float] | None = None
    train_positives: int = 0
    val_positives: int = 0
    test_positives: int = 0


class DPParameters(BaseModel):
    """Differential-privacy parameters of a labeller trained with DP-SGD."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    accountant: str = "prv"


class LabellerCard(BaseModel):
    """The JSON beside a labeller's weights: config, per-class thresholds and AUCs."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = LABELLER_SCHEMA_VERSION
    kind: Literal["labeller"] = "labeller"
    labeller_config: LabellerConfig
    classes: list[ClassMetrics]
    val_macro_auc: float | None = None
    test_macro_auc: float | None = None
    input_format: str = "[N, 1, R, R] float32 in [-1, 1]; R = labeller_config.resolution_px"
    training: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="counts only, no identifiers")
    dp: DPParameters | None = None

    @model_validator(mode="after")
    def _classes_match_config(self) -> LabellerCard:
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
