"""Exact top-k SSIM nearest neighbours of Q query images among R real images, in bounded memory.

The search is exhaustive: every (query, real) pair gets its mean SSIM
(:mod:`shared.metrics.ssim`). Work is organised so that memory does not grow
with R (100,000 images of 256² fit in the same few GiB as 1,000):

* the real set is read ``real_chunk`` images at a time (a numpy memmap is
  fine); each chunk's window statistics (local means and variances) are
  computed once and reused for every query, and the running top-k of each
  query is merged with that chunk's similarities;
* queries are taken ``query_chunk`` at a time, their statistics computed once;
* pairs are evaluated in blocks of about ``block_px`` pixels (about 16
  pairs at 256² on a CPU, where they stay in cache; thousands on a GPU).

On the CPU, for uint8 images and with numba installed, :func:`exhaustive_topk`
runs the fused kernel (``shared.metrics.ssim_fused``, ``shared.metrics.fused_search``):
the same SSIM to about 1e-7, several times faster per core, and with exact
bound pruning that skips pairs which cannot enter the top-k (``prune``). The
torch implementation here is the fallback (``backend="torch"``, float images, GPUs).

An optional prefilter (:func:`prefiltered_topk`) ranks the reals by the
Pearson correlation of block-averaged images, one matrix product per chunk
(the GPU's matrix units), keeps ``num_candidates`` per query and computes
SSIM only for those. It is approximate: :func:`topk_recall` measures its
recall against the exhaustive search, which the benchmark reports.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import ConfigError, DataError
from shared.metrics.ssim import SSIMSettings, WindowStats, pairwise_ssim, window_stats

__all__ = [
    "SEARCH_BACKENDS",
    "Neighbours",
    "SearchCounters",
    "SearchOptions",
    "correlation_candidates",
    "exhaustive_topk",
    "prefiltered_topk",
    "ssim_matrix",
    "topk_recall",
]

log = logging.getLogger("radshare.metrics.nn_search")


class ImageArray(Protocol):
    """What the search reads from: ``[N, H, W]`` images indexable by slices and index arrays."""

    shape: Sequence[int]

    def __getitem__(self, index, /):  # type: ignore[no-untyped-def]
        ...

    def __len__(self) -> int: ...


#: Images the search accepts: a tensor, a numpy array or memmap, anything array-like.
Images: TypeAlias = ImageArray | torch.Tensor | np.ndarray

#: ``auto``: the fused kernel where it applies (CPU, uint8, numba), else torch.
SEARCH_BACKENDS = ("auto", "fused", "torch")


@dataclass(frozen=True)
class Neighbours:
    """Top-k neighbours per query, best first: ``similarity`` and ``index``, both ``[Q, k]``.

    ``index`` addresses the ``reals`` array that was searched (its row numbers, also
    when ``rows`` restricted the search to a subset).
    """

    similarity: torch.Tensor
    index: torch.Tensor


@dataclass(frozen=True)
class SearchOptions:
    """How the work is chunked and where it runs; results do not depend on these.

    Args:
        device: ``cpu`` or ``cuda[:i]``.
        dtype: compute precision (float32 is within 1e-5 of scikit-image on 8-bit images).
        real_chunk: real images whose statistics are held at once.
        query_chunk: query images whose statistics are held at once.
        block_px: pixels of cross products evaluated per block (None: 1 Mi on CPU, 256 Mi on GPU).
        backend: ``auto`` (fused kernel where it applies), ``fused`` (required) or ``torch``.
        prune: let the fused search skip pairs whose SSIM bound cannot reach the top-k.
        threads: CPU threads of the fused kernel (None: all cores).
    """

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    real_chunk: int = 1024
    query_chunk: int = 1024
    block_px: int | None = None
    backend: str = "auto"
    prune: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.real_chunk < 1 or self.query_chunk < 1:
            raise ConfigError(f"real_chunk={self.real_chunk}, query_chunk={self.query_chunk}: >= 1")
        if self.backend not in SEARCH_BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: one of {', '.join(SEARCH_BACKENDS)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads}: must be >= 1")

    @property
    def pixels_per_block(self) -> int:
        """The block size in pixels, defaulted by device."""
        if self.block_px is not None:
            return self.block_px
        return 2**28 if str(self.device).startswith("cuda") else 2**20


@dataclass
class SearchCounters:
    """What a search did: pairs compared, pairs skipped by the bound, statistics, seconds.

    ``num_pairs`` had their SSIM computed in full; ``num_pairs_skipped`` were ruled out
    by the bound (``num_pairs_abandoned`` of them part-way through, the rest before any
    work); the two add up to queries × reals. ``backend``: ``fused`` or ``torch``.
    """

    num_pairs: int = 0
    num_stats: int = 0
    seconds: float = 0.0
    num_pairs_skipped: int = 0
    backend: str = ""
    num_pairs_abandoned: int = 0


def _rows_of(reals: Images, rows: np.ndarray | None) -> np.ndarray:
    if rows is None:
        return np.arange(len(reals))
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= len(reals))):
        raise DataError(f"rows must be 1-D indices into {len(reals)} reals, got {rows.shape}")
    return rows


def _read(reals: Images, rows: np.ndarray) -> torch.Tensor:
    """Images ``reals[rows]`` as a tensor (contiguous rows as one slice: a memmap reads fastest)."""
    if rows.size and rows[-1] - rows[0] == rows.size - 1 and np.all(np.diff(rows) == 1):
        return _as_tensor(reals[int(rows[0]) : int(rows[-1]) + 1])
    if torch.is_tensor(reals):
        return reals[torch.as_tensor(rows, device=reals.device)]
    order = np.argsort(rows)  # a memmap reads sorted rows in one sweep
    images = np.empty((rows.size, *reals.shape[1:]), dtype=np.asarray(reals[:1]).dtype)
    images[order] = reals[rows[order]]
    return torch.from_numpy(images)


def _as_tensor(images: Images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    return torch.from_numpy(np.array(images))  # a copy: memmaps are read-only


def _block_shape(num_queries: int, num_reals: int, image_px: int, block_px: int) -> tuple[int, int]:
    """Queries × reals per block: about ``block_px / image_px`` pairs, squarish, 1 × 4 shaped."""
    pairs = max(1, block_px // image_px)
    query_block = max(1, min(num_queries, math.isqrt(max(1, pairs // 4))))
    real_block = max(1, min(num_reals, pairs // query_block))
    return query_block, real_block


def _similarity_matrix(
    queries: WindowStats, reals: WindowStats, options: SearchOptions, counters: SearchCounters
) -> torch.Tensor:
    """Mean SSIM ``[len(queries), len(reals)]`` in blocks of about ``options.block_px`` pixels."""
    image_px = int(queries.centred.shape[-1] * queries.centred.shape[-2])
    query_block, real_block = _block_shape(
        len(queries), len(reals), image_px, options.pixels_per_block
    )
    out = torch.empty(len(queries), len(reals), dtype=torch.float64, device=queries.mean.device)
    for q0 in range(0, len(queries), query_block):
        q_stats = queries.select(slice(q0, q0 + query_block))
        for r0 in range(0, len(reals), real_block):
            r_stats = reals.select(slice(r0, r0 + real_block))
            out[q0 : q0 + query_block, r0 : r0 + real_block] = pairwise_ssim(q_stats, r_stats)
    counters.num_pairs += len(queries) * len(reals)
    return out


def _merge_topk(
    best: Neighbours | None, similarity: torch.Tensor, index: torch.Tensor, k: int
) -> Neighbours:
    """Running top-k: the best ``k`` of the previous best and a new chunk's columns."""
    if best is not None:
        similarity = torch.cat([best.similarity, similarity], dim=1)
        index = torch.cat([best.index, index.expand(similarity.shape[0], -1)], dim=1)
    else:
        index = index.expand(similarity.shape[0], -1)
    top = torch.topk(similarity, min(k, similarity.shape[1]), dim=1)
    return Neighbours(top.values, torch.gather(index, 1, top.indices))


