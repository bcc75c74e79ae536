"""Did a generator memorise a patient? SSIM and feature nearest neighbours against the site's data.

The audit draws ``N`` images from the generator and compares them with the
site's cached real images (Han et al.'s SSIM nearest-neighbour inspection,
made quantitative):

1. **Best SSIM against train.** Each sample's exact nearest training image
   (exhaustive search, ``shared.metrics.nn_search``: on a CPU the fused numba
   kernel with exact bound pruning, which skips only pairs that provably cannot
   be a nearest neighbour); the distribution of the best SSIM (histogram,
   quantiles) and the number of samples at or above the near-copy threshold.
   The summary records the pairs compared and skipped and the searches' wall
   time; a progress bar with an ETA (log lines when not on a terminal) shows
   the searches as they run.
2. **Train versus holdout** (the distance-to-closest-record idea): is each
   sample's nearest neighbour in train or in the holdout (the test split, whose
   patients the generator never saw)? Against whole random training patients
   with as many images as the holdout, the fraction ``p`` nearer train is tested
   against 0.5 with a one-sided binomial test and reported with the 5th
   percentiles of both distances (``1 - SSIM``). Because samples that share a
   nearest image are not independent, the verdict uses a patient-level
   permutation test over the whole train split instead
   (``site_node.audit.statistics``).
3. **The same test in a feature space** (the labeller's embedding, or a fixed
   block-mean embedding), because SSIM misses near copies that are shifted,
   re-windowed or re-scaled yet still re-identifiable.
4. **A real-versus-real baseline**: the same numbers for held-out real images
   against train, so a reader can tell "close" from "as close as two patients".

The verdict follows ``shared.artifacts.audit.VERDICT_RULE``. Only the
:class:`~shared.artifacts.audit.AuditSummary` (numbers) may leave the site; the
panel of the closest pairs is written to a site-local folder for the site's
radiologist, and the rows of the nearest training images stay in memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from shared.artifacts.audit import AuditSettings, AuditSummary, NearestSplitTest, SSIMSearchCounts
from shared.errors import AuditError
from shared.metrics.nn_search import Neighbours, SearchCounters, SearchOptions, exhaustive_topk
from shared.metrics.ssim import SSIMSettings
from shared.progress import ProgressReporter
from site_node.audit.statistics import (
    SplitNeighbours,
    best_ssim_histogram,
    decide,
    nearest_split_test,
    quantile_dict,
)

__all__ = [
    "AuditOutcome",
    "Embedder",
    "Sampler",
    "fixed_embedding",
    "images_to_uint8",
    "labeller_embedder",
    "nearest_cosine",
    "patient_codes",
    "patient_matched_subsets",
    "run_memorisation_audit",
]

log = logging.getLogger("radshare.site.audit")

#: ``sample(n, seed)``: n images, uint8 ``[n, R, R]`` or float in [-1, 1] ``[n, 1, R, R]``.
Sampler = Callable[[int, int], "np.ndarray | torch.Tensor"]
#: ``embed(images_uint8 [N, R, R]) -> [N, D]`` features.
Embedder = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]


class ImageCache(Protocol):
    """What the audit reads from a site cache (``site_node.data.cache.SiteCache``)."""

    def images(self, res_px: int) -> np.ndarray: ...

    def indices(self, split: str | None = None) -> np.ndarray: ...


@dataclass
class AuditOutcome:
    """The summary that may leave the site, and what must not (panel path, train rows)."""

    summary: AuditSummary
    panel_path: Path | None
    nearest_train_rows: np.ndarray


def images_to_uint8(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """``[N, R, R]`` uint8 from uint8, or from float in [-1, 1] as written to PNG (x+1)·127.5."""
    array = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise AuditError(
            f"sampler returned shape {array.shape}; expected [N, R, R] or [N, 1, R, R]"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise AuditError(f"sampler returned {array.dtype} with non-finite values or not float")
    return np.clip(np.rint((array.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def fixed_embedding(images: np.ndarray, size_px: int = 16) -> np.ndarray:
    """Fallback feature space: ``size_px``² block means, centred per image (cosine-compared)."""
    batch = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    factor = max(1, batch.shape[-1] // size_px)
    small = torch.nn.functional.avg_pool2d(batch[:, None], factor).flatten(1)
    return (small - small.mean(dim=1, keepdim=True)).numpy()


def labeller_embedder(labeller: torch.nn.Module, *, batch_size: int = 128) -> Embedder:
    """Feature space of a labeller (``shared.networks.labeller.Labeller.embed``) on uint8 images."""

    def embed(images: np.ndarray) -> np.ndarray:
        device = next(labeller.parameters()).device
        labeller.eval()
        features = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.as_tensor(np.asarray(images[start : start + batch_size]))
                x = batch.to(device=device, dtype=torch.float32)[:, None] / 127.5 - 1.0
                features.append(labeller.embed(x).float().cpu())  # type: ignore[operator]
        return torch.cat(features).numpy()

    return embed


def _embed_rows(embed: Embedder, reals: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Unit-norm features of ``reals[rows]``, read 2,048 images at a time."""
    return torch.cat(
        [
            _unit_rows(embed(reals[rows[start : start + 2048]]))
            for start in range(0, rows.size, 2048)
        ]
    )


