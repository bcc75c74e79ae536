"""Run the fast benchmarks at small sizes and print their tables (``make bench``).

    .venv/bin/python benchmarks/run_all.py            # every fast benchmark, small sizes
    .venv/bin/python benchmarks/run_all.py --list     # what it runs, with the arguments
    .venv/bin/python benchmarks/run_all.py --only bench_ssim,bench_registry

Each benchmark runs in its own process (a crash or a leaked thread stays there)
with the arguments below, chosen for a laptop CPU: about a minute each on 2 cores
(the audit calibration, with data, about four: its SSIM matrices dominate); run a
script by hand with its own ``--help`` for full-size numbers, a GPU or real data.
``bench_audit_calibration`` runs only where ``RADSHARE_SAMPLE_DATA`` points at
the team's data. The experiments (:data:`NOT_RUN`: the demo over several seeds,
the DP membership experiment, the small-site, per-label, pooling and rare-class
studies) train networks for tens of minutes to hours and are never run from here.

Exit code: 0 if every benchmark that ran exited 0, else 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    """One benchmark script and the small-size arguments ``make bench`` gives it."""

    name: str
    args: tuple[str, ...]
    needs_data: bool = False


def _benches(work: Path, data: str | None) -> list[Bench]:
    return [
        Bench("bench_registry", ("--repeats", "1")),
        Bench("bench_pull", ("--images", "500", "--work", str(work / "bench-pull"))),
        Bench("bench_ssim", ("--quick", "--threads", "2")),
        Bench(
            "bench_pggan", ("--small", "--resolutions", "16,32", "--steps", "2", "--warmup", "1")
        ),
        Bench("bench_dp", ("--resolutions", "32", "--steps", "2", "--warmup", "1")),
        Bench(
            "bench_classopt",
            ("--device", "cpu", "--batch-sizes", "1,16", "--seconds", "5", "--skip-archive"),
        ),
        Bench(
            "bench_audit_calibration",
            ("--data", data or "", "--splits", "3", "--samples", "20"),
            needs_data=True,
        ),
    ]


#: Scripts in benchmarks/ that this runner never starts (long experiments).
NOT_RUN = (
    "demo_seeds",
    "dp_membership_experiment",
    "per_label_site",
    "pooled_comparison",
    "pooling_b1_b2",
    "rare_class_enrichment",
    "small_site_gan",
)


def _run(bench: Bench, timeout_s: float) -> tuple[str, float]:
    """Run one benchmark, its output going straight to ours; (outcome, seconds)."""
    command = [sys.executable, str(HERE / f"{bench.name}.py"), *bench.args]
    print(f"\n=== {bench.name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    try:
        code = subprocess.run(command, cwd=HERE.parent, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:g} s", time.perf_counter() - started
    return ("ok" if code == 0 else f"exit code {code}"), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks asked for; print a summary; 0 if all passed."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--list", action="store_true", help="print what would run, and stop")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per benchmark")
    args = parser.parse_args(argv)
    data = os.environ.get("RADSHARE_SAMPLE_DATA")
    with tempfile.TemporaryDirectory(prefix="radshare-bench-") as work:
        benches = _benches(Path(work), data)
        known = {b.name for b in benches}
        only = {n.strip() for n in args.only.split(",") if n.strip()}
        if only - known:
            parser.error(f"--only: unknown {sorted(only - known)}; choose from {sorted(known)}")
        chosen = [b for b in benches if not only or b.name in only]
        if args.list:
            for bench in chosen:
                note = "  (needs RADSHARE_SAMPLE_DATA)" if bench.needs_data else ""
                print(f"{bench.name} {' '.join(bench.args)}{note}")
            print(f"never run here: {', '.join(NOT_RUN)}")
            return 0
        results = []
        for bench in chosen:
            if bench.needs_data and not data:
                results.append((bench.name, "skipped: RADSHARE_SAMPLE_DATA is not set", 0.0))
                continue
            outcome, seconds = _run(bench, args.timeout_s)
            results.append((bench.name, outcome, seconds))
    print("\n=== summary")
    print(f"{'benchmark':<26} {'seconds':>8}  outcome")
    for name, outcome, seconds in results:
        print(f"{name:<26} {seconds:8.1f}  {outcome}")
    print(f"not run (long experiments): {', '.join(NOT_RUN)}")
    failed = [
        name for name, outcome, _ in results if outcome not in ("ok",) and "skipped" not in outcome
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