def _check_k(k: int, num_reals: int) -> None:
    if not 1 <= k <= num_reals:
        raise ConfigError(f"k={k}: must be between 1 and the number of reals ({num_reals})")


def _fused_reason(queries: Images, settings: SSIMSettings, options: SearchOptions) -> str | None:
    """Why the fused kernel does not apply (None when it does)."""
    if options.backend == "torch":
        return "backend=torch"
    if not str(options.device).startswith("cpu"):
        return f"device {options.device} (the fused kernel runs on the CPU)"
    from shared.metrics.ssim_fused import fused_supported

    sample = queries[:1]
    dtype = sample.numpy().dtype if torch.is_tensor(sample) else np.asarray(sample).dtype
    return fused_supported(settings, dtype)


def _uses_fused(queries: Images, settings: SSIMSettings, options: SearchOptions) -> bool:
    reason = _fused_reason(queries, settings, options)
    if reason is not None and options.backend == "fused":
        raise ConfigError(f"backend=fused: {reason}")
    return reason is None


def _as_numpy(images: Images) -> np.ndarray:
    array = images.numpy() if torch.is_tensor(images) else np.asarray(images)
    return array[:, 0] if array.ndim == 4 else array


def exhaustive_topk(
    queries: Images,
    reals: Images,
    k: int,
    settings: SSIMSettings | None = None,
    *,
    rows: np.ndarray | None = None,
    options: SearchOptions | None = None,
    counters: SearchCounters | None = None,
    progress: Callable[[int], None] | None = None,
) -> Neighbours:
    """Exact top-``k`` SSIM neighbours of every query among ``reals`` (or ``reals[rows]``).

    Args:
        queries: ``[Q, H, W]`` images (uint8, or float with ``settings.data_range``).
        reals: ``[R, H, W]`` images of the same kind; a numpy memmap is read chunk by chunk.
        k: neighbours per query.
        settings: SSIM options (scikit-image's defaults when None).
        rows: search only these rows of ``reals``; returned indices are still rows of ``reals``.
        options: chunking, device, precision, backend and pruning.
        counters: filled with pairs compared and skipped, statistics computed and seconds.
        progress: called with the number of pairs finished after each chunk of reals.

    Returns:
        :class:`Neighbours` on the CPU, best first.
    """
    options, counters = options or SearchOptions(), counters or SearchCounters()
    settings, real_rows = settings or SSIMSettings(), _rows_of(reals, rows)
    _check_k(k, real_rows.size)
    started = time.perf_counter()
    if _uses_fused(queries, settings, options):
        found = _fused_exhaustive(
            queries, reals, real_rows, k, settings, options, counters, progress
        )
    else:
        found = _torch_exhaustive(
            queries, reals, real_rows, k, settings, options, counters, progress
        )
    counters.seconds += time.perf_counter() - started
    log.debug(
        "exhaustive top-%d (%s): %d pairs, %d skipped, in %.2f s", k, counters.backend,
        counters.num_pairs, counters.num_pairs_skipped, counters.seconds,
    )  # fmt: skip
    return found