def _unit_rows(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    rows = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if rows.ndim != 2:
        raise AuditError(f"embedding returned shape {tuple(rows.shape)}; expected [N, D]")
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_cosine(queries: torch.Tensor, reals: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each query's cosine distance ``1 - cos`` to its nearest real and that real's position.

    Rows must be unit-norm; reals are taken 4,096 at a time.
    """
    best = torch.full((len(queries),), -2.0, dtype=torch.float64)
    where = torch.zeros(len(queries), dtype=torch.int64)
    for start in range(0, len(reals), 4096):
        chunk_best, chunk_where = (queries @ reals[start : start + 4096].T).max(dim=1)
        better = chunk_best > best
        best, where = (
            torch.where(better, chunk_best, best),
            torch.where(better, chunk_where + start, where),
        )
    return (1.0 - best).numpy(), where.numpy()


def patient_matched_subsets(
    train_rows: np.ndarray, holdout_rows: np.ndarray, patients: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Whole random patients of the larger split, just enough to reach the smaller's image count.

    Both returned sets are made of whole patients (exchangeable under "no memorisation");
    ``patients`` holds each cache row's patient code.
    """
    rng = np.random.default_rng(seed)
    smaller, larger = sorted((holdout_rows, train_rows), key=lambda rows: rows.size)
    codes, images_per_patient = np.unique(patients[larger], return_counts=True)
    order = rng.permutation(codes.size)
    enough = int(np.searchsorted(np.cumsum(images_per_patient[order]), smaller.size)) + 1
    subset = np.sort(larger[np.isin(patients[larger], codes[order[:enough]])])
    return (subset, smaller) if larger is train_rows else (smaller, subset)


def patient_codes(cache: ImageCache) -> np.ndarray:
    """An integer per cache row, equal for the rows of one patient (the ids stay here)."""
    table = getattr(cache, "table", None)
    if table is None or "patient_id" not in table:
        return np.arange(len(cache.indices(None)))  # no ids: every image its own patient
    return pd.factorize(table["patient_id"].astype(str))[0].astype(np.int64)


def _draw_samples(sample: Sampler, settings: AuditSettings) -> np.ndarray:
    samples = images_to_uint8(sample(settings.num_samples, settings.sample_seed))
    if len(samples) != settings.num_samples:
        raise AuditError(f"sampler returned {len(samples)} images, asked {settings.num_samples}")
    return samples


def _split_rows(cache: ImageCache, settings: AuditSettings) -> tuple[np.ndarray, np.ndarray]:
    train_rows = np.asarray(cache.indices("train"))
    holdout_rows = np.asarray(cache.indices(settings.holdout_split))
    if train_rows.size == 0 or holdout_rows.size == 0:
        raise AuditError(
            f"cache has {train_rows.size} train and {holdout_rows.size} "
            f"{settings.holdout_split} images; the audit needs both"
        )
    return train_rows, holdout_rows


def _best(neighbours: Neighbours) -> np.ndarray:
    return neighbours.similarity[:, 0].numpy()


@dataclass
class _AuditSets:
    """Cache rows of every set the audit compares with, and each row's patient code."""

    train: np.ndarray
    train_subset: np.ndarray
    holdout: np.ndarray
    reference: np.ndarray
    patients: np.ndarray


def _audit_sets(cache: ImageCache, settings: AuditSettings) -> _AuditSets:
    train_rows, holdout_rows = _split_rows(cache, settings)
    patients = patient_codes(cache)
    train_subset, holdout_subset = patient_matched_subsets(
        train_rows, holdout_rows, patients, settings.holdout_seed
    )
    reference = np.random.default_rng(settings.holdout_seed + 1).choice(
        holdout_subset, min(settings.reference_samples, holdout_subset.size), replace=False
    )
    return _AuditSets(train_rows, train_subset, holdout_subset, np.sort(reference), patients)


def _split_test(
    sets: _AuditSets,
    settings: AuditSettings,
    neighbours: tuple[SplitNeighbours, SplitNeighbours],
    reference_distance: np.ndarray | None,
    *,
    space: str,
    distance: str,
) -> NearestSplitTest:
    equal, pooled = neighbours
    holdout_patients = sets.patients[sets.holdout]
    return nearest_split_test(
        equal,
        pooled,
        space=space,
        distance=distance,
        subset_patients=(sets.patients[sets.train_subset], holdout_patients),
        split_patients=(sets.patients[sets.train], holdout_patients),
        num_permutations=settings.num_permutations,
        seed=settings.holdout_seed,
        reference_distance=reference_distance,
    )


def _feature_test(
    embed: Embedder, embed_name: str, samples: np.ndarray, reals: np.ndarray,
    sets: _AuditSets, settings: AuditSettings,
) -> NearestSplitTest:  # fmt: skip
    """Train-vs-holdout tests on cosine distances in ``embed``'s space, with a real baseline."""
    f_samples = _unit_rows(embed(samples))
    f_train, f_holdout = (_embed_rows(embed, reals, rows) for rows in (sets.train, sets.holdout))
    subset_mask = torch.as_tensor(np.isin(sets.train, sets.train_subset))
    d_subset, at_subset = nearest_cosine(f_samples, f_train[subset_mask])
    d_train, at_train = nearest_cosine(f_samples, f_train)
    d_holdout, at_holdout = nearest_cosine(f_samples, f_holdout)
    holdout = (d_holdout, sets.patients[sets.holdout[at_holdout]])
    equal = SplitNeighbours(
        d_subset, d_holdout, sets.patients[sets.train_subset[at_subset]], holdout[1]
    )
    pooled = SplitNeighbours(d_train, d_holdout, sets.patients[sets.train[at_train]], holdout[1])
    reference = None
    if sets.reference.size:
        reference = nearest_cosine(_embed_rows(embed, reals, sets.reference), f_train)[0]
    return _split_test(
        sets, settings, (equal, pooled), reference, space=f"feature:{embed_name}", distance="cosine"
    )


def run_memorisation_audit(
    sample: Sampler,
    cache: ImageCache,
    settings: AuditSettings | None = None,
    *,
    embed: Embedder | None = None,
    embed_name: str | None = None,
    panel_dir: Path | None = None,
    options: SearchOptions | None = None,
    progress_bar: bool | None = None,
) -> AuditOutcome:
    """Audit one generator against one site's cache.

    Args:
        sample: ``sample(n, seed)`` returning the generator's images (uint8, or float in [-1, 1]).
        cache: the site's cache; images at the samples' resolution, ``train`` and holdout splits.
        settings: what to compute and the thresholds (defaults of :class:`AuditSettings`).
        embed: feature space for the second test (default :func:`fixed_embedding`).
        embed_name: its name in the summary (``labeller``, ``block-means-16``, ...).
        panel_dir: site-local folder for the closest-pairs panel (None: no panel).
        options: device, backend, pruning and chunking of the SSIM search (results do
            not depend on them).
        progress_bar: a progress bar with ETA (True), log lines (False), or a bar only
            on a terminal (None).

    Raises:
        AuditError: the sampler's output or the cache's splits cannot be audited.
        CacheError: the cache lacks the samples' resolution.
    """
    settings = settings or AuditSettings()
    options = options or SearchOptions()
    started = time.perf_counter()
    # Draw the samples and find the real images to compare them with.
    samples = _draw_samples(sample, settings)
    res_px = samples.shape[-1]
    reals = cache.images(res_px)
    sets = _audit_sets(cache, settings)
    log.info(
        "audit: %d samples at %d px against %d train and %d holdout images",
        len(samples), res_px, sets.train.size, sets.holdout.size,
    )  # fmt: skip
    ssim_settings = SSIMSettings(window=settings.ssim_window)
    counters = SearchCounters()
    num_panel = min(settings.panel_neighbours, sets.train.size)
    total_pairs = len(samples) * (sets.train.size + sets.train_subset.size + sets.holdout.size)
    total_pairs += sets.reference.size * sets.train.size
    with ProgressReporter(
        total_pairs, unit="pairs", description="audit SSIM search", logger=log, bar=progress_bar
    ) as bar:

        def search(queries: np.ndarray, rows: np.ndarray, k: int = 1) -> Neighbours:
            return exhaustive_topk(
                queries, reals, k, ssim_settings, rows=rows, options=options,
                counters=counters, progress=bar,
            )  # fmt: skip

        # Each sample's nearest training images, over the whole training split.
        train_neighbours = search(samples, sets.train, num_panel)
        reference_best = (
            _best(search(reals[sets.reference], sets.train)) if sets.reference.size else None
        )
        # Train subset versus holdout, whole patients, in SSIM and in a feature space.
        near_train, near_holdout = search(samples, sets.train_subset), search(samples, sets.holdout)
    best_ssim = _best(train_neighbours)
    log.info(
        "audit SSIM searches (%s): %d pairs compared, %d skipped by the bound, %.1f s",
        counters.backend, counters.num_pairs, counters.num_pairs_skipped, counters.seconds,
    )  # fmt: skip
    holdout_patients = sets.patients[near_holdout.index[:, 0].numpy()]
    equal, pooled = (
        SplitNeighbours(
            1.0 - _best(near), 1.0 - _best(near_holdout),
            sets.patients[near.index[:, 0].numpy()], holdout_patients,
        )
        for near in (near_train, train_neighbours)
    )  # fmt: skip
    reference_distance = None if reference_best is None else 1.0 - reference_best
    ssim_test = _split_test(
        sets, settings, (equal, pooled), reference_distance, space="ssim", distance="1 - SSIM"
    )
    feature_test = _feature_test(
        embed or fixed_embedding,
        embed_name or ("custom" if embed else "block-means-16"),
        samples,
        reals,
        sets,
        settings,
    )
    # Verdict, summary, and the site-local panel.
    near_copy_count = int(np.sum(best_ssim >= settings.near_copy_ssim))
    summary = AuditSummary(
        settings=settings,
        resolution_px=res_px,
        num_samples=len(samples),
        num_train=int(sets.train.size),
        num_holdout=int(sets.holdout.size),
        best_ssim_histogram=best_ssim_histogram(best_ssim, settings.histogram_bins),
        best_ssim_quantiles=quantile_dict(best_ssim),
        best_ssim_mean=float(best_ssim.mean()),
        near_copy_count=near_copy_count,
        reference_best_ssim_quantiles=None
        if reference_best is None
        else quantile_dict(reference_best),
        ssim_test=ssim_test,
        feature_test=feature_test,
        seconds=time.perf_counter() - started,
        ssim_search=SSIMSearchCounts(
            backend=counters.backend or "none",
            pairs_compared=counters.num_pairs,
            pairs_skipped=counters.num_pairs_skipped,
            seconds=counters.seconds,
        ),
        verdict=decide(near_copy_count, ssim_test, feature_test, settings),
    )
    panel_path = None
    if panel_dir is not None and settings.panel_samples > 0:
        from site_node.audit.panel import write_nearest_pairs_panel

        panel_path = write_nearest_pairs_panel(
            Path(panel_dir), samples, reals, train_neighbours, settings.panel_samples
        )
    log.info(
        "audit %s: max best SSIM %.3f, %d near copies, holdout permutation p %.2e (SSIM) "
        "%.2e (feature)", "passed" if summary.passed else "FAILED",
        summary.best_ssim_quantiles["max"], near_copy_count, ssim_test.permutation_p_value,
        feature_test.permutation_p_value,
    )  # fmt: skip
    return AuditOutcome(summary, panel_path, train_neighbours.index[:, 0].numpy())
