"""CPU sections of ``bench_ssim.py``: fused kernel vs torch search vs scikit-image, pruning, memory.

* :func:`cpu_compare` (``--cpu-compare``): pairs per second of scikit-image (one
  core), today's torch search (``backend="torch"``) and the fused numba kernel
  (``backend="fused"``, no pruning), in one process, on the same images and the
  same thread count, the two searches alternating in ``repeats`` interleaved
  repeats and the speedup the median of the per-repeat ratios (the machine may be
  shared: a load change hits both searches of a repeat alike); a profile of where
  the fused search's time goes; the extrapolated hours on 16 cores. The last line is
  ``speedup vs torch search: N.N×``.
* :func:`prune_real` (``--prune``): pairs the bound skips on real radiographs, and
  the end-to-end time of the memorisation audit (``run_memorisation_audit``, the
  function behind ``radshare-site audit``) on site A at 256², torch vs fused vs
  fused + pruning.
* :func:`memory_peak` (``--memory``): peak resident memory of a pruned search over
  20,000 images of 256² synthesised on the fly from real ones (own process).

Real images come from ``RADSHARE_SAMPLE_DATA`` (or ``--data``) and are never written
outside a temporary folder.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from skimage.metrics import structural_similarity

from shared.metrics import ssim_fused
from shared.metrics.nn_search import SearchCounters, SearchOptions, exhaustive_topk
from shared.metrics.ssim import SSIMSettings

if TYPE_CHECKING:
    from shared.artifacts.audit import AuditSummary
    from site_node.data.cache import SiteCache

SK_KWARGS = {
    "uniform": {},
    "gaussian": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},
}
WINDOW_NAMES = {"uniform": "uniform 7×7", "gaussian": "Gaussian σ=1.5"}


def load_site(data: Path, site: str, count: int | None = None) -> np.ndarray:
    """uint8 ``[N, 256, 256]`` radiographs of one site, in file-name order."""
    from PIL import Image

    folder = data / site / "images"
    names = sorted(p.name for p in folder.iterdir())[:count]
    return np.stack([np.asarray(Image.open(folder / n).convert("L")) for n in names])


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    ssim_fused.set_threads(threads)


def _search_rate(
    queries: np.ndarray, reals: np.ndarray, settings: SSIMSettings, options: SearchOptions
) -> tuple[float, float]:
    """Pairs per wall-clock second and per CPU second (this process) of one search."""
    counters = SearchCounters()
    cpu_started = time.process_time()
    exhaustive_topk(queries, reals, 5, settings, options=options, counters=counters)
    cpu_seconds = time.process_time() - cpu_started
    return counters.num_pairs / counters.seconds, counters.num_pairs / cpu_seconds


def _precomputed_rates(
    queries: np.ndarray, reals: np.ndarray, settings: SSIMSettings
) -> tuple[float, float]:
    """Pairs/s of torch and of the fused kernel with every image's statistics precomputed."""
    from shared.metrics.nn_search import _similarity_matrix
    from shared.metrics.ssim import window_stats

    pairs = len(queries) * len(reals)
    q_torch, r_torch = window_stats(queries, settings), window_stats(reals, settings)
    started = time.perf_counter()
    _similarity_matrix(q_torch, r_torch, SearchOptions(), SearchCounters())
    torch_rate = pairs / (time.perf_counter() - started)
    q_fused = ssim_fused.fused_stats(queries, settings)
    r_fused = ssim_fused.fused_stats(reals, settings)
    started = time.perf_counter()
    ssim_fused.fused_pairwise_ssim(q_fused, r_fused)
    return torch_rate, pairs / (time.perf_counter() - started)


def _profile_fused(queries: np.ndarray, reals: np.ndarray, settings: SSIMSettings) -> str:
    """Milliseconds per image for the statistics, microseconds per pair for bound and kernel."""
    started = time.perf_counter()
    q_stats = ssim_fused.fused_stats(queries, settings)
    r_stats = ssim_fused.fused_stats(reals, settings)
    stats_ms = (time.perf_counter() - started) * 1e3 / (len(queries) + len(reals))
    pairs = len(queries) * len(reals)
    started = time.perf_counter()
    ssim_fused.pair_bounds(q_stats, r_stats)
    bound_us = (time.perf_counter() - started) * 1e6 / pairs
    started = time.perf_counter()
    ssim_fused.fused_pairwise_ssim(q_stats, r_stats)
    kernel_us = (time.perf_counter() - started) * 1e6 / pairs
    return (
        f"statistics {stats_ms:.2f} ms per image (once per image and query chunk); "
        f"bound {bound_us:.1f} µs per pair; kernel {kernel_us:.1f} µs per pair"
    )


