"""PGGAN learns site A's chest X-rays: the demo's tiny CPU run lowers a Fréchet distance >4×.

Feature space (fixed; nothing is learned, so trained and untrained generators are judged
alike): each image at 32×32 in [-1, 1] →
  (a) a random conv net with weights drawn once from ``torch.Generator().manual_seed(1234)``:
      three 3×3 stride-2 convolutions (16, 32, 32 channels) with ReLU; the per-channel
      mean and standard deviation of its last maps (64-d), and
  (b) the 8×8 average-pooled pixels (64-d),
concatenated (128-d). FD (``shared.metrics.frechet``) between the train split (614
images) and as many G_ema images, for the trained generator and for the same run's
generator at initialisation; the real val split gives the floor. Seen on the 2-core box
(one thread, 10.5 kimg, ~4 min under load): trained 4.76, untrained 39.13, real val 0.96.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_cache import build_site_cache

from shared.metrics.frechet import frechet_distance_from_features
from shared.networks.generator import Generator
from site_node.data.cache import SiteCache
from site_node.pggan.export import load_exported_generator, read_generator_export
from site_node.pggan.sampling import generate_uint8
from site_node.pggan.train import train_tiny

log = logging.getLogger(__name__)


def fixed_features(images_uint8: np.ndarray) -> np.ndarray:
    """128-d features of uint8 ``[N, 32, 32]`` images (see the module docstring)."""
    x = torch.from_numpy(np.asarray(images_uint8)).float().div(127.5).sub(1.0).unsqueeze(1)
    g = torch.Generator().manual_seed(1234)
    widths = [(16, 1), (32, 16), (32, 32)]
    h = x
    for out_ch, in_ch in widths:
        w = torch.randn(out_ch, in_ch, 3, 3, generator=g) / (3 * in_ch**0.5)
        h = F.relu(F.conv2d(h, w, stride=2, padding=1))
    conv = torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3))], dim=1)
    pixels = F.adaptive_avg_pool2d(x, 8).flatten(1)
    return torch.cat([conv, pixels], dim=1).double().numpy()


@pytest.fixture(scope="module")
def cache(site_a: Path, tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_site_cache(site_a, tmp_path_factory.getbasetemp() / "site_a_cache")


@pytest.mark.slow
@pytest.mark.realdata
def test_tiny_run_learns_site_a(cache: SiteCache, tmp_path: Path, record_property) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core box: 2 OpenMP threads ran 10-20x slower
    try:
        run_dir = train_tiny(cache.path, tmp_path / "run", progress_bar=False)
    finally:
        torch.set_num_threads(threads)

    manifest = read_generator_export(run_dir)
    assert manifest.generator_config.resolution_px == 32
    assert manifest.data["num_train_images"] == len(cache.indices("train")) == 614
    assert manifest.training["kimg_total"] == pytest.approx(7 * 1.5)

    real = cache.images(32)[cache.indices("train")]
    real_features = fixed_features(real)
    G_ema = load_exported_generator(run_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the run's seed: its G (and G_ema) at step 0
        G_init = Generator(G_ema.cfg)
    fd_trained = frechet_distance_from_features(
        real_features, fixed_features(generate_uint8(G_ema, len(real), seed=7))
    )
    fd_untrained = frechet_distance_from_features(
        real_features, fixed_features(generate_uint8(G_init, len(real), seed=7))
    )
    fd_val = frechet_distance_from_features(
        real_features, fixed_features(cache.images(32)[cache.indices("val")])
    )
    for name, value in (
        ("fd_trained", fd_trained),
        ("fd_untrained", fd_untrained),
        ("fd_val", fd_val),
    ):
        record_property(name, value)
    log.warning("FD trained %.3f, untrained %.3f, real val %.3f", fd_trained, fd_untrained, fd_val)
    assert fd_trained < 0.25 * fd_untrained
