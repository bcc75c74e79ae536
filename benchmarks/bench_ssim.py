"""SSIM throughput and exhaustive nearest-neighbour search time at 256², and the 100k² estimate.

Prints, for 256² uint8 images and the uniform 7×7 window (and the Gaussian one):

1. SSIM pairs per second: scikit-image on one core; the torch implementation on
   CPU (one thread, all threads) and on a GPU where one is available, per pair
   and with each real image's window statistics precomputed (the search's case);
   plus the largest |difference| from scikit-image on the pairs timed.
2. The time of an exhaustive ``Q × R`` top-k search for R = 1,000 and 10,000
   (Q = 1,000 on a GPU; on a CPU a smaller Q is timed and scaled linearly, as the
   work is ``Q × R`` pairs), and its extrapolation to 100,000 × 100,000.
3. With ``--data``: the prefilter's recall against the exhaustive search on real
   images (site A and site B radiographs, held-out queries).

4. CPU sections (``benchmarks/ssim_cpu.py``), each alone or together, on real images
   from ``--data`` or ``RADSHARE_SAMPLE_DATA``: ``--cpu-compare`` (scikit-image,
   today's torch search and the fused numba kernel, same run and threads; last
   line ``speedup vs torch search: N.N×``), ``--prune`` (pairs the exact bound
   skips on real radiographs; the audit end to end) and ``--memory`` (peak RSS
   of a search over 20,000 images of 256², in its own process).
   ``--generator RUN``: ``radshare-site audit`` end to end (its own processes) on
   a finished training run's samples, with the torch search, the fused one and the
   fused one with pruning: wall times, pairs compared and skipped by the bound.

Run: ``python benchmarks/bench_ssim.py [--device cuda] [--data ../shared/data] [--quick]``;
``python benchmarks/bench_ssim.py --cpu-compare --threads 1``;
``python benchmarks/bench_ssim.py --generator runs/a-256 --audit-samples 200 --repeats 1``.
Images for timing are smooth random fields (speed does not depend on content);
the real images are read only where ``--data`` is given, and never written.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from shared.metrics.nn_search import (
    SearchCounters,
    SearchOptions,
    exhaustive_topk,
    prefiltered_topk,
    topk_recall,
)
from shared.metrics.ssim import SSIMSettings, compute_ssim, pairwise_ssim, window_stats

RES_PX = 256
SK_KWARGS = {
    "uniform": {},
    "gaussian": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},
}


def smooth_images(count: int, seed: int) -> np.ndarray:
    """uint8 ``[count, 256, 256]`` smooth random fields with some fine texture."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(count, RES_PX // 8, RES_PX // 8)).astype(np.float32)
    coarse = np.kron(gaussian_filter(base, (0, 2, 2)), np.ones((8, 8), np.float32))
    fine = rng.normal(0, 0.15, (count, RES_PX, RES_PX)).astype(np.float32)
    image = coarse / (np.abs(coarse).max() + 1e-6) + fine
    return np.clip(127.5 + 90 * image, 0, 255).astype(np.uint8)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def skimage_rate(x: np.ndarray, y: np.ndarray, window: str) -> tuple[float, np.ndarray]:
    """Pairs per second of scikit-image on this (one) core, and its values."""
    started = time.perf_counter()
    values = [
        structural_similarity(a, b, data_range=255, **SK_KWARGS[window])
        for a, b in zip(x, y, strict=True)
    ]
    return len(x) / (time.perf_counter() - started), np.array(values)


def torch_pair_rate(
    x: np.ndarray, y: np.ndarray, window: str, device: str, repeats: int
) -> tuple[float, np.ndarray]:
    """Pairs per second of :func:`compute_ssim` (statistics of both images per pair)."""
    settings = SSIMSettings(window=window)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    values = compute_ssim(xt, yt, settings, dtype=torch.float32)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        for start in range(0, len(x), 256):
            compute_ssim(
                xt[start : start + 256], yt[start : start + 256], settings, dtype=torch.float32
            )
    _sync(device)
    return repeats * len(x) / (time.perf_counter() - started), values.cpu().numpy()