def _skimage_rate(images: np.ndarray, window: str, num_pairs: int) -> float:
    """scikit-image pairs per second, one pair at a time (one core)."""
    started = time.perf_counter()
    for a, b in zip(images[:num_pairs], images[-num_pairs:], strict=True):
        structural_similarity(a, b, data_range=255, **SK_KWARGS[window])
    return num_pairs / (time.perf_counter() - started)


def _interleaved(
    queries: np.ndarray, reals: np.ndarray, settings: SSIMSettings, repeats: int, threads: int
) -> dict[str, np.ndarray]:
    """Per repeat, torch then fused search then both kernels: rates as arrays over repeats.

    The two searches of a repeat run back to back (torch first in even repeats, fused
    first in odd ones), so a load change on a shared machine hits both alike; the
    speedup is the median of the per-repeat ratios.
    """
    runs: dict[str, list[float]] = {name: [] for name in (
        "torch", "fused", "torch_cpu", "fused_cpu", "torch_kernel", "fused_kernel")}  # fmt: skip
    searches = {
        "torch": SearchOptions(backend="torch", threads=threads),
        "fused": SearchOptions(backend="fused", prune=False, threads=threads),
    }
    for repeat in range(repeats):
        order = ("torch", "fused") if repeat % 2 == 0 else ("fused", "torch")
        for name in order:
            wall, cpu = _search_rate(queries, reals, settings, searches[name])
            runs[name].append(wall)
            runs[f"{name}_cpu"].append(cpu)
        _set_threads(threads)  # the searches set numba's threads from their options
        torch_kernel, fused_kernel = _precomputed_rates(queries, reals, settings)
        runs["torch_kernel"].append(torch_kernel)
        runs["fused_kernel"].append(fused_kernel)
    return {name: np.array(rates) for name, rates in runs.items()}


def cpu_compare(images: np.ndarray, threads: int, repeats: int, quick: bool) -> None:
    """Section: scikit-image, torch search and fused kernel pairs/s, same run, same threads."""
    _set_threads(threads)
    num_q, num_r = (4, 48) if quick else (64, 128)
    queries, reals = images[:num_q], images[num_q : num_q + num_r]
    print(f"\n## CPU comparison at 256² on real radiographs, {threads} thread(s), "
          f"{num_q} × {num_r} search, {repeats} interleaved repeats (torch and fused "
          f"alternate), medians; speedups are medians of the per-repeat ratios")  # fmt: skip
    print("| window | implementation | pairs/s (median) | vs torch search |")
    print("|---|---|---:|---:|")
    speedups, rates_by_window = {}, {}
    for window in ("uniform", "gaussian"):
        settings = SSIMSettings(window=window)
        exhaustive_topk(queries[:1], reals[:6], 1, settings)  # compile the kernels first
        sk_rate = _skimage_rate(images, window, 5 if quick else 20)
        runs = _interleaved(queries, reals, settings, repeats, threads)
        torch_rate = float(np.median(runs["torch"]))
        speedup = float(np.median(runs["fused"] / runs["torch"]))
        cpu_speedup = float(np.median(runs["fused_cpu"] / runs["torch_cpu"]))
        kernel_speedup = float(np.median(runs["fused_kernel"] / runs["torch"]))
        torch_kernel_speedup = float(np.median(runs["torch_kernel"] / runs["torch"]))
        name = WINDOW_NAMES[window]
        print(f"| {name} | scikit-image, 1 core, per pair | {sk_rate:,.0f} | "
              f"{sk_rate / torch_rate:.2f}× |")  # fmt: skip
        print(f"| {name} | torch search (statistics once per image) | {torch_rate:,.0f} | 1× |")
        print(f"| {name} | fused numba kernel, no pruning | {np.median(runs['fused']):,.0f} | "
              f"{speedup:.1f}× (range {np.min(runs['fused'] / runs['torch']):.1f}–"
              f"{np.max(runs['fused'] / runs['torch']):.1f}×; CPU time {cpu_speedup:.1f}×) |"
              )  # fmt: skip
        torch_kernel = np.median(runs["torch_kernel"])
        print(f"| {name} | torch, statistics precomputed (pairs only) | "
              f"{torch_kernel:,.0f} | {torch_kernel_speedup:.1f}× |")  # fmt: skip
        print(f"| {name} | fused, statistics precomputed (pairs only) | "
              f"{np.median(runs['fused_kernel']):,.0f} | {kernel_speedup:.1f}× |")  # fmt: skip
        speedups[window] = speedup
        rates_by_window[window] = float(np.median(runs["fused"]))
    print("\nWhere the fused search's time goes (same images):")
    for window in ("uniform", "gaussian"):
        print(f"- {WINDOW_NAMES[window]}: "
              f"{_profile_fused(queries, reals, SSIMSettings(window=window))}")  # fmt: skip
    print("\nExtrapolated on 16 cores (this per-thread rate × 16, no pruning):")
    for window, rate in rates_by_window.items():
        per_16 = rate / threads * 16
        audit_h = 1e3 * 1e5 / per_16 / 3600
        full_h = 1e5 * 1e5 / per_16 / 3600
        print(f"- {WINDOW_NAMES[window]}: 1,000 × 100,000 in {audit_h:.2f} h; "
              f"100,000 × 100,000 in {full_h:,.1f} h")  # fmt: skip
    print(f"\nspeedup vs torch search: {speedups['uniform']:.1f}× (uniform 7×7); "
          f"{speedups['gaussian']:.1f}× (Gaussian σ=1.5)")  # fmt: skip


