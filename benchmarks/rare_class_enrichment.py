"""Rare-class enrichment (Han et al. Fig. 4B) on real data: none vs oversampling vs synthetic.

    RADSHARE_SAMPLE_DATA=../shared/data OMP_WAIT_POLICY=PASSIVE \\
        .venv/bin/python benchmarks/rare_class_enrichment.py --work /tmp/radshare-rare

One site (default B, Guangzhou paediatric) keeps only ``--keep-fraction`` (5%) of the
positive *patients* of one class (default Pneumonia) in its real train split: every
image of a kept patient stays, the other positive patients' images go, every other image
stays; validation and test splits are untouched. The same classifier (the small
DenseNet of ``pooled_comparison``, masked class-weighted BCE, Adam, the epoch with the
best validation macro AUC) is then trained at the site three ways, exactly as the
federated ``evaluate.classifier`` ``train-real`` request does
(:func:`site_node.flower.evaluate_task.evaluate_classifier_task`):

1. ``none``: the reduced train split as it is;
2. ``oversample``: the kept positives drawn again up to exactly the original positive
   count (whole copies, then a seeded draw without replacement);
3. ``synthetic``: the reduced split plus ``--synthetic-images`` images positive for the
   class, drawn from a labelled synthetic archive of that class only (the hub's
   ``hub.synthesis``: latent class optimisation and local sampling, labels file
   ``{label: 1}``; images chosen by ``hub.flower.evaluate_server``'s enrichment draw).

A fourth row, ``full``, is the reference: the same training on the unreduced split.
``--repeats R`` repeats everything with other kept patients (seed ``--seed + r``), another
training seed (``r``) and another draw of archive images; a summary gives each
condition's mean, SD and range of test AUCs over the repeats. Training is per epoch, so
a bigger split also gets more optimiser steps; ``--matched-steps`` scales each
condition's epochs to the steps the full split gets in ``--epochs`` (a control).

The generator and labeller behind that archive are trained on the site's *full* train
split (all positives): they stand in for the generator a hospital where the class is
common shares with the consortium, so the synthetic images carry knowledge the 5%
subset lacks (``--generator``/``--labeller`` take existing exports instead). Each
classifier is evaluated on the site's real test split: per class ROC AUC with a
percentile bootstrap 95% CI (``--resamples``), plus the training counts. The table is
printed and written, with the settings, to ``--json`` (default: next to this script).

Stages skip work whose output exists under ``--work`` (cache, generator, labeller,
archive), so a stopped run picks up where it was; classifiers are always retrained.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

log = logging.getLogger("radshare.bench.rare_class")

CONDITIONS = ("none", "oversample", "synthetic", "full")


def _site_cache(work: Path, site: str):
    from helpers_cache import build_site_cache
    from pooled_comparison import SITES, _sample_data

    return build_site_cache(
        _sample_data() / SITES[site], work / f"site-{site}" / "cache", resolutions_px=(32,)
    )


def stage_generator_and_labeller(args: argparse.Namespace) -> tuple[Path, Path]:
    """The generator and labeller exports (trained on the site's full train split if not given)."""
    from pooled_comparison import stage_sites, stage_small_labellers

    _site_cache(args.work, args.site)
    generator = args.generator or args.work / f"site-{args.site}" / "pggan" / "export"
    labeller = args.labeller or args.work / f"site-{args.site}" / "labeller" / "export"
    if args.generator is None:
        stage_sites(args.work, args.pggan_kimg_per_phase, 0, [args.site], parts=("pggan",))
    if args.labeller is None:
        stage_small_labellers(args.work, args.labeller_epochs, [args.site])
    return Path(generator), Path(labeller)


def stage_archive(args: argparse.Namespace, generator: Path, labeller: Path) -> Path:
    """A labelled synthetic archive of the rare class only (the hub's synthesis)."""
    from hub.synthesis.class_optimisation import ClassOptimisationSettings
    from hub.synthesis.pipeline import SynthesisOptions, synthesize

    out = args.work / "hub" / f"archive-{args.label.replace(' ', '_')}"
    if not (out / "manifest.json").is_file():
        labels_file = args.work / "hub" / "rare_labels.json"
        labels_file.parent.mkdir(parents=True, exist_ok=True)
        labels_file.write_text(json.dumps({args.label: 1.0}))
        t0 = time.time()
        synthesize(
            SynthesisOptions(
                generator=str(generator),
                labeller=str(labeller),
                out_dir=out,
                num_images=args.archive_images,
                labels=str(labels_file),
                seed=args.seed,
                device="cpu",
                optimisation=ClassOptimisationSettings(
                    max_steps=args.max_steps, plateau_patience_steps=args.max_steps // 4 or 1
                ),
                max_attempts_per_patient=args.max_attempts,
            )
        )
        log.info("archive of the %s class in %.0f s", args.label, time.time() - t0)
    return out


def run_condition(args, cache, cfg, strategy: str, repeat: int, enrich) -> dict:
    """Train one classifier at the site (``train-real`` request) and evaluate it on test.

    Repeat ``r`` keeps the patients drawn with seed ``--seed + r`` and trains with seed
    ``r``; the bootstrap always uses ``--seed``.
    """
    from hub.flower.evaluate_server import request_content
    from shared.evaluation_records import (
        EvaluationRequest,
        RareClassSetting,
        TrainRecipe,
        evaluation_from_records,
    )
    from site_node.evaluation.baseline import training_set
    from site_node.evaluation.evaluate import annotated_labels
    from site_node.flower.evaluate_task import evaluate_classifier_task

    rare = RareClassSetting(
        label=args.label,
        keep_fraction=1.0 if strategy == "full" else args.keep_fraction,
        strategy="none" if strategy == "full" else strategy,
        seed=args.seed + repeat,
        unit="patients",
    )
    enrich = enrich if strategy == "synthetic" else None
    epochs = args.epochs
    if args.matched_steps:  # as many optimiser steps as the full split gets in --epochs
        _, counts = training_set(cache, cfg, annotated_labels(cache), rare, enrich)
        epochs = max(1, round(args.epochs * len(cache.indices("train")) / counts["train_images"]))
    request = EvaluationRequest(
        tag=f"rare:{strategy}",
        mode="train-real",
        labeller_config=cfg,
        num_resamples=args.resamples,
        seed=args.seed,
        recipe=TrainRecipe(max_epochs=epochs, batch_size=args.batch_size, seed=repeat),
        rare_class=rare,
    )
    t0 = time.time()
    content = request_content(request, enrich=enrich)
    reply = evaluate_classifier_task(content, cache, site_id=args.site)
    evaluation = evaluation_from_records(reply)
    seconds = time.time() - t0
    log.info("condition %s (repeat %d) in %.0f s", strategy, repeat, seconds)
    classes = {
        c.name: {
            "auc": c.auc,
            "auc_low": c.auc_low,
            "auc_high": c.auc_high,
            "n_pos": c.n_pos,
            "n_neg": c.n_neg,
        }
        for c in evaluation.classes
    }
    return {
        "condition": strategy,
        "repeat": repeat,
        "epochs": epochs,
        "training": evaluation.training,
        "classes": classes,
        "seconds": round(seconds, 1),
    }


def _rare_positives_trained(row: dict) -> int:
    t = row["training"]
    if row["condition"] == "oversample":
        return t["rare_positives_kept"] + t["oversampled_copies"]
    if row["condition"] == "synthetic":
        return t["rare_positives_kept"] + t.get("synthetic_images", 0)
    return t["rare_positives_kept"]


def format_table(rows: list[dict], label: str) -> str:
    """Markdown: condition x class AUC [95% CI], images and positives used."""
    classes = [label, "No Finding"]
    head = (
        "| condition | repeat | epochs | train images | real positives "
        f"({label}) | positive rows incl. copies/synthetic | "
        + " | ".join(f"{c} AUC [95% CI]" for c in classes)
        + " |"
    )
    lines = [head, "|" + "---|" * (6 + len(classes))]
    for row in rows:
        t = row["training"]
        cells = []
        for c in classes:
            m = row["classes"].get(c)
            cells.append(
                "n/a"
                if m is None or m["auc"] is None
                else f"{m['auc']:.3f} [{m['auc_low']:.3f}, {m['auc_high']:.3f}]"
            )
        lines.append(
            f"| {row['condition']} | {row['repeat']} | {row['epochs']} | {t['train_images']} | "
            f"{t['rare_positives_kept']} of {t['rare_positives_before']} "
            f"({t['rare_patients_kept']} of {t['rare_patients_before']} patients) | "
            f"{_rare_positives_trained(row)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def format_summary(rows: list[dict], label: str, conditions: list[str]) -> str:
    """Markdown: per condition, the mean (SD, min-max) of each class's test AUC over repeats."""
    import numpy as np

    classes = [label, "No Finding"]
    lines = [
        "| condition | repeats | train images (mean) | positive rows (mean) | "
        + " | ".join(f"{c} AUC mean (SD) [min, max]" for c in classes)
        + " |",
        "|" + "---|" * (4 + len(classes)),
    ]
    for condition in conditions:
        mine = [r for r in rows if r["condition"] == condition]
        cells = []
        for c in classes:
            aucs = np.array([r["classes"][c]["auc"] for r in mine if r["classes"][c]["auc"]])
            cells.append(
                f"{aucs.mean():.3f} ({aucs.std(ddof=1) if len(aucs) > 1 else 0:.3f}) "
                f"[{aucs.min():.3f}, {aucs.max():.3f}]"
                if len(aucs)
                else "n/a"
            )
        images = np.mean([r["training"]["train_images"] for r in mine])
        positives = np.mean([_rare_positives_trained(r) for r in mine])
        lines.append(
            f"| {condition} | {len(mine)} | {images:.0f} | {positives:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Build what is missing, train the three conditions, print and write the table."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/radshare-rare"), help="caches, runs, archive"
    )
    parser.add_argument("--site", default="b", choices=("a", "b"), help="the site")
    parser.add_argument("--label", default="Pneumonia", help="the class made rare")
    parser.add_argument("--keep-fraction", type=float, default=0.05, help="of positive patients")
    parser.add_argument("--synthetic-images", type=int, default=300, help="added in 'synthetic'")
    parser.add_argument(
        "--archive-images", type=int, default=600, help="images asked of the synthesis"
    )
    parser.add_argument("--max-steps", type=int, default=60, help="class optimisation steps")
    parser.add_argument("--max-attempts", type=int, default=5, help="restarts per patient")
    parser.add_argument("--generator", type=Path, default=None, help="existing export/ folder")
    parser.add_argument("--labeller", type=Path, default=None, help="existing export/ folder")
    parser.add_argument("--pggan-kimg-per-phase", type=float, default=10.0, help="tiny profile")
    parser.add_argument("--labeller-epochs", type=int, default=6, help="labeller of synthesis")
    parser.add_argument("--epochs", type=int, default=15, help="classifier epochs per condition")
    parser.add_argument("--batch-size", type=int, default=32, help="classifier batch size")
    parser.add_argument(
        "--matched-steps",
        action="store_true",
        help="epochs per condition scaled to the optimiser steps of the full split",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="repeat r: kept patients seed+r, training seed r"
    )
    parser.add_argument("--seed", type=int, default=0, help="selection, synthesis, bootstrap")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).with_name("rare_class_enrichment.json"),
        help="results and settings",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from pooled_comparison import RESOLUTION_PX, SMALL_NETWORK

    from hub.flower.evaluate_server import _enrich_arrays
    from shared.networks.labeller import LabellerConfig
    from site_node.evaluation.evaluate import annotated_labels

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    cache = _site_cache(args.work, args.site)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    cfg = LabellerConfig(
        resolution_px=RESOLUTION_PX, class_names=tuple(annotated_labels(cache)), **SMALL_NETWORK
    )
    archive, generator, labeller = None, None, None
    if "synthetic" in conditions:
        generator, labeller = stage_generator_and_labeller(args)
        archive = stage_archive(args, generator, labeller)
    rows = []
    for repeat in range(args.repeats):
        enrich = None
        if archive is not None:  # a fresh draw of archive images per repeat
            enrich = _enrich_arrays(
                archive, cfg, args.label, args.synthetic_images, args.seed + repeat
            )
        rows += [run_condition(args, cache, cfg, c, repeat, enrich) for c in conditions]
    table = format_table(rows, args.label)
    summary = format_summary(rows, args.label, conditions)
    print(table + "\n\n" + summary)
    archive_manifest = (
        json.loads((archive / "manifest.json").read_text()) if archive is not None else {}
    )
    result = {
        "experiment": "rare-class enrichment (Han et al. Fig. 4B)",
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"
        },
        "torch_threads": torch.get_num_threads(),
        "classifier_config": cfg.model_dump(mode="json"),
        "generator": str(generator) if generator else None,
        "labeller": str(labeller) if labeller else None,
        "archive": {
            k: archive_manifest.get(k)
            for k in ("num_images", "num_patients", "requested_images", "generator_id")
        },
        "rows": rows,
        "table_markdown": table,
        "summary_markdown": summary,
        "wall_seconds": round(time.time() - started, 1),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
