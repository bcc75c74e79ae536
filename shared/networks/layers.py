"""Building blocks of Karras et al. 2018 (PGGAN) shared by the generator and the critic.

Equalised learning rate: weights are stored N(0, 1) and scaled at run time by
He's constant ``gain / sqrt(fan_in)``, so Adam sees every layer at the same
dynamic range (Karras et al. 2018, sec. 4.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EqualizedConv2d", "EqualizedLinear", "PixelNorm", "lerp_fade"]


class EqualizedLinear(nn.Module):
    """Fully connected layer with the equalised learning rate."""

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualizedConv2d(nn.Module):
    """2-D convolution (stride 1, 'same' padding) with the equalised learning rate."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_px: int, gain: float = math.sqrt(2)
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_px, kernel_px))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_px * kernel_px)
        self.padding = kernel_px // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector to unit length (Karras et al. 2018, sec. 4.2)."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


def lerp_fade(low: torch.Tensor, high: torch.Tensor, alpha: float) -> torch.Tensor:
    """Fade-in: ``(1 - alpha) * low + alpha * high``; ``alpha`` rises 0 → 1 over a fade phase."""
    if alpha >= 1.0:
        return high
    return low + (high - low) * alpha