def _search_counts(
    queries: np.ndarray, reals: np.ndarray, k: int, prune: bool, threads: int
) -> tuple[SearchCounters, np.ndarray]:
    counters = SearchCounters()
    options = SearchOptions(backend="fused", prune=prune, real_chunk=512, threads=threads)
    found = exhaustive_topk(queries, reals, k, options=options, counters=counters)
    return counters, found.index.numpy()


def _cache_256(folder: Path, data: Path) -> SiteCache:
    """Site A at 256² in a site cache with a seeded patient-level 70/15/15 split."""
    from shared.labels import NIH_LABELS
    from site_node.data.cache import SiteCache, write_cache

    labels = pd.read_csv(data / "cxr-site-a" / "labels.csv")
    images = load_site(data, "cxr-site-a")
    names = sorted(p.name for p in (data / "cxr-site-a" / "images").iterdir())
    labels = labels.set_index("Image Index").loc[names].reset_index()
    patients = labels["Patient ID"].astype(str).to_numpy()
    unique = np.unique(patients)
    rank = {p: r / len(unique) for r, p in enumerate(np.random.default_rng(0).permutation(unique))}
    fraction = np.array([rank[p] for p in patients])
    table = pd.DataFrame({
        "image_index": labels["Image Index"], "patient_id": patients,
        "split": np.select([fraction < 0.7, fraction < 0.85], ["train", "val"], "test"),
    })  # fmt: skip
    for label in NIH_LABELS:
        table[label] = 0
    write_cache(folder, {256: images}, table, NIH_LABELS, split_seed=0)
    return SiteCache(folder)


def _audit_seconds(
    cache: SiteCache,
    sample: Callable,  # type: ignore[type-arg]
    options: SearchOptions,
) -> tuple[float, AuditSummary]:
    from shared.artifacts.audit import AuditSettings
    from site_node.audit.memorisation import run_memorisation_audit

    settings = AuditSettings(num_samples=50, reference_samples=50, num_permutations=999)
    started = time.perf_counter()
    summary = run_memorisation_audit(
        sample,
        cache,
        settings,
        options=options,
        progress_bar=False,
    ).summary
    return time.perf_counter() - started, summary


