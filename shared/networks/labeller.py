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

The architecture is MONAI's ``DenseNet121`` (no torchvision, no download). Its
export card, signed bundle and loaders are in :mod:`shared.artifacts.labeller`.
"""

from __future__ import annotations

from typing import Annotated, cast

import torch
from monai.networks.nets import DenseNet121
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from shared.labels import NIH_LABELS
from shared.networks.generator import power_of_two_px

__all__ = ["Labeller", "LabellerConfig"]


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
        return power_of_two_px(value, minimum_px=32)

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
