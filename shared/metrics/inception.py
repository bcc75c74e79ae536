"""The FID Inception-v3 (TF "2015-12-05" graph, as ported by pytorch-fid), in plain torch.

No torchvision: the architecture is written out here with the key names of
pytorch-fid's ``fid_inception_v3()`` (and torch-fidelity's extractor), so that
``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth`` load unchanged with
``torch.load(path, weights_only=True)``. The weights are never downloaded: the
user supplies the file.

The FID differences from torchvision's Inception-v3 (Heusel et al. 2017's TF
graph): average pools in blocks A, C and E_1 exclude the zero padding
(``count_include_pad=False``), and the last block (E_2) max-pools its pool
branch. Input preprocessing, given uint8 ``[N, H, W]`` grey images:

* ``"pytorch-fid"``: ``u / 255`` → 3 channels → ``F.interpolate(299, bilinear,
  align_corners=False)`` → ``2x - 1`` (pytorch-fid 0.3 ``InceptionV3.forward``);
* ``"torch-fidelity"``: ``u`` as float → TF1.x bilinear resize to 299 (no half-pixel
  offset) → ``(x - 128) / 128`` (torch-fidelity 0.4 ``FeatureExtractorInceptionV3``).

The output is the 2048-d final average pool, the FID features.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import ConfigError

__all__ = ["INCEPTION_INPUT_PX", "FIDInceptionV3", "load_fid_inception", "preprocess_for_inception"]

INCEPTION_INPUT_PX = 299
RESIZE_MODES = ("pytorch-fid", "torch-fidelity")


class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm(eps=1e-3) → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool does not count the zero padding.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/c/d (FID variant)."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 → 17."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b..e (FID variant): factorised 7×7 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            bd = layer(bd)
        bd = self.branch7x7dbl_5(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 → 8."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b (avg pool, padding excluded) and Mixed_7c (max pool) of the FID graph."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":  # the FID graph's quirk in its last block
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_3x3(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 up to the 2048-d final average pool; ``fc`` kept only to load weights."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 299, 299]`` in the network's range (about [-1, 1]) → ``[N, 2048]``."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def _tf1x_resize_matrix(in_px: int, out_px: int) -> torch.Tensor:
    """``[out_px, in_px]`` weights of TF1.x bilinear resize (``align_corners=False``)."""
    # float32 source coordinates, as torch-fidelity's "slow" (bit-exact on CPU) path computes them
    src = torch.arange(out_px, dtype=torch.float32) * torch.tensor(
        in_px / out_px, dtype=torch.float32
    )
    lo = src.long()
    hi = (lo + 1).clamp(max=in_px - 1)
    frac = src - lo.float()
    weights = torch.zeros(out_px, in_px, dtype=torch.float32)
    weights[torch.arange(out_px), lo] += 1 - frac
    weights[torch.arange(out_px), hi] += frac
    return weights


def preprocess_for_inception(images_u8: torch.Tensor, mode: str = "pytorch-fid") -> torch.Tensor:
    """uint8 ``[N, H, W]`` grey → float32 ``[N, 3, 299, 299]`` as pytorch-fid or torch-fidelity."""
    if mode not in RESIZE_MODES:
        raise ConfigError(f"inception resize mode {mode!r}; valid: {', '.join(RESIZE_MODES)}")
    if images_u8.dtype != torch.uint8 or images_u8.ndim != 3:
        raise ConfigError(
            f"images must be uint8 [N, H, W], got {images_u8.dtype} {tuple(images_u8.shape)}"
        )
    x = images_u8.float().unsqueeze(1)
    if mode == "pytorch-fid":
        x = F.interpolate(
            x / 255.0, size=(INCEPTION_INPUT_PX,) * 2, mode="bilinear", align_corners=False
        )
        x = 2 * x - 1
    else:
        rows = _tf1x_resize_matrix(x.shape[2], INCEPTION_INPUT_PX)
        cols = _tf1x_resize_matrix(x.shape[3], INCEPTION_INPUT_PX)
        x = (rows @ x @ cols.T - 128) / 128
    return x.expand(-1, 3, -1, -1)


def load_fid_inception(weights_path: Path | str) -> FIDInceptionV3:
    """FIDInceptionV3 in eval mode with the user's 2015-12-05 weights (``weights_only=True``)."""
    path = Path(weights_path)
    if not path.is_file():
        raise ConfigError(f"inception weights: no file {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = FIDInceptionV3()
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.endswith("num_batches_tracked")}
    if expected != given:
        missing, extra = sorted(expected - given)[:5], sorted(given - expected)[:5]
        raise ConfigError(
            f"{path}: not FID Inception weights; missing {missing}, unexpected {extra}"
        )
    model.load_state_dict(state, strict=False)
    return model.eval().requires_grad_(False)
