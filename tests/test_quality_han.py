"""Han et al.'s analyses: Pearson matrix vs scipy, transitions, difference maps, a recorded path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import pearsonr

from hub.quality import han
from shared.networks.generator import Generator, GeneratorConfig
from shared.networks.labeller import Labeller, LabellerConfig


def test_correlation_matrix_equals_scipy_pearson():
    rng = np.random.default_rng(0)
    doses = [rng.random(50), rng.random(40)]
    scores = [
        np.c_[d + rng.normal(0, 0.3, len(d)), rng.random(len(d)), np.full(len(d), 0.5)]
        for d in doses
    ]
    matrix = han.pathology_correlation_matrix(doses, scores)
    for i in range(2):
        for j in range(2):
            assert matrix[i, j] == pytest.approx(
                pearsonr(doses[i], scores[i][:, j]).statistic, abs=1e-12
            )
    assert np.isnan(matrix[:, 2]).all()  # a constant score has no correlation


def test_correlation_from_paths_uses_the_path_fraction_as_dose():
    steps = np.linspace(0, 1, 5)
    path = np.stack([np.c_[steps, 1 - steps]] * 1, axis=1).transpose(1, 0, 2)  # [T+1=5, n=1, C=2]
    path = np.repeat(path.transpose(1, 0, 2), 3, axis=1)  # [5, 3, 2]
    matrix = han.correlation_from_paths([path])
    np.testing.assert_allclose(matrix, [[1.0, -1.0]])


def test_transition_frames_keep_start_and_end():
    path = np.linspace(-1, 1, 11)[:, None, None] * np.ones((11, 4, 4))
    frames = han.transition_frames(path, num_frames=6)
    assert frames.dtype == np.uint8 and frames.shape == (6, 4, 4)
    assert frames[0, 0, 0] == 0 and frames[-1, 0, 0] == 255


def test_save_gif_writes_every_frame(tmp_path):
    frames = np.stack([np.full((8, 8), v, np.uint8) for v in (0, 100, 200)])
    with Image.open(han.save_gif(frames, tmp_path / "t.gif")) as gif:
        assert gif.n_frames == 3


def test_difference_map_and_overlay_colours():
    start = np.zeros((2, 2), np.uint8) + 100
    end = start.copy()
    end[0, 0], end[1, 1] = 200, 0  # brighter, darker
    diff = han.difference_map(start, end)
    assert diff[0, 0] == pytest.approx(100 / 127.5) and diff[1, 1] == pytest.approx(-100 / 127.5)
    overlay = han.overlay_difference(start, diff)
    assert overlay[0, 0, 0] > overlay[0, 0, 2]  # red where the end is brighter
    assert overlay[1, 1, 2] > overlay[1, 1, 0]  # blue where it is darker
    np.testing.assert_array_equal(overlay[0, 1], [100, 100, 100])  # unchanged: the grey start


def test_record_optimisation_path_raises_the_target_score():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)).eval()
    labeller = Labeller(
        LabellerConfig(resolution_px=32, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1))
    )
    labeller.eval().requires_grad_(False)
    z0 = torch.randn(3, 16)
    images, scores = han.record_optimisation_path(
        G, labeller, z0, class_index=4, num_steps=10, lr=0.1
    )
    assert images.shape == (11, 3, 32, 32) and scores.shape == (11, 3, 15)
    with torch.no_grad():
        np.testing.assert_allclose(images[0], G(z0)[:, 0].numpy(), atol=1e-6)
    assert scores[-1, :, 4].mean() > scores[0, :, 4].mean()
    fig = han.plot_correlation_heatmap(
        han.correlation_from_paths([scores, scores]), ["A", "B"], [str(i) for i in range(15)]
    )
    assert fig.axes[0].get_title() == "Pearson r"
