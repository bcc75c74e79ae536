"""Issue 13, must-show 1, over several runs: how often does `make demo` meet its targets?

    .venv/bin/python benchmarks/demo_seeds.py --work /tmp/demo-seeds --seeds 0,1,2

Runs ``python -m deployment.demo --profile cpu --seed N --out WORK/seedN`` once per seed
(each in its own process, one after the other, so each gets the machine's cores as
`make demo` does) and reads each run's own ``report/results.json``. Another seed is
another run of the same demo: other phantom patients, other generator, labeller, archive
and classifier draws. A run whose output exists is resumed (finished: read as it is).

Printed, per seed and site: the real-only mean AUC on the site's phantom test split, the
site-synthetic one and its share of real-only, the pooled share, the largest prevalence
gap, and the demo's wall time (measured here; for a run found finished, the demo's own
``elapsed_s``, which covers only its last invocation); then, per site,
how many runs met each target (real-only >= 0.85, site-synthetic >= 90% of it, every
prevalence gap <= 10 points). Results go to ``--results``
(``benchmarks/demo_seeds_results.json``), one entry per (host label, seed), so runs on
other machines add to the table instead of replacing it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared.fileio import atomic_write_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_RESULTS = HERE / "demo_seeds_results.json"


def run_seed(work: Path, seed: int, profile: str) -> float | None:
    """Run (or resume) the demo for ``seed``; its wall seconds, None when it had finished."""
    out = work / f"seed{seed}"
    if (out / "report" / "results.json").is_file():
        return None
    command = [sys.executable, "-m", "deployment.demo", "--profile", profile]
    command += ["--seed", str(seed), "--out", str(out)]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=REPO, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"demo seed {seed} exited {completed.returncode}; see {out}/logs")
    return time.monotonic() - started


def site_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per site from a demo's ``results.json``."""
    rows = []
    for site, numbers in sorted(results["sites"].items()):
        auc, checks = numbers["auc"], numbers["checks"]
        gaps = [p["gap_pp"] for p in numbers["prevalence"].values()]
        rows.append(
            {
                "site": site,
                "real_auc": auc["real"],
                "synthetic_auc": auc["synthetic"],
                "synthetic_of_real": auc["synthetic_fraction_of_real"],
                "pooled_of_real": auc["pooled"] / auc["real"],
                "max_gap_pp": None if None in gaps else max(gaps),
                "checks": checks,
            }
        )
    return rows


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def print_table(entries: dict[str, Any]) -> None:
    """The per-run table and, per site, how many runs met each target."""
    print("| host | seed | site | real-only | site-synthetic | of real | pooled of real "
          "| max gap (pt) | demo wall (min) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    met: dict[str, dict[str, list[bool]]] = {}
    for entry in entries.values():
        wall = f"{entry['wall_s'] / 60:.1f}" if entry.get("wall_s") else "–"
        for row in entry["rows"]:
            gap = "–" if row["max_gap_pp"] is None else f"{row['max_gap_pp']:.1f}"
            print(f"| {entry['host']} | {entry['seed']} | {row['site']} | {row['real_auc']:.3f} "
                  f"| {row['synthetic_auc']:.3f} | {row['synthetic_of_real']:.1%} "
                  f"| {row['pooled_of_real']:.1%} | {gap} | {wall} |")  # fmt: skip
            for check, ok in row["checks"].items():
                met.setdefault(row["site"], {}).setdefault(check, []).append(bool(ok))
    print()
    for site, checks in sorted(met.items()):
        text = ", ".join(f"{name} {sum(v)}/{len(v)}" for name, v in checks.items())
        print(f"site {site}: targets met in {text} runs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="one demo folder per seed")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated demo seeds")
    parser.add_argument("--profile", default="cpu", choices=("tiny", "cpu", "gpu"))
    parser.add_argument("--host", default="local", help="label of this machine in the table")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    entries = _load(args.results)
    for seed in seeds:
        wall_s = run_seed(args.work, seed, args.profile)
        results = json.loads((args.work / f"seed{seed}" / "report" / "results.json").read_text())
        key = f"{args.host}/{args.profile}/seed{seed}"
        previous_wall = entries.get(key, {}).get("wall_s")  # a resumed run's is partial
        entries[key] = {
            "host": args.host,
            "profile": args.profile,
            "seed": seed,
            "wall_s": wall_s or previous_wall or results.get("elapsed_s"),
            "rows": site_rows(results),
        }
        atomic_write_text(args.results, json.dumps(entries, indent=2) + "\n")
    print_table(entries)


if __name__ == "__main__":
    main()