def torch_precomputed_rate(
    queries: np.ndarray, reals: np.ndarray, window: str, device: str
) -> float:
    """Pairs per second of all-pairs SSIM with both sides' statistics computed beforehand."""
    settings = SSIMSettings(window=window)
    options = SearchOptions(device=device)
    q_stats = window_stats(queries, settings, device=device)
    r_stats = window_stats(reals, settings, device=device)
    block = max(1, options.pixels_per_block // (RES_PX * RES_PX * len(queries)))
    pairwise_ssim(q_stats, r_stats.select(slice(0, block)))
    _sync(device)
    started = time.perf_counter()
    for start in range(0, len(reals), block):
        pairwise_ssim(q_stats, r_stats.select(slice(start, start + block)))
    _sync(device)
    return len(queries) * len(reals) / (time.perf_counter() - started)


def print_rates(device: str, num_pairs: int, quick: bool) -> dict[str, float]:
    """Section 1: pairs per second, by implementation and window."""
    x, y = smooth_images(num_pairs, 1), smooth_images(num_pairs, 2)
    rates = {}
    print(f"\n## SSIM pairs per second, 256² uint8 ({num_pairs} pairs)")
    print("| window | implementation | pairs/s | max abs diff vs skimage |")
    print("|---|---|---:|---:|")
    for window in ("uniform", "gaussian"):
        sk_count = 20 if quick else 60
        sk_rate, sk_values = skimage_rate(x[:sk_count], y[:sk_count], window)
        print(f"| {window} | scikit-image, 1 core | {sk_rate:,.0f} | 0 |")
        runs = [("cpu", 1), ("cpu", os.cpu_count() or 1)]
        if device.startswith("cuda"):
            runs.append((device, 0))
        for run_device, threads in runs:
            if threads:
                torch.set_num_threads(threads)
            label = f"torch {run_device}" + (f", {threads} thread(s)" if threads else "")
            count = num_pairs if run_device != "cpu" else min(num_pairs, 96 if quick else 192)
            rate, values = torch_pair_rate(
                x[:count], y[:count], window, run_device, 1 if run_device == "cpu" else 5
            )
            diff = np.abs(values[:sk_count] - sk_values).max()
            print(f"| {window} | {label}, per pair | {rate:,.0f} | {diff:.1e} |")
            q, r = (8, 96) if run_device == "cpu" else (64, 2048)
            rate = torch_precomputed_rate(
                x[:q], y[:r] if r <= len(y) else smooth_images(r, 3), window, run_device
            )
            print(f"| {window} | {label}, statistics precomputed | {rate:,.0f} | |")
            rates[f"{window}:{run_device}:{threads}"] = rate
    return rates


def time_search(device: str, num_queries: int, num_reals: int) -> tuple[float, int]:
    """Seconds and pairs of one exhaustive top-5 search (uniform window)."""
    queries = smooth_images(num_queries, 10)
    pool = smooth_images(min(num_reals, 2000), 11)
    reals = np.concatenate([pool] * (num_reals // len(pool) + 1))[:num_reals]
    counters = SearchCounters()
    options = SearchOptions(device=device, real_chunk=2048 if device != "cpu" else 512)
    _sync(device)
    exhaustive_topk(queries, reals, 5, options=options, counters=counters)
    _sync(device)
    return counters.seconds, counters.num_pairs


def print_search(device: str, quick: bool, threads: int) -> None:
    """Section 2: exhaustive 1,000 × R at 256², and the 100k × 100k extrapolation."""
    torch.set_num_threads(threads)
    timed_queries = 1000 if device != "cpu" else (4 if quick else 16)
    print(f"\n## Exhaustive top-5 search at 256², uniform window, on {device}")
    print("| Q × R | timed as | seconds (for 1,000 × R) | pairs/s |")
    print("|---|---|---:|---:|")
    rate = 0.0
    for num_reals in (1000, 10000):
        seconds, pairs = time_search(device, timed_queries, num_reals)
        rate = pairs / seconds
        scaled = seconds * 1000 / timed_queries
        timed = f"{timed_queries} × {num_reals:,}"
        print(f"| 1,000 × {num_reals:,} | {timed} | {scaled:,.1f} | {rate:,.0f} |")
    total = 1e5 * 1e5 / rate
    print(
        f"\nExtrapolated 100,000 × 100,000 (1e10 pairs) at {rate:,.0f} pairs/s: "
        f"{total:,.0f} s = {total / 3600:,.1f} h on this device"
    )


def load_real(data: Path, site: str, count: int) -> np.ndarray:
    """uint8 256² radiographs of one site (read-only, in memory)."""
    from PIL import Image

    folder = data / site / "images"
    names = sorted(p.name for p in folder.iterdir())[:count]
    return np.stack([np.asarray(Image.open(folder / n).convert("L")) for n in names])


def print_recall(device: str, data: Path, quick: bool, threads: int) -> None:
    """Section 3: recall of the correlation prefilter against the exhaustive search."""
    torch.set_num_threads(threads)
    site_a, site_b = load_real(data, "cxr-site-a", 840), load_real(data, "cxr-site-b", 1500)
    num_queries = 24 if quick else 100
    rng = np.random.default_rng(0)
    picks = rng.permutation(len(site_a))
    queries = site_a[picks[:num_queries]]
    reals = np.concatenate([site_a[picks[num_queries:]], site_b])
    options = SearchOptions(device=device, real_chunk=512)
    exact = exhaustive_topk(queries, reals, 5, options=options)
    print(f"\n## Prefilter recall, 256² real radiographs: {num_queries} site A queries vs "
          f"{len(reals):,} reals (site A rest + site B)")  # fmt: skip
    print("| prefilter | candidates | recall@1 | recall@5 | seconds |")
    print("|---|---:|---:|---:|---:|")
    for size_px in (16, 32):
        for candidates in (16, 64, 256):
            counters = SearchCounters()
            approx = prefiltered_topk(
                queries, reals, 5, num_candidates=candidates, size_px=size_px,
                options=options, counters=counters,
            )  # fmt: skip
            top1 = topk_recall(
                type(exact)(exact.similarity[:, :1], exact.index[:, :1]),
                type(approx)(approx.similarity[:, :1], approx.index[:, :1]),
            )
            print(
                f"| Pearson on {size_px}² block means | {candidates} | {top1:.3f} | "
                f"{topk_recall(exact, approx):.3f} | {counters.seconds:.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, default=None, help="team data for the recall table")
    parser.add_argument("--quick", action="store_true", help="fewer pairs, for a smoke run")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (all; 1 for the CPU sections)"
    )
    parser.add_argument("--skip", default="", help="comma list of sections to skip: rates,search")
    parser.add_argument("--cpu-compare", action="store_true", help="skimage vs torch vs fused")
    parser.add_argument("--prune", action="store_true", help="bound pruning on real images")
    parser.add_argument("--memory", action="store_true", help="peak RSS over 20,000 reals")
    parser.add_argument("--memory-reals", type=int, default=20000, help="reals of --memory")
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved repeats (medians of their ratios)"
    )
    parser.add_argument(
        "--generator", type=Path, default=None,
        help="finished training run (export/): time `radshare-site audit` on its samples",
    )  # fmt: skip
    parser.add_argument("--audit-samples", type=int, default=200, help="--generator's samples")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_compare or args.prune or args.memory or args.memory_only or args.generator:
        cpu_sections(args)
        return
    args.threads = args.threads or os.cpu_count() or 1
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    print(f"# bench_ssim: torch {torch.__version__}, device {args.device} ({name}), "
          f"{os.cpu_count()} CPU threads")  # fmt: skip
    skip = set(args.skip.split(","))
    if "rates" not in skip:
        print_rates(args.device, 96 if args.quick else 1024, args.quick)
    if "search" not in skip:
        print_search(args.device, args.quick, args.threads)
    if args.data is not None:
        print_recall(args.device, args.data, args.quick, args.threads)


def cpu_sections(args: argparse.Namespace) -> None:
    """The fused-kernel sections; ``--cpu-compare`` runs last so its speedup is the last line."""
    import subprocess
    import sys

    import ssim_cpu

    data = ssim_cpu.data_root(args.data)
    threads = args.threads or 1  # per-core numbers unless asked otherwise
    if args.memory_only:
        assert data is not None
        ssim_cpu.memory_peak(data, threads, args.memory_reals)
        return
    if args.generator is not None:
        ssim_cpu.audit_generator(args.generator, threads, args.audit_samples, args.repeats)
        if not (args.cpu_compare or args.prune or args.memory):
            return
    if data is None:
        raise SystemExit("--cpu-compare/--prune/--memory need --data or RADSHARE_SAMPLE_DATA")
    print(f"# bench_ssim CPU sections: torch {torch.__version__}, numba "
          f"{ssim_cpu.ssim_fused.numba.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU threads, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    if args.memory:
        command = [
            sys.executable, __file__, "--memory-only", "--data", str(data),
            "--threads", str(threads), "--memory-reals", str(args.memory_reals),
        ]  # fmt: skip
        subprocess.run(command, check=True)
    if args.prune:
        ssim_cpu.prune_real(data, threads, args.quick)
    if args.cpu_compare:
        images = ssim_cpu.load_site(data, "cxr-site-a", 400)
        ssim_cpu.cpu_compare(images, threads, args.repeats, args.quick)


if __name__ == "__main__":
    main()
