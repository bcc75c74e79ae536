"""Fused SSIM kernel and pruned search (shared.metrics.ssim_fused, fused_search) on real X-rays.

References are independent: scikit-image's ``structural_similarity`` for single
pairs, and today's torch search (``backend="torch"``) for top-k on a real search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from shared.errors import ConfigError
from shared.metrics import ssim_fused
from shared.metrics.nn_search import Neighbours, SearchCounters, SearchOptions, exhaustive_topk
from shared.metrics.ssim import SSIMSettings
from shared.metrics.ssim_fused import fused_pairwise_ssim, fused_stats, pair_bounds

pytestmark = pytest.mark.skipif(not ssim_fused.NUMBA_AVAILABLE, reason="numba is not installed")

NUM_PAIRS = 200
K = 3
SK_KWARGS = {
    "uniform": {},
    "gaussian": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},
}


def _load(folder: Path, start: int, count: int) -> np.ndarray:
    names = sorted(p.name for p in (folder / "images").iterdir())[start : start + count]
    return np.stack([np.asarray(Image.open(folder / "images" / n).convert("L")) for n in names])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One thread each for torch and numba: the dev box has two shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ssim_fused.set_threads(1)
    yield
    torch.set_num_threads(threads)
    ssim_fused.set_threads(None)


@pytest.fixture(scope="module")
def real_pairs(site_a: Path, site_b: Path) -> tuple[np.ndarray, np.ndarray]:
    """200 pairs of real 256² radiographs: 100 within site A, 100 across sites (uint8)."""
    half = NUM_PAIRS // 2
    a, b = _load(site_a, 0, NUM_PAIRS + half), _load(site_b, 0, half)
    return a[:NUM_PAIRS], np.concatenate([a[NUM_PAIRS:], b])


@pytest.fixture(scope="module")
def search_set(site_a: Path, site_b: Path) -> tuple[np.ndarray, np.ndarray]:
    """6 site A queries (3 held out, 3 noisy copies of reals) against 60 A + 60 B images."""
    queries = _load(site_a, 300, 3)
    reals = np.concatenate([_load(site_a, 400, 60), _load(site_b, 500, 60)])
    rng = np.random.default_rng(0)
    copies = reals[[5, 50, 110]].astype(np.float64) + rng.normal(0, 4, (3, 256, 256))
    return np.concatenate([queries, np.clip(np.rint(copies), 0, 255).astype(np.uint8)]), reals


@pytest.mark.realdata
@pytest.mark.parametrize("window", ["uniform", "gaussian"])
def test_fused_ssim_is_skimage_within_1e5_on_200_real_pairs(real_pairs, window):
    x, y = real_pairs
    settings = SSIMSettings(window=window)
    pairs = zip(x, y, strict=True)
    expected = np.array(
        [structural_similarity(a, b, data_range=255, **SK_KWARGS[window]) for a, b in pairs]
    )
    # Every pair (i, i) of a [200, 200] problem, through the kernel's active mask.
    got = fused_pairwise_ssim(fused_stats(x, settings), fused_stats(y, settings), np.eye(200))
    diagonal = np.diagonal(got)
    print(f"\n{window}: max |dSSIM| vs scikit-image {np.abs(diagonal - expected).max():.1e}")
    np.testing.assert_allclose(diagonal, expected, rtol=0, atol=1e-5)
    assert np.isnan(got[~np.eye(200, dtype=bool)]).all()  # inactive pairs are not computed


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("settings", "sk_kwargs"),
    [
        (SSIMSettings(window="uniform"), {}),
        (SSIMSettings(window="uniform", win_size=5), {"win_size": 5}),
        (SSIMSettings(window="uniform", win_size=9), {"win_size": 9}),
        (SSIMSettings(window="gaussian"), SK_KWARGS["gaussian"]),
        (SSIMSettings(window="gaussian", sigma=1.0), {**SK_KWARGS["gaussian"], "sigma": 1.0}),
    ],
    ids=["uniform-7", "uniform-5", "uniform-9", "gaussian-1.5", "gaussian-1.0"],
)
def test_other_windows_and_an_odd_size_match_skimage(real_pairs, settings, sk_kwargs):
    """The generic paths (windows other than 7 and 11 taps) and padded rows (61 × 90 px)."""
    x, y = real_pairs[0][:8, 40:101, 30:120], real_pairs[1][:8, 100:161, 90:180]
    pairs = zip(x, y, strict=True)
    expected = [structural_similarity(a, b, data_range=255, **sk_kwargs) for a, b in pairs]
    got = np.diagonal(fused_pairwise_ssim(fused_stats(x, settings), fused_stats(y, settings)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.realdata
@pytest.mark.parametrize("window", ["uniform", "gaussian"])
def test_bound_is_above_every_pair_and_below_one(search_set, window):
    queries, reals = search_set
    settings = SSIMSettings(window=window)
    q_stats, r_stats = fused_stats(queries, settings), fused_stats(reals, settings)
    similarity, bound = fused_pairwise_ssim(q_stats, r_stats), pair_bounds(q_stats, r_stats)
    assert (bound >= similarity).all()
    assert (bound <= 1 + 1e-12).all()
    assert np.median(bound - similarity) > 0.01  # a bound, not a copy of the value


def _assert_same_topk(found: Neighbours, expected: Neighbours) -> None:
    """Equal indices, except where two reals tie (within 1e-6) in the expected similarities."""
    np.testing.assert_allclose(found.similarity.numpy(), expected.similarity.numpy(), atol=1e-5)
    for got_row, exp_row, exp_sim in zip(
        found.index.numpy(), expected.index.numpy(), expected.similarity.numpy(), strict=True
    ):
        for position, (got, want) in enumerate(zip(got_row, exp_row, strict=True)):
            if got != want:  # allowed only for a tie
                assert np.isclose(exp_sim, exp_sim[position], atol=1e-6).sum() > 1


@pytest.mark.realdata
@pytest.mark.parametrize("window", ["uniform", "gaussian"])
def test_fused_topk_equals_the_torch_search_with_and_without_pruning(search_set, window):
    queries, reals = search_set
    settings = SSIMSettings(window=window)
    small = {"real_chunk": 48, "query_chunk": 4}  # several chunks: the merges are exercised
    torch_counters = SearchCounters()
    expected = exhaustive_topk(
        queries, reals, K, settings, options=SearchOptions(backend="torch", **small),
        counters=torch_counters,
    )  # fmt: skip
    assert torch_counters.backend == "torch"
    skipped = {}
    for k, prune in ((K, False), (K, True), (1, True)):
        counters = SearchCounters()
        options = SearchOptions(backend="fused", prune=prune, **small)
        found = exhaustive_topk(queries, reals, k, settings, options=options, counters=counters)
        _assert_same_topk(found, Neighbours(expected.similarity[:, :k], expected.index[:, :k]))
        assert counters.backend == "fused"
        assert counters.num_pairs + counters.num_pairs_skipped == len(queries) * len(reals)
        skipped[k, prune] = counters.num_pairs_skipped
    print(f"\n{window}: pairs skipped by the bound of {len(queries) * len(reals)}: {skipped}")
    assert skipped[K, False] == 0
    assert skipped[1, True] > 0  # the copies' nearest originals rule out most reals
    # The noisy copies find their originals first.
    np.testing.assert_array_equal(expected.index[3:, 0].numpy(), [5, 50, 110])


@pytest.mark.realdata
def test_row_subset_of_a_memmap_matches_torch(search_set, tmp_path):
    queries, reals = search_set
    np.save(tmp_path / "reals.npy", reals, allow_pickle=False)
    memmap = np.load(tmp_path / "reals.npy", mmap_mode="r")
    rows = np.array([100, 2, 3, 4, 50, 51, 52, 110, 7, 80, 5, 99])  # unsorted, with runs
    expected = exhaustive_topk(queries, reals, 3, rows=rows, options=SearchOptions(backend="torch"))
    found = exhaustive_topk(queries, memmap, 3, rows=rows, options=SearchOptions(real_chunk=5))
    _assert_same_topk(found, expected)


def test_auto_backend_falls_back_to_torch_where_the_kernel_does_not_apply(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    floats = images.astype(np.float32) / 127.5 - 1
    float_settings = SSIMSettings(data_range=2.0)
    counters = SearchCounters()
    exhaustive_topk(floats, floats, 2, float_settings, counters=counters)
    assert counters.backend == "torch"
    with pytest.raises(ConfigError, match="backend=fused: images are float32"):
        exhaustive_topk(floats, floats, 2, float_settings, options=SearchOptions(backend="fused"))
    fused, fallback = SearchCounters(), SearchCounters()
    by_kernel = exhaustive_topk(images, images, 2, counters=fused)
    monkeypatch.setattr(ssim_fused, "NUMBA_AVAILABLE", False)  # as where numba is missing
    by_torch = exhaustive_topk(images, images, 2, counters=fallback)
    assert (fused.backend, fallback.backend) == ("fused", "torch")
    np.testing.assert_array_equal(by_kernel.index.numpy(), by_torch.index.numpy())
    np.testing.assert_allclose(by_kernel.similarity.numpy(), by_torch.similarity.numpy(), atol=1e-5)


def test_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match="backend='numpy'"):
        SearchOptions(backend="numpy")


def test_searches_from_two_threads_at_once_agree_with_one_at_a_time():
    """Concurrent searches (two audits in one process) share no buffers and give the same
    answers; the kernels also serialise their launches, which numba's workqueue threading
    layer needs (this machine uses the thread-safe OpenMP layer)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    queries = rng.integers(0, 256, (4, 48, 48), dtype=np.uint8)
    reals = rng.integers(0, 256, (40, 48, 48), dtype=np.uint8)
    options = SearchOptions(backend="fused", real_chunk=8, threads=2)
    alone = exhaustive_topk(queries, reals, 3, options=options)
    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(lambda _: exhaustive_topk(queries, reals, 3, options=options), range(4))
        )
    for found in runs:
        np.testing.assert_array_equal(found.index.numpy(), alone.index.numpy())
        np.testing.assert_array_equal(found.similarity.numpy(), alone.similarity.numpy())
