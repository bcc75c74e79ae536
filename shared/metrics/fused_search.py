"""Exact top-k SSIM search with the fused CPU kernel and bound pruning (``ssim_fused``).

The same contract as ``shared.metrics.nn_search.exhaustive_topk`` (which calls
this for uint8 images on the CPU when numba is installed): queries are taken
``query_chunk`` at a time and reals ``real_chunk`` at a time, each image's window
statistics are computed once per chunk, and a running top-k is kept per query.

Pruning (``prune=True``) never changes the result. Within each real chunk every
query's reals are visited in decreasing order of their upper bound
(:func:`~shared.metrics.ssim_fused.pair_bounds`), in rounds of ``k``, ``4k``,
``16k``, ... reals; before each round a pair is dropped when its bound plus
:data:`BOUND_MARGIN` is below the query's current k-th best SSIM (over the
previous chunks and the rounds done). Such a pair's SSIM is at most its bound,
hence strictly below a value that the final k-th best is at least: it cannot
be in the top-k. The margin covers the rounding of the float32 kernel
(about 1e-7) and of the bound.

A pair that is computed may still be abandoned part-way: the kernel sums the
exact SSIM of the window rows in order and, after each band of
``BLOCK_WINDOWS`` rows, adds the bound of the rows left; once that is below the
query's k-th best minus the margin, the pair's mean SSIM is provably below it
too, and the pair stops (``-inf``). Rounds are not needed for correctness,
only to raise the thresholds early: the threshold never exceeds the final k-th
best, so the exact top-k is what remains.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from shared.metrics.ssim import SSIMSettings
from shared.metrics.ssim_fused import (
    FusedStats,
    fused_pairwise_ssim,
    fused_stats,
    pair_bounds,
    set_threads,
)

__all__ = ["BOUND_MARGIN", "chunk_similarities", "fused_topk", "merge_topk"]

#: Added to every bound before it is compared with a k-th best SSIM.
BOUND_MARGIN = 1e-5

#: ``progress(pairs)``: called with the number of (query, real) pairs just finished.
Progress = Callable[[int], None]


def _kth_best(best: np.ndarray, similarity: np.ndarray, k: int) -> np.ndarray:
    """Each row's k-th largest value among its running top-k and a chunk's similarities."""
    both = np.concatenate([best, similarity], axis=1)
    return np.partition(both, both.shape[1] - k, axis=1)[:, both.shape[1] - k]


def _round_edges(k: int, num_reals: int) -> list[int]:
    """Rank boundaries of the rounds: 0, k, 4k, 16k, ... up to ``num_reals``."""
    edges, size = [0], k
    while edges[-1] < num_reals:
        edges.append(min(num_reals, edges[-1] + size))
        size *= 4
    return edges


def chunk_similarities(
    queries: FusedStats, reals: FusedStats, best: np.ndarray, k: int, prune: bool
) -> tuple[np.ndarray, dict[str, int]]:
    """SSIM of every pair of a query chunk and a real chunk that can still enter a top-k.

    Args:
        queries, reals: :class:`~shared.metrics.ssim_fused.FusedStats`.
        best: ``[Q, k]`` running best similarities (``-inf`` where none yet).
        k: neighbours per query.
        prune: skip pairs whose upper bound cannot reach the k-th best, and abandon
            pairs part-way once their exact partial sum plus the bound of the rest cannot.

    Returns:
        ``[Q, R]`` float64 with ``-inf`` for pairs ruled out, and the counts ``computed``,
        ``skipped`` (ruled out before any work) and ``abandoned`` (ruled out part-way).
    """
    shape = (len(queries), len(reals))
    if not prune:
        similarity = fused_pairwise_ssim(queries, reals)
        return similarity, {"computed": similarity.size, "skipped": 0, "abandoned": 0}
    bounds = pair_bounds(queries, reals)
    order = np.argsort(-bounds, axis=1, kind="stable")
    similarity = np.full(shape, -np.inf)
    threshold = best[:, -1].copy()
    counts = {"computed": 0, "skipped": 0, "abandoned": 0}
    edges = _round_edges(k, shape[1])
    for lo, hi in itertools.pairwise(edges):
        active = np.zeros(shape, np.bool_)
        np.put_along_axis(active, order[:, lo:hi], True, axis=1)
        in_round = int(active.sum())
        active &= bounds + BOUND_MARGIN >= threshold[:, None]
        counts["skipped"] += in_round - int(active.sum())
        if active.any():
            values = fused_pairwise_ssim(queries, reals, active, threshold - BOUND_MARGIN)
            similarity[active] = values[active]
            abandoned = int(np.isneginf(values[active]).sum())
            counts["abandoned"] += abandoned
            counts["computed"] += int(active.sum()) - abandoned
            threshold = np.maximum(threshold, _kth_best(best, similarity, k))
    return similarity, counts


def merge_topk(
    best: np.ndarray, best_index: np.ndarray, similarity: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k (best first) of the previous best and a chunk's columns ``rows``."""
    values = np.concatenate([best, similarity], axis=1)
    index = np.concatenate([best_index, np.broadcast_to(rows, similarity.shape)], axis=1)
    top = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(values, top, axis=1), np.take_along_axis(index, top, axis=1)