def _fused_exhaustive(
    queries: Images, reals: Images, real_rows: np.ndarray, k: int, settings: SSIMSettings,
    options: SearchOptions, counters: SearchCounters, progress: Callable[[int], None] | None,
) -> Neighbours:  # fmt: skip
    from shared.metrics.fused_search import fused_topk

    similarity, index, counts = fused_topk(
        lambda start, stop: _as_numpy(queries[start:stop]),
        len(queries),
        lambda chunk_rows: _as_numpy(_read(reals, chunk_rows)),
        real_rows, k, settings,
        query_chunk=options.query_chunk, real_chunk=options.real_chunk,
        prune=options.prune, threads=options.threads, progress=progress,
    )  # fmt: skip
    counters.backend = "fused"
    counters.num_pairs += counts["num_pairs"]
    counters.num_pairs_skipped += counts["num_pairs_skipped"]
    counters.num_pairs_abandoned += counts["num_pairs_abandoned"]
    counters.num_stats += counts["num_stats"]
    return Neighbours(torch.from_numpy(similarity), torch.from_numpy(index))


def _torch_exhaustive(
    queries: Images, reals: Images, real_rows: np.ndarray, k: int, settings: SSIMSettings,
    options: SearchOptions, counters: SearchCounters, progress: Callable[[int], None] | None,
) -> Neighbours:  # fmt: skip
    counters.backend = "torch"
    results = []
    for q0 in range(0, len(queries), options.query_chunk):
        q_stats = _stats(queries[q0 : q0 + options.query_chunk], settings, options, counters)
        best: Neighbours | None = None
        for r0 in range(0, real_rows.size, options.real_chunk):
            chunk_rows = real_rows[r0 : r0 + options.real_chunk]
            r_stats = _stats(_read(reals, chunk_rows), settings, options, counters)
            similarity = _similarity_matrix(q_stats, r_stats, options, counters)
            index = torch.as_tensor(chunk_rows, device=similarity.device)[None]
            best = _merge_topk(best, similarity, index, k)
            if progress is not None:
                progress(similarity.numel())
        assert best is not None
        results.append(Neighbours(best.similarity.cpu(), best.index.cpu()))
    return _concat(results)


def ssim_matrix(
    queries: Images,
    reals: Images,
    settings: SSIMSettings | None = None,
    *,
    options: SearchOptions | None = None,
) -> torch.Tensor:
    """Mean SSIM of every (query, real) pair, ``[Q, R]`` float64 on the CPU.

    For sets small enough to hold ``Q × R`` numbers (calibration studies, tests); the
    search functions keep only the top-k.
    """
    options, settings = options or SearchOptions(), settings or SSIMSettings()
    counters = SearchCounters()
    rows = []
    for q0 in range(0, len(queries), options.query_chunk):
        q_stats = _stats(queries[q0 : q0 + options.query_chunk], settings, options, counters)
        columns = []
        for r0 in range(0, len(reals), options.real_chunk):
            r_stats = _stats(reals[r0 : r0 + options.real_chunk], settings, options, counters)
            columns.append(_similarity_matrix(q_stats, r_stats, options, counters).cpu())
        rows.append(torch.cat(columns, dim=1))
    return torch.cat(rows)


