"""The PGGAN generator (Karras et al. 2018), one channel, rebuildable from its config alone.

Tensor contract: ``G(z)`` with ``z`` of shape ``[N, z_dim]`` returns
``[N, 1, H, W]`` float32 in ``[-1, 1]`` at ``H = W = resolution_px``.
During progressive training the site calls ``G.synthesize(z, res_log2, alpha)``,
which returns the unclamped image at ``2**res_log2`` pixels, faded in by ``alpha``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from shared.networks.layers import EqualizedConv2d, EqualizedLinear, PixelNorm, lerp_fade

__all__ = ["Generator", "GeneratorConfig", "feature_maps", "power_of_two_px"]


def power_of_two_px(value: int, minimum_px: int = 4) -> int:
    """``value`` if it is a power of two >= ``minimum_px``; else ValueError (pydantic validators).

    Progressive growing doubles the side from 4 px; the labeller reads the generator's side.
    """
    if value < minimum_px or value & (value - 1):
        raise ValueError(f"resolution_px must be a power of two >= {minimum_px}, got {value}")
    return value


class GeneratorConfig(BaseModel):
    """Everything needed to rebuild a generator (stored in every bundle's manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution_px: int = Field(64, description="final output size, a power of two >= 4")
    z_dim: int = Field(512, ge=1, description="latent size")
    fmap_base: int = Field(8192, ge=1, description="feature maps at stage s: fmap_base / 2**s")
    fmap_max: int = Field(512, ge=1, description="cap on feature maps per layer")
    fmap_min: int = Field(1, ge=1, description="floor on feature maps per layer")
    num_channels: int = Field(1, ge=1, description="image channels (1: radiographs)")

    @field_validator("resolution_px")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        return power_of_two_px(value)

    @property
    def max_res_log2(self) -> int:
        """log2 of the final resolution (2 for 4×4)."""
        return int(math.log2(self.resolution_px))


def feature_maps(stage: int, fmap_base: int, fmap_max: int, fmap_min: int = 1) -> int:
    """Feature maps at ``stage`` (1 for 4×4, 2 for 8×8, ...), as in Karras et al.'s ``nf``."""
    return max(fmap_min, min(int(fmap_base / 2.0**stage), fmap_max))


class _FirstBlock(nn.Module):
    """z → 4×4 feature maps: pixel norm, dense, conv."""

    def __init__(self, z_dim: int, channels: int):
        super().__init__()
        self.channels = channels
        self.norm = PixelNorm()
        self.dense = EqualizedLinear(z_dim, channels * 16, gain=math.sqrt(2) / 4)
        self.conv = EqualizedConv2d(channels, channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.norm(z)).view(-1, self.channels, 4, 4)
        x = self.norm(F.leaky_relu(x, 0.2))
        return self.norm(F.leaky_relu(self.conv(x), 0.2))


class _UpBlock(nn.Module):
    """Nearest ×2 upsampling, then two 3×3 convs with leaky ReLU and pixel norm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = PixelNorm()
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(F.leaky_relu(self.conv0(x), 0.2))
        return self.norm(F.leaky_relu(self.conv1(x), 0.2))


class Generator(nn.Module):
    """Progressive generator: a 4×4 block, one up-block per doubling, a toRGB per level."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.resolution_px = cfg.resolution_px

        def nf(stage: int) -> int:
            return feature_maps(stage, cfg.fmap_base, cfg.fmap_max, cfg.fmap_min)

        self.first = _FirstBlock(cfg.z_dim, nf(1))
        self.blocks = nn.ModuleList(
            _UpBlock(nf(r - 2), nf(r - 1)) for r in range(3, cfg.max_res_log2 + 1)
        )
        self.to_rgb = nn.ModuleList(
            EqualizedConv2d(nf(r - 1), cfg.num_channels, 1, gain=1.0)
            for r in range(2, cfg.max_res_log2 + 1)
        )

    def synthesize(self, z: torch.Tensor, res_log2: int, alpha: float = 1.0) -> torch.Tensor:
        """Unclamped image at ``2**res_log2`` px; the newest level faded in by ``alpha``."""
        if not 2 <= res_log2 <= self.cfg.max_res_log2:
            raise ValueError(f"res_log2 must be in [2, {self.cfg.max_res_log2}], got {res_log2}")
        x = self.first(z)
        if res_log2 == 2:
            return self.to_rgb[0](x)
        for block in self.blocks[: res_log2 - 3]:
            x = block(x)
        low = F.interpolate(self.to_rgb[res_log2 - 3](x), scale_factor=2, mode="nearest")
        high = self.to_rgb[res_log2 - 2](self.blocks[res_log2 - 3](x))
        return lerp_fade(low, high, alpha)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[N, z_dim]`` → ``[N, 1, resolution_px, resolution_px]`` float32 in [-1, 1]."""
        return self.synthesize(z, self.cfg.max_res_log2, 1.0).clamp(-1.0, 1.0)