def fused_topk(
    read_queries: Callable[[int, int], np.ndarray],
    num_queries: int,
    read_reals: Callable[[np.ndarray], np.ndarray],
    real_rows: np.ndarray,
    k: int,
    settings: SSIMSettings,
    *,
    query_chunk: int,
    real_chunk: int,
    prune: bool,
    threads: int | None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Top-``k`` SSIM of every query among ``real_rows``: similarities, rows and counts.

    Args:
        read_queries: ``read_queries(start, stop)`` -> uint8 ``[n, H, W]``.
        num_queries: how many queries.
        read_reals: ``read_reals(rows)`` -> uint8 ``[len(rows), H, W]``.
        real_rows: the rows to search.
        k: neighbours per query.
        settings: SSIM options.
        query_chunk, real_chunk: images whose statistics are held at once.
        prune: skip pairs by the upper bound (same result).
        threads: numba threads (None: all cores).
        progress: called with pairs finished (computed or skipped) after each real chunk.

    Returns:
        ``[Q, k]`` float64 similarities and int64 rows, best first, and the counts
        ``num_pairs`` (computed in full), ``num_pairs_skipped`` (ruled out by the bound,
        before or part-way through), ``num_pairs_abandoned`` (part-way) and ``num_stats``.
    """
    set_threads(threads)
    counts = {"num_pairs": 0, "num_pairs_skipped": 0, "num_pairs_abandoned": 0, "num_stats": 0}
    similarities, indices = [], []
    for q0 in range(0, num_queries, query_chunk):
        q_stats = fused_stats(read_queries(q0, min(num_queries, q0 + query_chunk)), settings)
        counts["num_stats"] += len(q_stats)
        best = np.full((len(q_stats), k), -np.inf)
        best_index = np.full((len(q_stats), k), -1, np.int64)
        for r0 in range(0, real_rows.size, real_chunk):
            chunk_rows = real_rows[r0 : r0 + real_chunk]
            r_stats = fused_stats(read_reals(chunk_rows), settings)
            counts["num_stats"] += len(r_stats)
            similarity, chunk = chunk_similarities(q_stats, r_stats, best, k, prune)
            best, best_index = merge_topk(best, best_index, similarity, chunk_rows[None], k)
            counts["num_pairs"] += chunk["computed"]
            counts["num_pairs_skipped"] += chunk["skipped"] + chunk["abandoned"]
            counts["num_pairs_abandoned"] += chunk["abandoned"]
            if progress is not None:
                progress(similarity.size)
        similarities.append(best)
        indices.append(best_index)
    return np.concatenate(similarities), np.concatenate(indices), counts
