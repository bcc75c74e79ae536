"""Issue 7, show 1: real-only vs site-synthetic vs pooled-synthetic classifiers on the real sites.

    RADSHARE_SAMPLE_DATA=../shared/data .venv/bin/python benchmarks/pooled_comparison.py \
        --work /tmp/radshare-show1 [--stage all]

A CPU run at small resolution with short schedules. Each stage skips work whose output
exists, so a stopped run picks up where it was:

1. ``sites``: per site, a cache (32 px) of the real images, a tiny PGGAN, a labeller
   (classes: the labels the site annotated);
2. ``archives``: per site, a labelled synthetic archive from its generator and labeller
   (class optimisation + local sampling of ``hub.synthesis``);
3. ``pool``: the pooled archive of both sites (union label space, per-site masks);
4. ``classifiers``: a classifier on each site's archive and one on the pool;
5. ``evaluate``: every classifier on every site's real test split, plus (a) each site's
   real-only baseline trained at the site; the comparison table and the HTML report.

The real images never leave the site's cache folder; the hub-side stages read only
archives and the sites' aggregate replies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

log = logging.getLogger("radshare.bench.pooled_comparison")

SITES = {"a": "cxr-site-a", "b": "cxr-site-b"}
RESOLUTION_PX = 32


def _sample_data() -> Path:
    root = os.environ.get("RADSHARE_SAMPLE_DATA", str(ROOT.parent / "shared" / "data"))
    return Path(root)


def stage_sites(work: Path, pggan_kimg_per_phase: float, labeller_epochs: int, sites: list[str]) -> None:
    """Cache, PGGAN and labeller per site (all at the site)."""
    from helpers_cache import build_site_cache

    from site_node.labeller.train import LabellerTrainOptions, train_labeller
    from site_node.pggan.options import TrainOptions
    from site_node.pggan.train import train

    for site in sites:
        folder = SITES[site]
        cache_dir = work / f"site-{site}" / "cache"
        cache = build_site_cache(_sample_data() / folder, cache_dir, resolutions_px=(32,))
        run_dir = work / f"site-{site}" / "pggan"
        if not (run_dir / "export" / "generator.json").is_file():
            t0 = time.time()
            options = TrainOptions.from_profile(
                "tiny",
                cache_dir=cache_dir,
                run_dir=run_dir,
                kimg_per_phase=pggan_kimg_per_phase,
                accelerator="cpu",
                progress_bar=False,
            )
            train(options)
            log.info("site %s: PGGAN in %.0f s", site, time.time() - t0)
        lab_dir = work / f"site-{site}" / "labeller"
        if not (lab_dir / "export" / "labeller.json").is_file():
            train_labels = cache.labels("train")
            annotated = [
                name for i, name in enumerate(cache.label_space) if train_labels[:, i].sum() > 0
            ]
            t0 = time.time()
            train_labeller(
                LabellerTrainOptions(
                    cache_dir=cache_dir,
                    out_dir=lab_dir,
                    resolution_px=RESOLUTION_PX,
                    class_names=annotated,
                    max_epochs=labeller_epochs,
                    early_stop_patience_epochs=4,
                    progress_bar=False,
                )
            )
            log.info("site %s: labeller in %.0f s", site, time.time() - t0)


def main(argv: list[str] | None = None) -> None:
    """Run the stages named by ``--stage``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radshare-show1"))
    parser.add_argument("--stage", default="all")
    parser.add_argument("--pggan-kimg-per-phase", type=float, default=8.0)
    parser.add_argument("--labeller-epochs", type=int, default=12)
    parser.add_argument("--sites", default="a,b", help="sites of stage 'sites'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "sites"):
        stage_sites(args.work, args.pggan_kimg_per_phase, args.labeller_epochs, args.sites.split(","))
    np.set_printoptions(precision=3)
    (args.work / "done_stages.json").write_text(json.dumps({"last": args.stage}))


if __name__ == "__main__":
    main()