def prune_real(data: Path, threads: int, quick: bool) -> None:
    """Section: pruning on real radiographs, and the audit end to end on site A at 256²."""
    _set_threads(threads)
    site_a, site_b = load_site(data, "cxr-site-a"), load_site(data, "cxr-site-b")
    picks = np.random.default_rng(0).permutation(len(site_a))
    num_q = 8 if quick else 48
    queries = site_a[picks[:num_q]]
    reals = np.concatenate([site_a[picks[num_q:]], site_b])
    print(f"\n## Pruning on real radiographs: {num_q} held-out site A images vs {len(reals):,} "
          f"(rest of site A + site B), 256², uniform window, {threads} thread(s)")  # fmt: skip
    print("| k | pairs | skipped before any work | abandoned part-way | computed in full | "
          "seconds pruned | seconds unpruned | same top-k |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for k in (1, 5):
        full, full_index = _search_counts(queries, reals, k, False, threads)
        pruned, pruned_index = _search_counts(queries, reals, k, True, threads)
        total = full.num_pairs
        whole = pruned.num_pairs_skipped - pruned.num_pairs_abandoned
        print(f"| {k} | {total:,} | {whole / total:.1%} | {pruned.num_pairs_abandoned / total:.1%} "
              f"| {pruned.num_pairs / total:.1%} | {pruned.seconds:.1f} | {full.seconds:.1f} | "
              f"{np.array_equal(full_index, pruned_index)} |")  # fmt: skip
    # The audit end to end: samples are held-out (val split) patients' real images with
    # light noise, standing in for a generator's samples (no trained 256² generator here).
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache_256(Path(tmp) / "cache", data)
        pool = cache.images(256)[cache.indices("val")]

        def sample(n: int, seed: int) -> np.ndarray:
            rng = np.random.default_rng(seed)
            noisy = pool[rng.choice(len(pool), n)] + rng.normal(0, 3, (n, 256, 256))
            return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

        print(f"\n## `radshare-site audit` pipeline end to end, site A at 256², 50 samples "
              f"(val-split patients + noise), 50 reference images, {threads} thread(s)"
              )  # fmt: skip
        print("| SSIM search | audit seconds | SSIM search seconds | pairs compared | "
              "pairs skipped | max best SSIM |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|")
        runs = [("torch", SearchOptions(backend="torch", threads=threads))] if not quick else []
        runs += [("fused", SearchOptions(backend="fused", prune=False, threads=threads)),
                 ("fused + pruning", SearchOptions(backend="fused", prune=True, threads=threads))
                 ]  # fmt: skip
        for name, options in runs:
            seconds, summary = _audit_seconds(cache, sample, options)
            search = summary.ssim_search
            assert search is not None
            print(
                f"| {name} | {seconds:.1f} | {search.seconds:.1f} | {search.pairs_compared:,} | "
                f"{search.pairs_skipped:,} | "
                f"{summary.best_ssim_quantiles['max']:.6f} |"
            )


class SyntheticReals:
    """``count`` 256² images made on the fly from real ones (rolled and flipped), never stored."""

    def __init__(self, base: np.ndarray, count: int) -> None:
        self.base, self.count = base, count
        self.shape: Sequence[int] = (count, *base.shape[1:])
        self.dtype = base.dtype

    def __len__(self) -> int:
        return self.count

    def _one(self, index: int) -> np.ndarray:
        image = self.base[index % len(self.base)]
        variant = index // len(self.base)
        image = np.roll(image, (variant * 7) % 32 - 16, axis=1)
        return image[:, ::-1] if variant % 2 else image

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        if isinstance(index, slice):
            return np.stack([self._one(i) for i in range(*index.indices(self.count))])
        if isinstance(index, (int, np.integer)):
            return self._one(int(index))
        return np.stack([self._one(int(i)) for i in np.asarray(index)])


def memory_peak(data: Path, threads: int, num_reals: int) -> None:
    """Section: peak RSS of a pruned top-5 search over ``num_reals`` synthesised 256² images."""
    _set_threads(threads)
    base = load_site(data, "cxr-site-a", 400)
    reals = SyntheticReals(base[8:], num_reals)
    counters = SearchCounters()
    before_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    options = SearchOptions(real_chunk=512, threads=threads)
    exhaustive_topk(base[:8], reals, 5, options=options, counters=counters)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n## Memory: 8 queries × {num_reals:,} reals of 256² (streamed, 512 per chunk), "
          f"pruned fused search, {threads} thread(s)")  # fmt: skip
    print(f"peak resident memory {peak_mib:,.0f} MiB (before the search {before_mib:,.0f} MiB); "
          f"{counters.num_pairs:,} pairs computed, {counters.num_pairs_skipped:,} skipped, "
          f"{counters.seconds:.0f} s; the reals alone would be "
          f"{num_reals * 256 * 256 / 2**20:,.0f} MiB as uint8")  # fmt: skip


