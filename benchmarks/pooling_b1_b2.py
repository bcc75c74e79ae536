"""Issue 13, item 4: is the pool of two hospitals' synthetic archives better than one's?

    RADSHARE_SAMPLE_DATA=/work/shared/data RADSHARE_MAX_ATTEMPTS=5 OMP_NUM_THREADS=1 \
        .venv/bin/python benchmarks/pooling_b1_b2.py --work /tmp/pool-b --resolution 32 \
        [--accelerator gpu]

The defaults are ``small_site_gan.py``'s site-b 32 px run in docs/benchmarks.md
(14 kimg, 300 images per archive, 60 class-optimisation steps, 5 attempts, 15 epochs).

Han et al. found a classifier trained on the pool of two sites' synthetic archives
better than one trained on one site's. Our sites a and b are different populations
(adults, children), so this splits site b into two "hospitals" of one population:

1. Site b's cache is the one ``small_site_gan.py`` uses (``tests/helpers_cache``: seeded
   patient-level 70/15/15). Its train patients, and separately its val patients, are
   split in halves b1 / b2 by the project's splitter
   (``site_node.data.split.iterative_stratified_split``, patient-level, stratified by the
   label set, fractions 0.5/0.5/0, seeded). Each hospital gets its own cache: its train
   and val halves, plus site b's whole test split, which is the common test split.
2. Per hospital, at the hospital: a small-DenseNet labeller
   (``pooled_comparison.stage_small_labellers``) and a tiny PGGAN
   (``small_site_gan.train_pggan``, no augmentation, the default by measurement); at the
   hub: a class-optimised archive, match-site targets (``small_site_gan.make_archive``).
3. The hub pools the b1 and b2 archives (``hub.pooling``: ``plan_pool`` strategy ``all``,
   ``write_pooled_archive``) and trains classifiers (``small_site_gan.
   train_archive_classifier``, same network and epochs) on: b1's archive; b2's; the pool; and,
   as a size control (the pool has twice the images), a b1 archive of the pool's size;
   with ``--other-b1-archive``, also b1's archive pooled with a b1 archive from a generator
   of another seed (two generators, one hospital's data: is it the second hospital or the
   second generator?).
4. Every classifier is evaluated on site b's real test split at the site
   (``small_site_gan.evaluate_at_site``, the ClientApp's handler), next to the real-only
   classifiers trained at the site on b1's train split and on b1+b2's (``train-real``).

Printed: per arm, the site's macro AUC and a patient-level bootstrap 95% CI
(``shared.stats.bootstrap_ci`` resampling test patients, not images), and paired
bootstrap CIs of AUC differences on the same resampled patients (pooled minus b1, ...).
The CIs need the test logits, so the script, acting as the site, also computes them with
the site's own functions (``predict_split``; for the real arms the same
``training_set``/``train_real_classifier`` call the handler makes) and checks that their
AUC equals the site's reply. They cover test-set sampling only, not the spread over GAN
training seeds (on site b, 32 px, 0.47-0.82 over settings and seeds).
Results go to ``benchmarks/pooling_b1_b2_results.json`` (one entry per resolution, PGGAN
seed and split seed; ``--seed`` repeats the study with other generators); every stage
skips work whose output exists, so a stopped run goes on where it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pooled_comparison as pc  # noqa: E402  (cache + labeller stages, reused)
import small_site_gan as ssg  # noqa: E402  (PGGAN, archive, classifier, evaluation stages)

log = logging.getLogger("radshare.bench.pooling_b1_b2")

HOSPITALS = ("b1", "b2")
RESULTS = Path(__file__).with_name("pooling_b1_b2_results.json")
# Paired comparisons reported: (minuend arm, subtrahend arm).
PAIRS = (
    ("synthetic-pooled", "synthetic-b1"),
    ("synthetic-pooled", "synthetic-b2"),
    ("synthetic-pooled", "synthetic-b1-x2"),
    ("synthetic-pooled", "synthetic-b1b1"),
    ("real-b1b2", "real-b1"),
)
ARM_TEXT = {
    "real-b1": "real b1 only",
    "synthetic-b1": "synthetic from b1",
    "synthetic-b2": "synthetic from b2",
    "synthetic-b1-x2": "synthetic from b1, pool's size (control)",
    "synthetic-pooled": "synthetic pooled b1+b2",
    "synthetic-b1b1": "synthetic pooled b1+b1' (control: 2nd b1 generator, other seed)",
    "real-b1b2": "real b1+b2 (= site b)",
}


def split_hospitals(table: pd.DataFrame, label_space: list[str], seed: int) -> np.ndarray:
    """Per cache row: ``b1`` or ``b2`` (train and val rows, patient-level, stratified) or ``test``.

    Train and val patients are halved separately with the project's splitter, so each
    hospital has its own train and val patients; the test rows stay common.
    """
    from site_node.data.split import iterative_stratified_split

    hospital = np.full(len(table), "test", dtype=object)
    for split in ("train", "val"):
        rows = np.flatnonzero(table.split.to_numpy() == split)
        halves = iterative_stratified_split(
            table.patient_id.astype(str).to_numpy()[rows],
            table[label_space].to_numpy(np.float64)[rows],
            fractions=(0.5, 0.5, 0.0),
            seed=seed,
        )
        hospital[rows] = np.where(halves == "train", HOSPITALS[0], HOSPITALS[1])
    return hospital


def write_hospital_cache(full: Any, hospital_of_row: np.ndarray, hospital: str, out: Path) -> Any:
    """The hospital's cache: its own train/val rows and the common test rows (splits kept)."""
    from site_node.data.cache import SiteCache, write_cache

    if (out / "manifest.json").is_file():
        return SiteCache(out)
    rows = np.flatnonzero((hospital_of_row == hospital) | (hospital_of_row == "test"))
    table = full.table.iloc[rows].drop(columns=["row"]).reset_index(drop=True)
    images = {r: np.asarray(full.images(r))[rows] for r in full.manifest.resolutions_px}
    write_cache(
        out,
        images,
        table,
        full.label_space,
        site_id=hospital,
        split_seed=full.manifest.split_seed,
        source={"derived_from": str(full.path), "hospital": hospital},
    )
    return SiteCache(out)


