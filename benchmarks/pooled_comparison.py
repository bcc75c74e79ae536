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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

log = logging.getLogger("radshare.bench.pooled_comparison")

SITES = {"a": "cxr-site-a", "b": "cxr-site-b"}
RESOLUTION_PX = 32
MAX_ATTEMPTS = int(os.environ.get("RADSHARE_MAX_ATTEMPTS", "20"))  # class optimisation restarts
SMALL_NETWORK = {"init_features": 16, "growth_rate": 8, "block_config": (2, 2, 2, 2)}
ACCELERATOR = os.environ.get("RADSHARE_ACCELERATOR", "cpu")  # "gpu" on a machine with CUDA


def _sample_data() -> Path:
    root = os.environ.get("RADSHARE_SAMPLE_DATA", str(ROOT.parent / "shared" / "data"))
    return Path(root)


def stage_sites(
    work: Path,
    pggan_kimg_per_phase: float,
    labeller_epochs: int,
    sites: list[str],
    parts: tuple[str, ...] = ("pggan", "labeller"),
) -> None:
    """Cache, PGGAN and labeller per site (all at the site)."""
    from helpers_cache import build_site_cache

    from site_node.labeller.train import LabellerTrainOptions, train_labeller
    from site_node.pggan.options import TrainOptions
    from site_node.pggan.train import resume_options, train

    for site in sites:
        folder = SITES[site]
        cache_dir = work / f"site-{site}" / "cache"
        cache = build_site_cache(_sample_data() / folder, cache_dir, resolutions_px=(32,))
        run_dir = work / f"site-{site}" / "pggan"
        if "pggan" in parts and not (run_dir / "export" / "generator.json").is_file():
            t0 = time.time()
            options = TrainOptions.from_profile(
                "tiny",
                cache_dir=cache_dir,
                run_dir=run_dir,
                kimg_per_phase=pggan_kimg_per_phase,
                accelerator=ACCELERATOR,
                progress_bar=False,
            )
            resume = (run_dir / "checkpoints" / "last.ckpt").is_file()  # a stopped run goes on
            train(resume_options(run_dir) if resume else options, resume=resume)
            log.info("site %s: PGGAN in %.0f s", site, time.time() - t0)
        lab_dir = work / f"site-{site}" / "labeller"
        if "labeller" in parts and not (lab_dir / "export" / "labeller.json").is_file():
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
                    accelerator=ACCELERATOR,
                )
            )
            log.info("site %s: labeller in %.0f s", site, time.time() - t0)


def stage_small_labellers(work: Path, epochs: int, sites: list[str]) -> None:
    """Per site: a labeller with the small DenseNet (CPU), trained as the real-only baseline is.

    Youden thresholds and AUCs on the site's validation split; the export is what
    class optimisation reads (``labeller.json`` + ``labeller.safetensors``).
    """
    from shared.artifacts.labeller import ClassMetrics, LabellerCard, save_labeller_export
    from shared.evaluation_records import TrainRecipe
    from shared.networks.labeller import LabellerConfig
    from shared.stats import roc_auc, youden_threshold
    from site_node.evaluation.baseline import train_real_classifier, training_set
    from site_node.evaluation.evaluate import predict_split, split_labels

    for site in sites:
        export = work / f"site-{site}" / "labeller" / "export"
        if (export / "labeller.json").is_file():
            continue
        t0 = time.time()
        cache = _existing_or_built_cache(work, site)
        train = cache.labels("train")
        # Every label of the cache (synthesis needs the generator's label space); the loss
        # is masked to the labels the site annotated, the others get no threshold.
        names = list(cache.label_space)
        annotated = [n for i, n in enumerate(names) if train[:, i].sum() > 0]
        cfg = LabellerConfig(resolution_px=RESOLUTION_PX, class_names=tuple(names), **SMALL_NETWORK)
        recipe = TrainRecipe(max_epochs=epochs)
        data, _ = training_set(cache, cfg, annotated)
        net = train_real_classifier(cache, cfg, recipe, data, annotated)
        logits = predict_split(net, cache.images(RESOLUTION_PX), cache.indices("val"))
        labels = split_labels(cache, "val", names)
        classes = []
        for c, name in enumerate(names):
            y, s = labels[:, c], logits[:, c]
            ok = name in annotated and 0 < y.sum() < len(y)
            classes.append(
                ClassMetrics(
                    name=name,
                    threshold_logit=youden_threshold(y, s) if ok else None,
                    val_auc=roc_auc(y, s) if ok else None,
                    train_positives=int(train[:, c].sum()),
                    val_positives=int(y.sum()),
                )
            )
        save_labeller_export(export, net, LabellerCard(labeller_config=cfg, classes=classes))
        log.info("site %s: small labeller in %.0f s", site, time.time() - t0)


