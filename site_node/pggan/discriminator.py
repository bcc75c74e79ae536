"""The PGGAN critic (Karras et al. 2018), the generator's mirror; it never leaves the site.

Per level a 1×1 ``fromRGB``; per doubling a block conv3×3 → conv3×3 → 2×2 average pool;
the new level fades in on the *input* side (the half-resolution image through the
previous ``fromRGB``, lerped by ``alpha``); a final 4×4 block minibatch-stddev →
conv3×3 → dense → dense(1). Equalised learning rate throughout (``shared.networks.layers``).

Tensor contract: ``D(images, res_log2, alpha)`` with ``images`` ``[N, 1, 2**res_log2, 2**res_log2]``
float32 in [-1, 1] returns scores ``[N]`` (unbounded; a Wasserstein critic).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from shared.networks.generator import GeneratorConfig, feature_maps
from shared.networks.layers import EqualizedConv2d, EqualizedLinear, lerp_fade

__all__ = ["Discriminator", "DiscriminatorConfig", "MinibatchStddev", "minibatch_stddev"]


class DiscriminatorConfig(BaseModel):
    """Everything needed to rebuild a critic; mirrors :class:`GeneratorConfig`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution_px: int = Field(64, description="final input size, a power of two >= 4")
    fmap_base: int = Field(8192, ge=1)
    fmap_max: int = Field(512, ge=1)
    fmap_min: int = Field(1, ge=1)
    num_channels: int = Field(1, ge=1)
    use_minibatch_stddev: bool = Field(True, description="off for DP (it mixes samples)")
    mbstd_group_size: int = Field(4, ge=1)

    @classmethod
    def mirror(cls, cfg: GeneratorConfig, **overrides: Any) -> DiscriminatorConfig:
        """The critic that grows in step with generator ``cfg``."""
        return cls(
            resolution_px=cfg.resolution_px,
            fmap_base=cfg.fmap_base,
            fmap_max=cfg.fmap_max,
            fmap_min=cfg.fmap_min,
            num_channels=cfg.num_channels,
            **overrides,
        )

    @property
    def max_res_log2(self) -> int:
        return int(math.log2(self.resolution_px))


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one feature map: the stddev over groups of samples, averaged (Karras sec. 3).

    Samples ``i, i + M, i + 2M, ...`` (``M = N / G``) form a group, as in Karras et al.'s
    reshape ``[G, M, C, H, W]``; ``G`` is the largest divisor of ``N`` not above
    ``group_size``. Returns ``[N, C + 1, H, W]``.
    """
    n, _, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.reshape(g, n // g, *x.shape[1:])
    y = y.float() if y.dtype in (torch.float16, torch.bfloat16) else y
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (y + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [M]
    y = y.to(x.dtype).reshape(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y], dim=1)


class MinibatchStddev(nn.Module):
    """Module form of :func:`minibatch_stddev`."""

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return minibatch_stddev(x, self.group_size)


class _DownBlock(nn.Module):
    """conv3×3 → conv3×3 → 2×2 average pool, leaky ReLU 0.2 after each conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv0(x), 0.2)
        x = F.leaky_relu(self.conv1(x), 0.2)
        return F.avg_pool2d(x, 2)


class _FinalBlock(nn.Module):
    """4×4 features → score: [minibatch stddev] → conv3×3 → dense → dense(1)."""

    def __init__(self, channels: int, dense_channels: int, mbstd_group_size: int | None):
        super().__init__()
        self.mbstd = MinibatchStddev(mbstd_group_size) if mbstd_group_size else nn.Identity()
        extra = 1 if mbstd_group_size else 0
        self.conv = EqualizedConv2d(channels + extra, channels, 3)
        self.dense0 = EqualizedLinear(channels * 16, dense_channels)
        self.dense1 = EqualizedLinear(dense_channels, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv(self.mbstd(x)), 0.2)
        x = F.leaky_relu(self.dense0(x.flatten(1)), 0.2)
        return self.dense1(x).squeeze(1)


class Discriminator(nn.Module):
    """Progressive critic: a fromRGB per level, a down-block per doubling, a final block."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg

        def nf(stage: int) -> int:
            return feature_maps(stage, cfg.fmap_base, cfg.fmap_max, cfg.fmap_min)

        self.from_rgb = nn.ModuleList(
            EqualizedConv2d(cfg.num_channels, nf(r - 1), 1) for r in range(2, cfg.max_res_log2 + 1)
        )
        self.blocks = nn.ModuleList(
            _DownBlock(nf(r - 1), nf(r - 2)) for r in range(3, cfg.max_res_log2 + 1)
        )
        group_size = cfg.mbstd_group_size if cfg.use_minibatch_stddev else None
        self.final = _FinalBlock(nf(1), nf(0), group_size)

    def forward(self, images: torch.Tensor, res_log2: int, alpha: float = 1.0) -> torch.Tensor:
        """Scores ``[N]`` at ``2**res_log2`` px, the newest level faded in by ``alpha``."""
        if not 2 <= res_log2 <= self.cfg.max_res_log2:
            raise ValueError(f"res_log2 must be in [2, {self.cfg.max_res_log2}], got {res_log2}")
        x = F.leaky_relu(self.from_rgb[res_log2 - 2](images), 0.2)
        if res_log2 > 2:
            x = self.blocks[res_log2 - 3](x)
            if alpha < 1.0:
                low = F.leaky_relu(self.from_rgb[res_log2 - 3](F.avg_pool2d(images, 2)), 0.2)
                x = lerp_fade(low, x, alpha)
            for block_index in range(res_log2 - 4, -1, -1):
                x = self.blocks[block_index](x)
        return self.final(x)
