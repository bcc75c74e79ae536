"""Exhaustive SSIM top-k (shared.metrics.nn_search) against a scikit-image brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from shared.errors import ConfigError
from shared.metrics.nn_search import (
    Neighbours,
    SearchCounters,
    SearchOptions,
    exhaustive_topk,
    prefiltered_topk,
    ssim_matrix,
    topk_recall,
)
from shared.metrics.ssim import SSIMSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RES_PX = 64
K = 5
# Tiny blocks and chunks, so that merging across chunks and blocks is exercised.
SMALL_CHUNKS = SearchOptions(real_chunk=16, query_chunk=4, block_px=6 * RES_PX * RES_PX)


def _load_64px(folder: Path, count: int) -> np.ndarray:
    names = sorted(p.name for p in (folder / "images").iterdir())[:count]
    full = np.stack(
        [np.asarray(Image.open(folder / "images" / n).convert("L"), np.float32) for n in names]
    )
    factor = full.shape[-1] // RES_PX  # 4×4 area averaging, as the cache's pyramid does
    small = full.reshape(len(full), RES_PX, factor, RES_PX, factor).mean(axis=(2, 4))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def real_set(site_a: Path) -> tuple[np.ndarray, np.ndarray]:
    """12 queries (6 real, 6 noisy copies of reals) and 90 other real images, 64², uint8."""
    images = _load_64px(site_a, 96)
    rng = np.random.default_rng(0)
    reals = images[6:]
    copies = reals[[3, 17, 40, 41, 66, 89]].astype(np.float64) + rng.normal(0, 4, (6, 64, 64))
    queries = np.concatenate([images[:6], np.clip(np.rint(copies), 0, 255).astype(np.uint8)])
    return queries, reals


def _brute_force(queries, reals, settings: SSIMSettings) -> np.ndarray:
    kwargs = {}
    if settings.window == "gaussian":
        kwargs = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    return np.array(
        [[structural_similarity(q, r, data_range=255, **kwargs) for r in reals] for q in queries]
    )


def _top_k(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


@pytest.mark.realdata
@pytest.mark.parametrize("window", ["uniform", "gaussian"])
def test_exhaustive_topk_equals_skimage_brute_force(real_set, window):
    queries, reals = real_set
    settings = SSIMSettings(window=window)
    expected_index, expected_ssim = _top_k(_brute_force(queries, reals, settings), K)
    found = exhaustive_topk(queries, reals, K, settings, options=SMALL_CHUNKS)
    np.testing.assert_array_equal(found.index.numpy(), expected_index)
    np.testing.assert_allclose(found.similarity.numpy(), expected_ssim, rtol=0, atol=1e-4)


@pytest.mark.realdata
def test_search_of_a_row_subset_of_a_memmap(real_set, tmp_path):
    queries, reals = real_set
    np.save(tmp_path / "reals.npy", reals, allow_pickle=False)
    memmap = np.load(tmp_path / "reals.npy", mmap_mode="r")
    rows = np.array([80, 2, 3, 4, 17, 30, 31, 32, 33, 60, 61, 89, 7])  # unsorted, some runs
    similarity = _brute_force(queries, reals[rows], SSIMSettings())
    expected_position, expected_ssim = _top_k(similarity, 3)
    found = exhaustive_topk(queries, memmap, 3, rows=rows, options=SMALL_CHUNKS)
    np.testing.assert_array_equal(found.index.numpy(), rows[expected_position])
    np.testing.assert_allclose(found.similarity.numpy(), expected_ssim, rtol=0, atol=1e-4)


@pytest.mark.realdata
def test_window_statistics_are_computed_once_per_image_not_per_pair(real_set):
    queries, reals = real_set
    counters = SearchCounters()
    options = SearchOptions(real_chunk=16, query_chunk=len(queries), block_px=6 * RES_PX**2)
    exhaustive_topk(queries, reals, K, options=options, counters=counters)
    assert (counters.num_pairs + counters.num_pairs_skipped, counters.num_stats) == (
        len(queries) * len(reals),
        len(queries) + len(reals),
    )


@pytest.mark.realdata
def test_prefilter_with_every_candidate_is_the_exhaustive_search(real_set):
    queries, reals = real_set
    exact = exhaustive_topk(queries, reals, K, options=SearchOptions(backend="torch"))
    approx = prefiltered_topk(queries, reals, K, num_candidates=len(reals), size_px=16)
    np.testing.assert_array_equal(approx.index.numpy(), exact.index.numpy())
    np.testing.assert_allclose(approx.similarity.numpy(), exact.similarity.numpy(), atol=1e-6)


@pytest.mark.realdata
def test_prefilter_recall_is_measured_against_the_exhaustive_search(real_set):
    queries, reals = real_set
    exact = exhaustive_topk(queries, reals, K)
    approx = prefiltered_topk(queries, reals, K, num_candidates=15, size_px=16)
    pairs = zip(exact.index.tolist(), approx.index.tolist(), strict=True)
    hits = sum(len(set(e) & set(a)) for e, a in pairs)
    recall = topk_recall(exact, approx)
    print(f"\nprefilter 15 of {len(reals)} candidates at 16²: top-{K} recall {recall:.3f}")
    assert recall == pytest.approx(hits / exact.index.numel())
    # Whatever it misses, what it returns are true SSIMs of the pairs it names.
    check = _brute_force(queries[:2], reals, SSIMSettings())
    expected = np.take_along_axis(check, approx.index.numpy()[:2], axis=1)
    np.testing.assert_allclose(approx.similarity.numpy()[:2], expected, atol=1e-4)


def test_topk_recall_counts_shared_indices():
    exact = Neighbours(torch.zeros(2, 3), torch.tensor([[1, 2, 3], [4, 5, 6]]))
    approx = Neighbours(torch.zeros(2, 3), torch.tensor([[3, 2, 9], [7, 8, 9]]))
    assert topk_recall(exact, approx) == pytest.approx(2 / 6)


def test_k_larger_than_the_real_set_is_refused():
    images = np.zeros((3, 16, 16), np.uint8)
    with pytest.raises(ConfigError, match="k=4"):
        exhaustive_topk(images, images, 4)


@pytest.mark.realdata
def test_ssim_matrix_is_every_pair(real_set):
    queries, reals = real_set
    expected = _brute_force(queries[:3], reals[:20], SSIMSettings())
    got = ssim_matrix(queries[:3], reals[:20], options=SMALL_CHUNKS)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-4)