def _existing_or_built_cache(work: Path, site: str):
    """The site's cache folder if it holds one (e.g. a derived "hospital" split), else built."""
    from helpers_cache import build_site_cache

    from site_node.data.cache import SiteCache

    cache_dir = work / f"site-{site}" / "cache"
    if (cache_dir / "manifest.json").is_file():
        return SiteCache(cache_dir)
    return build_site_cache(_sample_data() / SITES[site], cache_dir)


def _site_labels(work: Path, site: str) -> list[str]:
    """The labels a site's archive can carry: its labeller's classes that have a threshold."""
    card = json.loads((work / f"site-{site}" / "labeller" / "export" / "labeller.json").read_text())
    return [c["name"] for c in card["classes"] if c["threshold_logit"] is not None]


def stage_archives(work: Path, images_per_site: int, max_steps: int = 100) -> None:
    """Per site: a labelled archive from its generator and labeller (at the hub)."""
    from hub.synthesis.class_optimisation import ClassOptimisationSettings
    from hub.synthesis.pipeline import SynthesisOptions, synthesize

    for site in SITES:
        out = work / "hub" / "archives-by-site" / site
        if (out / "manifest.json").is_file():
            continue
        t0 = time.time()
        synthesize(
            SynthesisOptions(
                generator=str(work / f"site-{site}" / "pggan" / "export"),
                labeller=str(work / f"site-{site}" / "labeller" / "export"),
                out_dir=out,
                num_images=images_per_site,
                seed=0,
                device="cuda" if ACCELERATOR == "gpu" else "cpu",
                optimisation=ClassOptimisationSettings(
                    max_steps=max_steps, plateau_patience_steps=20
                ),
                max_attempts_per_patient=MAX_ATTEMPTS,
            )
        )
        log.info("site %s: archive of %d images in %.0f s", site, images_per_site, time.time() - t0)


def stage_pool(work: Path) -> Path:
    """The pooled archive of both sites (annotated labels: each site's labeller classes)."""
    from hub.pooling.archive import read_archive
    from hub.pooling.pool import PoolOptions, plan_pool
    from hub.pooling.writer import write_pooled_archive

    out = work / "hub" / "pooled"
    if not out.is_dir():
        sources = [
            read_archive(
                work / "hub" / "archives-by-site" / s,
                site_id=s,
                annotated_labels=_site_labels(work, s),
            )
            for s in SITES
        ]
        options = PoolOptions()
        pooled = write_pooled_archive(
            plan_pool(sources, options), sources, options, work / "hub", out_dir=out
        )
        log.info("pooled archive %s: %d images", pooled.archive_id[:12], pooled.manifest.num_images)
    return out


def stage_classifiers(work: Path, epochs: int, small: bool = False) -> dict[str, Path]:
    """Classifiers on each site's archive and on the pool (synthetic images only)."""
    from hub.pooling.train import ClassifierTrainOptions, train_classifier

    archives = {f"synthetic:{s}": work / "hub" / "archives-by-site" / s for s in SITES}
    archives["pooled"] = work / "hub" / "pooled"
    bundles = {}
    for tag, archive in archives.items():
        run = work / "hub" / "classifiers" / tag.replace(":", "-")
        if not (run / "bundle" / "manifest.json").is_file():
            site = tag.split(":")[1] if ":" in tag else None
            t0 = time.time()
            train_classifier(
                ClassifierTrainOptions(
                    archive_dir=archive,
                    out_dir=run,
                    hub_key=work / "hub" / "hub_signing.key",
                    site_id=site,
                    resolution_px=RESOLUTION_PX,
                    max_epochs=epochs,
                    early_stop_patience_epochs=3,
                    label_space=None,
                )
            )
            log.info("classifier %s in %.0f s", tag, time.time() - t0)
        bundles[tag] = run / "bundle"
    return bundles


