"""Does DP-SGD on the critic stop a deliberately overfitted PGGAN from leaking membership?

On real site-A images: ingest the site, keep ``--members`` random training images as
the only train split (the val and test splits stay as they are), train a small PGGAN
long on them without DP, and again with DP at each ``--epsilon``; then attack every
generator with ``site_node.privacy.membership`` (members: the kept images;
non-members: the test split; reference: the val split) and write grids of samples.

Everything (cache, runs, grids, ``results.json``) goes under ``--out``, which must lie
outside the repository: an overfitted generator's samples are near copies of patients.

    .venv/bin/python benchmarks/dp_membership_experiment.py --out /tmp/dp-mia \\
        --site /work/shared/data/cxr-site-a --members 128 --kimg-per-phase 20 --epsilon 10
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.artifacts.membership import MembershipSettings
from site_node.data.cache import SiteCache, write_cache
from site_node.data.ingest import IngestOptions, ingest
from site_node.pggan.export import load_exported_generator
from site_node.pggan.options import TrainOptions
from site_node.pggan.sampling import generate_uint8, image_grid, write_png
from site_node.pggan.train import train
from site_node.privacy.config import DPOptions
from site_node.privacy.membership import run_membership_audit

log = logging.getLogger("radshare.site.privacy")


def member_cache(site_dir: Path, out: Path, num_members: int, seed: int) -> Path:
    """Ingest the site, then a cache whose train split is ``num_members`` random train images."""
    full_dir, cache_dir = out / "cache-full", out / "cache-members"
    if not (full_dir / "manifest.json").is_file():
        ingest(
            site_dir / "labels.csv",
            site_dir / "images",
            full_dir,
            IngestOptions(max_resolution_px=32),
        )
    if (cache_dir / "manifest.json").is_file():
        return cache_dir
    full = SiteCache(full_dir)
    members = np.random.default_rng(seed).choice(full.indices("train"), num_members, replace=False)
    keep = np.sort(np.concatenate([members, full.indices("val"), full.indices("test")]))
    table = full.table.iloc[keep].drop(columns=["row"]).reset_index(drop=True)
    images = {r: np.asarray(full.images(r))[keep] for r in full.manifest.resolutions_px}
    write_cache(cache_dir, images, table, full.label_space, site_id="dp-mia", split_seed=seed)
    return cache_dir


def train_run(
    cache_dir: Path, run_dir: Path, args: argparse.Namespace, dp: DPOptions | None
) -> float:
    """Train one generator (reused if ``run_dir`` already holds an export); seconds taken."""
    if (run_dir / "export" / "generator.json").is_file():
        return 0.0
    batch = args.batch_size
    options = TrainOptions(
        cache_dir=cache_dir, run_dir=run_dir, resolution_px=args.resolution, z_dim=64,
        fmap_base=512, fmap_max=64, use_minibatch_stddev=False,
        kimg_per_phase=args.kimg_per_phase, fade_kimg=args.fade_kimg,
        batch_sizes={4: batch, 8: batch, 16: batch, 32: batch},
        tick_kimg=max(1.0, args.kimg_per_phase), sample_every_kimg=1e6, ema_halflife_kimg=0.5,
        accelerator="cpu", progress_bar=False, seed=args.seed, dp=dp,
    )  # fmt: skip
    started = time.perf_counter()
    train(options)
    return time.perf_counter() - started


def attack(run_dir: Path, cache_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Membership audit of a run's G_ema, and a grid of its samples."""
    G_ema = load_exported_generator(run_dir)

    def sample(n: int, seed: int) -> np.ndarray:
        return generate_uint8(G_ema, n, seed=seed, batch_size=256)

    settings = MembershipSettings(
        num_samples=args.num_samples,
        distance_px=args.resolution,
        seed=args.seed,
    )
    summary = run_membership_audit(sample, SiteCache(cache_dir), settings)
    write_png(args.out / f"grid_{run_dir.name}.png", image_grid(sample(64, 1234)))
    training = json.loads((run_dir / "export" / "generator.json").read_text())["training"]
    return {
        "membership": summary.model_dump(mode="json"),
        "dp": training.get("dp"),
        "kimg": training["kimg_shown"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--site", type=Path, default=Path("/work/shared/data/cxr-site-a"))
    parser.add_argument("--members", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--kimg-per-phase", type=float, default=20.0)
    parser.add_argument("--fade-kimg", type=float, default=None, help="default: kimg per phase")
    parser.add_argument("--epsilon", type=float, nargs="*", default=[10.0])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", nargs="*", default=None, help="only these (nondp, dp_eps10, ...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    args.out.mkdir(parents=True, exist_ok=True)

    # Data: members, non-members (test split), reference (val split).
    cache_dir = member_cache(args.site, args.out, args.members, args.seed)

    # Train: non-DP, then DP at every epsilon.
    runs: dict[str, DPOptions | None] = {"nondp": None}
    for epsilon in args.epsilon:
        runs[f"dp_eps{epsilon:g}"] = DPOptions(
            target_epsilon=epsilon, delta=args.delta, accountant="prv"
        )
    for name, dp in runs.items():
        if args.runs is not None and name not in args.runs:
            continue
        seconds = train_run(cache_dir, args.out / name, args, dp)
        result = {"train_seconds": seconds, **attack(args.out / name, cache_dir, args)}
        (args.out / f"results_{name}.json").write_text(json.dumps(result, indent=2))

    # Report every run that has results.
    for path in sorted(args.out.glob("results_*.json")):
        print_result(path.stem.removeprefix("results_"), json.loads(path.read_text()))


def print_result(name: str, result: dict[str, Any]) -> None:
    """One line per attack: AUC and TPR at 1% FPR with their 95% CIs."""
    epsilon = result["dp"]["epsilon"] if result["dp"] else float("inf")
    for method, a in result["membership"]["attacks"].items():
        auc, tpr = a["roc_auc_ci95"], a["tpr_at_target_fpr_ci95"]
        print(
            f"{name:>10} eps {epsilon:6.2f} {method:>21}  AUC {a['roc_auc']:.3f} "
            f"[{auc[0]:.3f}, {auc[1]:.3f}]  TPR@1%FPR {a['tpr_at_target_fpr']:.3f} "
            f"[{tpr[0]:.3f}, {tpr[1]:.3f}]"
        )


if __name__ == "__main__":
    main()
