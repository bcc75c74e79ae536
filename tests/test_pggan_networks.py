"""PGGAN networks: fade-in of G and D, minibatch stddev against numpy, equalised learning rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.networks.generator import Generator, GeneratorConfig
from shared.networks.layers import EqualizedConv2d, EqualizedLinear
from site_node.pggan.discriminator import Discriminator, DiscriminatorConfig, minibatch_stddev

CFG = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)


@pytest.fixture
def networks() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    return Generator(CFG), Discriminator(DiscriminatorConfig.mirror(CFG))


def _g_features(G: Generator, z: torch.Tensor, res_log2: int) -> torch.Tensor:
    x = G.first(z)
    for block in G.blocks[: res_log2 - 2]:
        x = block(x)
    return x


@pytest.mark.parametrize("res_log2", [3, 4, 5])
def test_generator_fade_endpoints(networks, res_log2: int) -> None:
    G, _ = networks
    z = torch.randn(4, CFG.z_dim)
    # alpha = 0: the previous level's image, nearest-upsampled.
    low = G.to_rgb[res_log2 - 3](_g_features(G, z, res_log2 - 1))
    expected_low = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(G.synthesize(z, res_log2, 0.0), expected_low, rtol=0, atol=0)
    torch.testing.assert_close(
        G.synthesize(z, res_log2, 0.0),
        F.interpolate(G.synthesize(z, res_log2 - 1, 1.0), scale_factor=2),
    )
    # alpha = 1: the new block through its own toRGB.
    high = G.to_rgb[res_log2 - 2](_g_features(G, z, res_log2))
    torch.testing.assert_close(G.synthesize(z, res_log2, 1.0), high, rtol=0, atol=0)
    # In between: the linear blend.
    torch.testing.assert_close(
        G.synthesize(z, res_log2, 0.3), 0.7 * expected_low + 0.3 * high, rtol=1e-5, atol=1e-6
    )


def _d_manual(D: Discriminator, images: torch.Tensor, res_log2: int) -> torch.Tensor:
    x = F.leaky_relu(D.from_rgb[res_log2 - 2](images), 0.2)
    for index in range(res_log2 - 3, -1, -1):
        x = D.blocks[index](x)
    return D.final(x)


@pytest.mark.parametrize("res_log2", [3, 4, 5])
def test_discriminator_fade_endpoints(networks, res_log2: int) -> None:
    _, D = networks
    images = torch.rand(8, 1, 2**res_log2, 2**res_log2) * 2 - 1
    half = images.reshape(8, 1, 2 ** (res_log2 - 1), 2, 2 ** (res_log2 - 1), 2).mean(dim=(3, 5))
    # alpha = 0: the half-resolution image through the previous level's fromRGB.
    torch.testing.assert_close(D(images, res_log2, 0.0), _d_manual(D, half, res_log2 - 1))
    # alpha = 1: the new level only.
    torch.testing.assert_close(D(images, res_log2, 1.0), _d_manual(D, images, res_log2))
    assert D(images, res_log2, 0.5).shape == (8,)


def test_levels_not_grown_get_no_gradient(networks) -> None:
    G, D = networks
    z = torch.randn(4, CFG.z_dim)
    D(G.synthesize(z, 4, 1.0), 4, 1.0).sum().backward()
    used_g = {"first", "blocks.0", "blocks.1", "to_rgb.2"}
    used_d = {"from_rgb.2", "blocks.0", "blocks.1", "final"}
    for prefix, net, used in (("G", G, used_g), ("D", D, used_d)):
        for name, p in net.named_parameters():
            has_grad = p.grad is not None
            assert has_grad == any(name.startswith(u + ".") for u in used), f"{prefix}.{name}"


def _mbstd_numpy(x: np.ndarray, group_size: int) -> np.ndarray:
    n = x.shape[0]
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    m = n // g
    stat = np.zeros(n)
    for j in range(m):
        members = [i * m + j for i in range(g)]  # Karras' reshape [G, M, ...]
        std = np.sqrt(x[members].var(axis=0) + 1e-8)  # population variance over the group
        stat[members] = std.mean()
    extra = np.broadcast_to(stat[:, None, None, None], (n, 1, *x.shape[2:]))
    return np.concatenate([x, extra], axis=1)


@pytest.mark.parametrize(("n", "group_size"), [(8, 4), (6, 4), (4, 4), (2, 4), (5, 4), (12, 3)])
def test_minibatch_stddev_matches_numpy(n: int, group_size: int) -> None:
    x = np.random.default_rng(n).normal(size=(n, 3, 4, 4))
    got = minibatch_stddev(torch.from_numpy(x), group_size).numpy()
    np.testing.assert_allclose(got, _mbstd_numpy(x, group_size), rtol=1e-12, atol=1e-12)


def test_equalized_layers_scale_at_runtime() -> None:
    torch.manual_seed(0)
    conv = EqualizedConv2d(16, 32, 3)
    assert conv.scale == pytest.approx(math.sqrt(2) / 12)  # He: gain / sqrt(16 * 3 * 3)
    x = torch.randn(2, 16, 5, 5)
    expected = F.conv2d(x, conv.weight * math.sqrt(2) / 12, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)
    dense = EqualizedLinear(64, 8, gain=1.0)
    assert dense.scale == pytest.approx(1 / 8)
    torch.testing.assert_close(dense(x.new_ones(3, 64)), (dense.weight.sum(1) / 8).expand(3, 8))
    # Stored weights are N(0, 1): the scale, not the init, sets the dynamic range.
    big = EqualizedConv2d(64, 64, 3)
    torch.testing.assert_close(big.weight.std().item(), 1.0, rtol=0, atol=0.02)
    torch.testing.assert_close(big.weight.mean().item(), 0.0, rtol=0, atol=0.02)


def test_discriminator_mirrors_generator_widths() -> None:
    cfg = GeneratorConfig(resolution_px=64, z_dim=8, fmap_base=256, fmap_max=32)
    G, D = Generator(cfg), Discriminator(DiscriminatorConfig.mirror(cfg))
    # The image-side layers of each level have the same width in G and D.
    for level in range(len(G.to_rgb)):
        assert G.to_rgb[level].weight.shape[1] == D.from_rgb[level].weight.shape[0]
    assert [b.conv1.weight.shape[0] for b in G.blocks] == [
        b.conv0.weight.shape[0] for b in D.blocks
    ]
    assert D.final.dense1.weight.shape == (1, 32)
    assert D.final.conv.weight.shape[1] == 33  # 32 features + the stddev map