def stage_caches(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Site b's cache (as small_site_gan builds it) and the two hospital caches."""
    from helpers_cache import build_site_cache

    full = build_site_cache(
        pc._sample_data() / pc.SITES["b"], ssg._site_dir(work, "b") / "cache", (args.resolution,)
    )
    hospital_of_row = split_hospitals(full.table, full.label_space, args.split_seed)
    caches = {"b": full}
    for hospital in HOSPITALS:
        out = ssg._site_dir(work, hospital) / "cache"
        caches[hospital] = write_hospital_cache(full, hospital_of_row, hospital, out)
    return caches


def split_summary(caches: dict[str, Any]) -> dict[str, Any]:
    """Patients, images and label prevalence per hospital and split."""
    summary: dict[str, Any] = {}
    for name, cache in caches.items():
        table, labels = cache.table, [n for n in cache.label_space if cache.table[n].sum() > 0]
        summary[name] = {
            split: {
                "patients": int(table.patient_id[table.split == split].nunique()),
                "images": int((table.split == split).sum()),
                "prevalence": {
                    n: round(float(table[n][table.split == split].mean()), 3) for n in labels
                },
            }
            for split in ("train", "val", "test")
        }
    return summary


def stage_pool(work: Path, archives: dict[str, Path], name: str = "pooled-b1b2") -> Path:
    """The hub's pool (strategy ``all``) of ``archives`` (site id -> folder), each with its
    hospital's labeller classes as annotated labels (``b1-other`` is a second b1 archive)."""
    from hub.pooling.archive import read_archive
    from hub.pooling.pool import PoolOptions, plan_pool
    from hub.pooling.writer import write_pooled_archive

    out = work / "hub" / name
    if not out.is_dir():
        sources = [
            read_archive(folder, site_id=h, annotated_labels=pc._site_labels(work, h[:2]))
            for h, folder in archives.items()
        ]
        options = PoolOptions.model_validate({})
        write_pooled_archive(
            plan_pool(sources, options), sources, options, work / "hub", out_dir=out
        )
    return out


def _timed_stage(times: dict[str, Any], key: str, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``; its first wall time is kept in ``times[key]`` (saved at once, when
    ``times["_path"]`` names the file; a stage a later run skips keeps its first time)."""
    start = time.time()
    result = call(*args)
    if key not in times:
        times[key] = round(time.time() - start, 1)
        if "_path" in times:
            Path(str(times["_path"])).write_text(json.dumps(times, indent=1))
    return result


def stage_hospitals(work: Path, args: argparse.Namespace, times: dict[str, Any]) -> dict[str, Path]:
    """Labellers and PGGANs (hospitals), archives, pool and classifiers (hub); bundle per arm."""
    _timed_stage(
        times, "labellers", pc.stage_small_labellers, work, args.labeller_epochs, HOSPITALS
    )
    archives: dict[str, Path] = {}
    runs: dict[str, Path] = {}
    for h in HOSPITALS:
        runs[h] = _timed_stage(times, f"pggan:{h}", ssg.train_pggan, work, f"{h}:none", args)
        archives[h] = _timed_stage(
            times, f"archive:{h}", ssg.make_archive, work, f"{h}:none", runs[h], args
        )
    double = argparse.Namespace(**{**vars(args), "archive_size": 2 * args.archive_size})
    archives["b1-x2"] = _timed_stage(
        times, "archive:b1-x2", ssg.make_archive, work, "b1:none-x2", runs["b1"], double
    )
    two = {h: archives[h] for h in HOSPITALS}
    pooled = _timed_stage(times, "pool", stage_pool, work, two)
    sources = {
        "synthetic-b1": ("b1-none", archives["b1"]),
        "synthetic-b2": ("b2-none", archives["b2"]),
        "synthetic-b1-x2": ("b1-none-x2", archives["b1-x2"]),
        "synthetic-pooled": ("pooled-b1b2", pooled),
    }
    if args.other_b1_archive is not None:  # control: two generators, one hospital's data
        pair = {"b1": archives["b1"], "b1-other": args.other_b1_archive}
        folder = _timed_stage(times, "pool:b1b1", stage_pool, work, pair, "pooled-b1b1")
        sources["synthetic-b1b1"] = ("pooled-b1b1", folder)
    return {
        arm: _timed_stage(
            times, f"classifier:{arm}", ssg.train_archive_classifier, work, tag, archive, args
        )
        for arm, (tag, archive) in sources.items()
    }


def _bundle_net(work: Path, bundle: Path) -> Any:
    from hub.trust import HubKeyring
    from shared.artifacts.classifier import load_classifier_bundle

    net, _, _ = load_classifier_bundle(bundle, HubKeyring.at_root(work / "hub"))
    return net


def _real_net(cache: Any, cfg: Any, args: argparse.Namespace) -> Any:
    """The network the site's ``train-real`` handler trains (same call, same recipe)."""
    from shared.evaluation_records import TrainRecipe
    from site_node.evaluation.baseline import train_real_classifier, training_set
    from site_node.evaluation.evaluate import annotated_labels

    labels = annotated_labels(cache)
    data, _ = training_set(cache, cfg, labels)
    recipe = TrainRecipe(max_epochs=args.classifier_epochs)
    return train_real_classifier(cache, cfg, recipe, data, labels)


def stage_arms(
    work: Path,
    caches: dict[str, Any],
    bundles: dict[str, Path],
    args: argparse.Namespace,
    times: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Per arm: the site's reply (macro AUC) and the test logits (saved, reused)."""
    from site_node.evaluation.evaluate import images_at, predict_split

    out_dir = work / "arms"
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = _bundle_net(work, bundles["synthetic-pooled"]).cfg
    arms: dict[str, dict[str, Any]] = {}
    plan = [("real-b1", "b1", None), *((a, "b", b) for a, b in bundles.items())]
    plan.append(("real-b1b2", "b", None))
    for arm, site, bundle in plan:
        record = out_dir / f"{arm}.json"
        if not record.is_file():
            start = time.time()
            cache = caches[site]
            reply = ssg.evaluate_at_site(work, site, bundle, cfg, args, cache=cache)
            net = _bundle_net(work, bundle) if bundle else _real_net(cache, cfg, args)
            rows = cache.indices("test")
            logits = predict_split(net, images_at(cache, args.resolution), rows)
            site_auc, per_label = ssg.macro_auc(reply)
            record.write_text(
                json.dumps(
                    {
                        "site_macro_auc": site_auc,
                        "site_per_label": per_label,
                        "class_names": list(net.cfg.class_names),
                        "test_image_index": cache.table.image_index[rows].astype(str).tolist(),
                        "logits": logits.tolist(),
                    }
                )
            )
            times[f"evaluate:{arm}"] = round(time.time() - start, 1)
            if "_path" in times:
                Path(str(times["_path"])).write_text(json.dumps(times, indent=1))
        arms[arm] = json.loads(record.read_text())
    return arms


def _test_truth(cache: Any, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Test labels, each test row's patient index, and the columns with an AUC."""
    from site_node.evaluation.evaluate import split_labels

    labels = split_labels(cache, "test", class_names)
    rows = cache.indices("test")
    _, patient = np.unique(cache.table.patient_id.astype(str).to_numpy()[rows], return_inverse=True)
    columns = [c for c in range(len(class_names)) if 0 < labels[:, c].sum() < len(labels)]
    return labels, patient, columns


def patient_metric(
    patient_of_row: np.ndarray, score: Callable[[np.ndarray], float]
) -> tuple[np.ndarray, Callable[[np.ndarray, np.ndarray], float]]:
    """Patient indices and a ``bootstrap_ci`` metric that scores the rows of the drawn patients."""
    rows_of = [np.flatnonzero(patient_of_row == p) for p in range(patient_of_row.max() + 1)]

    def metric(drawn: np.ndarray, _: np.ndarray) -> float:
        return score(np.concatenate([rows_of[p] for p in drawn]))

    patients = np.arange(len(rows_of))
    return patients, metric


def macro_auc_rows(labels: np.ndarray, logits: np.ndarray, columns: list[int]) -> Callable:
    """Macro AUC over ``columns`` on chosen rows; ValueError when a label has one class."""
    from shared.stats import roc_auc

    def score(rows: np.ndarray) -> float:
        values = []
        for c in columns:
            y = labels[rows, c]
            if y.min() == y.max():
                raise ValueError("a resample with one class")
            values.append(roc_auc(y, logits[rows, c]))
        return float(np.mean(values))

    return score


def statistics(
    caches: dict[str, Any], arms: dict[str, dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """Per-arm patient-level bootstrap CIs and paired CIs of the differences."""
    from shared.stats import bootstrap_ci

    full = caches["b"]
    expected = full.table.image_index[full.indices("test")].astype(str).tolist()
    scorers, scored_labels = {}, {}
    for arm, record in arms.items():
        if record["test_image_index"] != expected:
            raise SystemExit(f"{arm}: test rows differ from site b's test split")
        labels, patient, columns = _test_truth(full, record["class_names"])
        scorers[arm] = macro_auc_rows(labels, np.asarray(record["logits"]), columns)
        scored_labels[arm] = [record["class_names"][c] for c in columns]
    ci = {"resamples": args.resamples, "seed": 0}

    def interval(score: Callable[[np.ndarray], float]) -> dict[str, float]:
        patients, metric = patient_metric(patient, score)
        out = bootstrap_ci(patients, patients, metric, num_resamples=ci["resamples"], seed=0)
        return {
            "estimate": round(out.estimate, 4),
            "low": round(out.low, 4),
            "high": round(out.high, 4),
        }

    rows = {
        arm: {**interval(scorers[arm]), "site_macro_auc": round(arms[arm]["site_macro_auc"], 4)}
        for arm in arms
    }
    paired = {
        f"{a} - {b}": interval(_difference(scorers[a], scorers[b]))
        for a, b in PAIRS
        if a in scorers and b in scorers
    }
    return {
        "arms": rows,
        "paired_differences": paired,
        "labels": scored_labels,
        "test_patients": int(patient.max() + 1),
        "test_images": len(expected),
        "bootstrap": ci,
    }


def _difference(
    first: Callable[[np.ndarray], float], second: Callable[[np.ndarray], float]
) -> Callable[[np.ndarray], float]:
    """The paired metric: both scores on the same drawn rows."""
    return lambda rows: first(rows) - second(rows)


def print_table(stats: dict[str, Any]) -> None:
    """The arms and the paired differences, as markdown tables."""
    labels = stats["labels"]["synthetic-pooled"]
    print(f"\nsite b test split: {stats['test_images']} images, {stats['test_patients']} "
          f"patients; macro AUC over {labels}; patient-level bootstrap 95% CIs")  # fmt: skip
    print("| arm | macro AUC (site reply) | 95% CI |\n|---|---|---|")
    for arm, row in stats["arms"].items():
        ci = f"[{row['low']:.3f}, {row['high']:.3f}]"
        print(f"| {ARM_TEXT[arm]} | {row['site_macro_auc']:.3f} | {ci} |")
    print("\n| paired difference | estimate | 95% CI |\n|---|---|---|")
    for pair, row in stats["paired_differences"].items():
        print(f"| {pair} | {row['estimate']:+.3f} | [{row['low']:+.3f}, {row['high']:+.3f}] |")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage; the results stored in ``RESULTS`` under resolution, seed and split seed."""
    work = args.work / f"{args.resolution}px"
    work.mkdir(parents=True, exist_ok=True)
    pc.RESOLUTION_PX = args.resolution  # the reused stages read it
    pc.ACCELERATOR = args.accelerator
    times_path = work / "times.json"
    times: dict[str, Any] = json.loads(times_path.read_text()) if times_path.is_file() else {}
    times["_path"] = str(times_path)
    started = time.time()
    caches = _timed_stage(times, "caches", lambda: stage_caches(work, args))
    bundles = stage_hospitals(work, args, times)
    times_path.write_text(json.dumps(times, indent=1))
    arms = stage_arms(work, caches, bundles, args, times)
    times_path.write_text(json.dumps(times, indent=1))
    stats = statistics(caches, arms, args)
    for arm, row in stats["arms"].items():  # the CI's point estimate is the site's number
        if abs(row["estimate"] - row["site_macro_auc"]) > 1e-3:
            log.warning("%s: recomputed AUC %.4f vs site reply %.4f", arm, row["estimate"],
                        row["site_macro_auc"])  # fmt: skip
    results = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "split": split_summary(caches),
        "archive_images": _archive_sizes(work),
        **stats,
        "wall_s": {k: v for k, v in times.items() if k != "_path"},
        "this_run_s": round(time.time() - started, 1),
    }
    _save_run(f"{args.resolution}px-seed{args.seed}-split{args.split_seed}", results)
    print_table(stats)
    return results


def _save_run(key: str, results: dict[str, Any]) -> None:
    """Store one run under ``key`` in ``RESULTS`` (a rerun replaces it, others are kept)."""
    runs = json.loads(RESULTS.read_text()).get("runs", {}) if RESULTS.is_file() else {}
    runs[key] = results
    RESULTS.write_text(json.dumps({"runs": dict(sorted(runs.items()))}, indent=1))


def _archive_sizes(work: Path) -> dict[str, int]:
    folders = {"b1": "archives/b1-none", "b2": "archives/b2-none", "b1-x2": "archives/b1-none-x2"}
    sizes = {k: len(list((work / "hub" / f / "images").glob("*.png"))) for k, f in folders.items()}
    pooled = work / "hub" / "pooled-b1b2"
    sizes["pooled"] = len(pd.read_csv(pooled / "Data_Entry_pool.csv")) if pooled.is_dir() else 0
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pool-b"))
    parser.add_argument("--resolution", type=int, default=32, help="32, 64, 128, ... px")
    parser.add_argument("--kimg-per-phase", type=float, default=2.0, help="PGGAN, per phase")
    parser.add_argument("--labeller-epochs", type=int, default=12)
    parser.add_argument("--archive-size", type=int, default=300, help="images per hospital")
    parser.add_argument("--max-steps", type=int, default=60, help="class optimisation steps")
    parser.add_argument("--classifier-epochs", type=int, default=15)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--seed", type=int, default=0, help="PGGAN seed")
    parser.add_argument("--split-seed", type=int, default=0, help="b1/b2 split seed")
    parser.add_argument(
        "--other-b1-archive",
        type=Path,
        default=None,
        help="b1's archive from a run with another --seed: adds the arm 'b1 pooled with b1'",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared box: 1)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.warm_base_site, args.warm_kimg = "a", 1.0  # read by small_site_gan, unused (no warm start)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("RADSHARE_SAMPLE_DATA", str(ROOT.parent / "shared" / "data"))
    run(args)


if __name__ == "__main__":
    main()