def _stats(
    images: Images,
    settings: SSIMSettings,
    options: SearchOptions,
    counters: SearchCounters,
) -> WindowStats:
    counters.num_stats += len(images)
    return window_stats(_as_tensor(images), settings, dtype=options.dtype, device=options.device)


def _correlation_features(images: torch.Tensor, size_px: int) -> torch.Tensor:
    """Block-averaged images, centred and unit-norm per image: ``[N, size_px²]`` float32."""
    batch = images.float()
    if batch.ndim == 4:
        batch = batch[:, 0]
    factor = batch.shape[-1] // size_px
    if factor < 1 or batch.shape[-1] % size_px or batch.shape[-1] != batch.shape[-2]:
        raise ConfigError(f"prefilter size_px={size_px} must divide the square image side")
    small = F.avg_pool2d(batch[:, None], factor).flatten(1)
    small = small - small.mean(dim=1, keepdim=True)
    return small / small.norm(dim=1, keepdim=True).clamp_min(1e-12)


def correlation_candidates(
    queries: Images,
    reals: Images,
    num_candidates: int,
    *,
    size_px: int = 32,
    rows: np.ndarray | None = None,
    options: SearchOptions | None = None,
) -> torch.Tensor:
    """Rows of ``reals`` with the highest Pearson correlation of ``size_px``² block means.

    One matrix product per real chunk; returns int64 ``[Q, num_candidates]`` on the CPU.
    """
    options, real_rows = options or SearchOptions(), _rows_of(reals, rows)
    _check_k(num_candidates, real_rows.size)
    device = options.device
    query_features = _correlation_features(_as_tensor(queries).to(device), size_px)
    best: Neighbours | None = None
    for r0 in range(0, real_rows.size, options.real_chunk):
        chunk_rows = real_rows[r0 : r0 + options.real_chunk]
        real_features = _correlation_features(_read(reals, chunk_rows).to(device), size_px)
        index = torch.as_tensor(chunk_rows, device=device)[None]
        best = _merge_topk(best, query_features @ real_features.T, index, num_candidates)
    assert best is not None
    return best.index.cpu()


def prefiltered_topk(
    queries: Images,
    reals: Images,
    k: int,
    settings: SSIMSettings | None = None,
    *,
    num_candidates: int = 64,
    size_px: int = 32,
    rows: np.ndarray | None = None,
    options: SearchOptions | None = None,
    counters: SearchCounters | None = None,
) -> Neighbours:
    """Approximate top-``k``: exact SSIM on each query's ``num_candidates`` prefilter candidates.

    Each candidate real's statistics are computed once per query chunk, however
    many queries share it. Equal to :func:`exhaustive_topk` when ``num_candidates``
    covers all reals; otherwise measure it with :func:`topk_recall`.
    """
    options, counters = options or SearchOptions(), counters or SearchCounters()
    settings, real_rows = settings or SSIMSettings(), _rows_of(reals, rows)
    num_candidates = min(num_candidates, real_rows.size)
    _check_k(k, num_candidates)
    started = time.perf_counter()
    candidates = correlation_candidates(
        queries, reals, num_candidates, size_px=size_px, rows=real_rows, options=options
    )
    results = []
    for q0 in range(0, len(queries), options.query_chunk):
        q_stats = _stats(queries[q0 : q0 + options.query_chunk], settings, options, counters)
        block = candidates[q0 : q0 + options.query_chunk]
        unique_rows, position = np.unique(block.numpy(), return_inverse=True)
        r_stats = _stats(_read(reals, unique_rows), settings, options, counters)
        position_t = torch.as_tensor(position.reshape(block.shape), device=q_stats.mean.device)
        for i in range(len(q_stats)):
            similarity = _similarity_matrix(
                q_stats.select(slice(i, i + 1)), r_stats.select(position_t[i]), options, counters
            )
            best = _merge_topk(None, similarity, block[i : i + 1].to(similarity.device), k)
            results.append(Neighbours(best.similarity.cpu(), best.index.cpu()))
    counters.seconds += time.perf_counter() - started
    return _concat(results)


def _concat(parts: list[Neighbours]) -> Neighbours:
    return Neighbours(
        torch.cat([part.similarity for part in parts]), torch.cat([part.index for part in parts])
    )


def topk_recall(exact: Neighbours, approximate: Neighbours) -> float:
    """Fraction of the exact top-k indices that the approximate top-k also found.

    Counted over all queries: ``sum_i |exact_i ∩ approx_i| / (Q k)``.
    """
    if exact.index.shape != approximate.index.shape:
        raise DataError(f"top-k shapes differ: {exact.index.shape} vs {approximate.index.shape}")
    exact_idx, approx_idx = exact.index.numpy(), approximate.index.numpy()
    hits = [np.isin(e, a).sum() for e, a in zip(exact_idx, approx_idx, strict=True)]
    return float(np.sum(hits) / exact_idx.size)