def stage_evaluate(work: Path, bundles: dict[str, Path], epochs: int, resamples: int) -> None:
    """Each site answers ``evaluate.classifier`` (the same handler the ClientApp calls)."""
    from helpers_cache import build_site_cache

    from hub.evaluation.comparison import comparison_table, markdown_table, save_evaluations
    from hub.evaluation.report import write_report
    from hub.flower.evaluate_server import request_content
    from hub.trust import HubKeyring
    from shared.artifacts.classifier import load_classifier_bundle
    from shared.evaluation_records import EvaluationRequest, TrainRecipe, evaluation_from_records
    from site_node.flower.evaluate_task import evaluate_classifier_task

    out = work / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    contents, cfg = {}, None
    for tag, bundle in bundles.items():
        net, card, _ = load_classifier_bundle(bundle, HubKeyring.at_root(work / "hub"))
        thresholds = {c.name: c.threshold_logit for c in card.classes}
        request = EvaluationRequest(
            tag=tag,
            labeller_config=net.cfg,
            num_resamples=resamples,
            fallback_thresholds_logit=thresholds,
        )
        contents[tag] = request_content(request, net)
        cfg = net.cfg if tag == "pooled" else cfg
    assert cfg is not None
    real = EvaluationRequest(
        tag="real",
        mode="train-real",
        labeller_config=cfg,
        num_resamples=resamples,
        recipe=TrainRecipe(max_epochs=epochs),
    )
    contents["real"] = request_content(real)
    evaluations = []
    for site, folder in SITES.items():
        cache = build_site_cache(_sample_data() / folder, work / f"site-{site}" / "cache")
        for tag, content in contents.items():
            t0 = time.time()
            reply = evaluate_classifier_task(content, cache, site_id=site)
            evaluations.append(evaluation_from_records(reply))
            log.info("site %s answered %s in %.0f s", site, tag, time.time() - t0)
    save_evaluations(out / "evaluations.json", evaluations)
    table = comparison_table(evaluations)
    table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(markdown_table(table) + "\n")
    write_report(
        out / "report.html", evaluations, title="radshare show 1: real vs synthetic vs pooled"
    )
    print(markdown_table(table))


def main(argv: list[str] | None = None) -> None:
    """Run the stages named by ``--stage``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radshare-show1"))
    parser.add_argument("--stage", default="all")
    parser.add_argument("--pggan-kimg-per-phase", type=float, default=8.0)
    parser.add_argument("--labeller-epochs", type=int, default=12)
    parser.add_argument("--sites", default="a,b", help="sites of stage 'sites'")
    parser.add_argument("--images-per-site", type=int, default=600)
    parser.add_argument("--small-network", action="store_true", help="small DenseNet classifiers")
    parser.add_argument("--max-steps", type=int, default=100, help="class optimisation steps")
    parser.add_argument("--classifier-epochs", type=int, default=8)
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    stages = args.stage.split(",")
    if {"all", "sites"} & set(stages):
        stage_sites(
            args.work, args.pggan_kimg_per_phase, args.labeller_epochs, args.sites.split(",")
        )
    if "small-labellers" in stages:
        stage_small_labellers(args.work, args.labeller_epochs, args.sites.split(","))
    for stage, parts in (("pggans", ("pggan",)), ("labellers", ("labeller",))):
        if stage in stages:
            sites = args.sites.split(",")
            stage_sites(args.work, args.pggan_kimg_per_phase, args.labeller_epochs, sites, parts)
    if {"all", "archives"} & set(stages):
        stage_archives(args.work, args.images_per_site, args.max_steps)
    if {"all", "pool"} & set(stages):
        stage_pool(args.work)
    if {"all", "classifiers", "evaluate"} & set(stages):
        bundles = stage_classifiers(args.work, args.classifier_epochs, args.small_network)
    if {"all", "evaluate"} & set(stages):
        stage_evaluate(args.work, bundles, args.classifier_epochs, args.resamples)
    (args.work / "done_stages.json").write_text(json.dumps({"last": args.stage}))


if __name__ == "__main__":
    main()