def data_root(given: Path | None) -> Path | None:
    """``--data``, else ``RADSHARE_SAMPLE_DATA``, else None."""
    if given is not None:
        return given
    env = os.environ.get("RADSHARE_SAMPLE_DATA")
    return Path(env) if env else None


AUDIT_BACKENDS = {
    "torch": ["--ssim-backend", "torch", "--no-prune"],
    "fused": ["--ssim-backend", "fused", "--no-prune"],
    "fused + pruning (the default)": ["--ssim-backend", "fused", "--prune"],
}


def _audit_cli(run: Path, cache: Path, out: Path, flags: list[str], threads: int, num: int) -> dict:  # type: ignore[type-arg]
    """One ``radshare-site audit`` process on ``run``'s generator: wall seconds and summary.json."""
    import json
    import subprocess
    import sys

    command = [
        str(Path(sys.executable).with_name("radshare-site")), "audit", "--run", str(run),
        "--cache", str(cache), "--out", str(out), "--num-samples", str(num),
        "--threads", str(threads), "--no-membership", *flags,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's threads too, not only numba's
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **json.loads((out / "summary.json").read_text())}


def audit_generator(run: Path, threads: int, num_samples: int, repeats: int) -> None:
    """Section: ``radshare-site audit`` end to end on a trained generator, per SSIM search.

    ``run`` is a finished training run (``export/``); the site cache is the one it trained
    on (its ``options.json``). Each repeat runs the three searches in turn (the order
    rotates between repeats); wall times are medians over repeats.
    """
    import json

    cache = Path(json.loads((run / "options.json").read_text())["cache_dir"])
    rows: dict[str, list[dict]] = {name: [] for name in AUDIT_BACKENDS}  # type: ignore[type-arg]
    names = list(AUDIT_BACKENDS)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name in names[repeat % 3 :] + names[: repeat % 3]:
                out = Path(tmp) / f"{repeat}-{names.index(name)}"
                rows[name].append(
                    _audit_cli(run, cache, out, AUDIT_BACKENDS[name], threads, num_samples)
                )
    first = rows[names[0]][0]
    print(f"\n## `radshare-site audit` end to end on a trained generator ({run}), "
          f"{first['resolution_px']}², {num_samples} samples vs {first['num_train']} train and "
          f"{first['num_holdout']} holdout images of {cache}, {threads} thread(s), "
          f"--no-membership, median of {repeats} repeat(s)")  # fmt: skip
    print("| SSIM search | audit seconds (process) | SSIM search seconds | pairs compared | "
          "pairs skipped by the bound | skipped | max best SSIM | verdict |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in names:
        runs = rows[name]
        search = runs[0]["ssim_search"]
        total = search["pairs_compared"] + search["pairs_skipped"]
        print(f"| {name} | {np.median([r['seconds'] for r in runs]):.1f} | "
              f"{np.median([r['ssim_search']['seconds'] for r in runs]):.1f} | "
              f"{search['pairs_compared']:,} | {search['pairs_skipped']:,} | "
              f"{search['pairs_skipped'] / total:.1%} | "
              f"{runs[0]['best_ssim_quantiles']['max']:.6f} | "
              f"{'passed' if runs[0]['verdict']['passed'] else 'failed'} |")  # fmt: skip
    speedups = [
        np.median([r["seconds"] for r in rows[names[0]]])
        / np.median([r["seconds"] for r in rows[n]])
        for n in names[1:]
    ]
    print(
        f"end-to-end speedup vs the torch search: fused {speedups[0]:.1f}×, "
        f"fused + pruning {speedups[1]:.1f}×"
    )
