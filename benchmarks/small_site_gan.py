"""Issue 13, must-show 2: do critic augmentation and a warm start help a small site's GAN?

    RADSHARE_SAMPLE_DATA=/work/shared/data .venv/bin/python benchmarks/small_site_gan.py \
        --work /tmp/radshare-small-gan --resolution 32 \
        --settings a:none,a:ada,b:none,b:ada,b:warm-ada [--accelerator gpu]

Per setting ``SITE:MODE`` (MODE: ``none``, ``ada``, ``diffaugment``; ``warm-MODE``:
site b fine-tuned with MODE from site a's ``a:MODE`` checkpoint, pinned by its sha256)
it trains a PGGAN at the site (``site_node.pggan.train``, the ``tiny`` network), makes a
class-optimised archive from it at the hub (``hub.synthesis.pipeline.synthesize`` with
the site's labeller, ``match-site`` targets), trains a classifier on the archive only
(``hub.pooling.train``), and lets the site evaluate it on its real test split
(``site_node.flower.evaluate_task``, the ClientApp's handler), next to a classifier the
site trains on its real train split (``mode="train-real"``, same network and epochs).

Printed per setting: Fréchet distances to the site's real test split, of 500 unconditional
G_ema samples ("FD samples") and of the class-optimised archive ("FD archive"), in the
feature space of the site's labeller (penultimate layer; the same labeller for every
setting of a site and resolution, so the distances compare across settings of one site,
not across sites); the archive classifier's and the real-only classifier's macro AUC
(mean over the labels with enough positives for an AUC); ADA's final p; wall times.
``RADSHARE_MAX_ATTEMPTS`` (default 20) bounds class-optimisation restarts per patient.
Stages reuse ``benchmarks/pooled_comparison.py`` (cache, labellers) and skip work whose
output exists, so a stopped run goes on where it was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pooled_comparison as pc  # noqa: E402  (cache + labeller stages, reused)

from shared.artifacts.archive import read_archive_manifest  # noqa: E402
from shared.errors import TrainingError  # noqa: E402

log = logging.getLogger("radshare.bench.small_site_gan")


def _site_dir(work: Path, site: str) -> Path:
    return work / f"site-{site}"


def _timed(times: dict[str, float], key: str, start: float) -> None:
    times[key] = round(time.time() - start, 1)


def train_pggan(work: Path, setting: str, args: argparse.Namespace) -> Path:
    """The site's PGGAN for ``setting`` (``SITE:MODE`` or ``SITE:warm-MODE``); its run folder."""
    from site_node.pggan.options import TrainOptions
    from site_node.pggan.schedule import uniform_batch_sizes
    from site_node.pggan.train import resume_options, train
    from site_node.pggan.warm_start import WarmStart

    site, mode = setting.split(":")
    run_dir = _site_dir(work, site) / f"pggan-{mode}"
    if (run_dir / "export" / "generator.json").is_file():
        return run_dir
    values: dict[str, Any] = {
        "resolution_px": args.resolution,
        "kimg_per_phase": args.kimg_per_phase,
        "batch_sizes": uniform_batch_sizes(args.resolution, 16),  # the tiny profile's 16
        "accelerator": args.accelerator,
        "progress_bar": False,
        "augment": mode.removeprefix("warm-"),
        "sample_every_kimg": 1000.0,
        "seed": args.seed,
    }
    if mode.startswith("warm-"):
        base = _site_dir(work, args.warm_base_site) / f"pggan-{mode.removeprefix('warm-')}"
        checkpoint = base / "checkpoints" / "last.ckpt"
        digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        values["warm_start"] = WarmStart(checkpoint=checkpoint, sha256=digest)
        values["kimg_per_phase"] = args.warm_kimg
    cache_dir = _site_dir(work, site) / "cache"
    options = TrainOptions.from_profile("tiny", cache_dir=cache_dir, run_dir=run_dir, **values)
    if (run_dir / "checkpoints" / "last.ckpt").is_file():  # a stopped run goes on
        train(resume_options(run_dir), resume=True)
    else:
        train(options)
    return run_dir


def _archive_tag(setting: str, args: argparse.Namespace) -> str:
    """``SITE-MODE``, and ``-seedN`` for an archive seed other than 0."""
    site, mode = setting.split(":")
    return f"{site}-{mode}" + (f"-seed{args.archive_seed}" if args.archive_seed else "")


def make_archive(work: Path, setting: str, run_dir: Path, args: argparse.Namespace) -> Path:
    """A class-optimised archive (match-site targets) from the setting's generator."""
    from hub.synthesis.class_optimisation import ClassOptimisationSettings
    from hub.synthesis.pipeline import SynthesisOptions, synthesize

    site = setting.split(":")[0]
    out = work / "hub" / "archives" / _archive_tag(setting, args)
    if not (out / "manifest.json").is_file():
        synthesize(
            SynthesisOptions(
                generator=str(run_dir / "export"),
                labeller=str(_site_dir(work, site) / "labeller" / "export"),
                out_dir=out,
                num_images=args.archive_size,
                seed=args.archive_seed,
                device="cuda" if args.accelerator == "gpu" else "cpu",
                optimisation=ClassOptimisationSettings(
                    max_steps=args.max_steps, plateau_patience_steps=20
                ),
                max_attempts_per_patient=pc.MAX_ATTEMPTS,
                trust_local_export=True,
            )
        )
    return out


def train_archive_classifier(work: Path, tag: str, archive: Path, args: argparse.Namespace):
    """A classifier on the archive's images only (hub side); its signed bundle folder."""
    from hub.pooling.train import ClassifierTrainOptions, train_classifier

    run = work / "hub" / "classifiers" / tag
    if not (run / "bundle" / "manifest.json").is_file():
        options = {
            "archive_dir": archive,
            "out_dir": run,
            "hub_key": work / "hub" / "hub_signing.key",
            "site_id": tag.split("-")[0],
            "resolution_px": args.resolution,
            "max_epochs": args.classifier_epochs,
            "lr": args.classifier_lr,
            "early_stop_patience_epochs": 3,
            "accelerator": args.accelerator,
            **pc.SMALL_NETWORK,
        }
        train_classifier(ClassifierTrainOptions.model_validate(options))
    return run / "bundle"


def macro_auc(evaluation: Any) -> tuple[float, dict[str, float]]:
    """Mean AUC over the annotated labels that have one, and the per-label AUCs."""
    aucs = {
        c.name: float(c.auc)
        for c in evaluation.classes
        if c.threshold_source != "not-annotated" and c.auc is not None
    }
    return (float(np.mean(list(aucs.values()))) if aucs else float("nan")), aucs


def evaluate_at_site(
    work: Path, site: str, bundle: Path | None, cfg: Any, args, cache: Any = None
) -> Any:
    """The site's ``evaluate.classifier`` reply (bundle None: train-real on the same network).

    ``cache``: the site's ``SiteCache`` (default: the sample site's, built if missing).
    """
    from helpers_cache import build_site_cache

    from hub.flower.evaluate_server import request_content
    from hub.trust import HubKeyring
    from shared.artifacts.classifier import load_classifier_bundle
    from shared.evaluation_records import EvaluationRequest, TrainRecipe, evaluation_from_records
    from site_node.flower.evaluate_task import evaluate_classifier_task

    if bundle is None:
        request = EvaluationRequest(
            tag="real", mode="train-real", labeller_config=cfg, num_resamples=args.resamples,
            recipe=TrainRecipe(max_epochs=args.classifier_epochs, lr=args.classifier_lr),
        )  # fmt: skip
        content = request_content(request)
    else:
        net, card, _ = load_classifier_bundle(bundle, HubKeyring.at_root(work / "hub"))
        thresholds = {c.name: c.threshold_logit for c in card.classes}
        request = EvaluationRequest(
            tag=f"synthetic:{site}", labeller_config=net.cfg, num_resamples=args.resamples,
            fallback_thresholds_logit=thresholds,
        )  # fmt: skip
        content = request_content(request, net)
    if cache is None:
        cache = build_site_cache(
            pc._sample_data() / pc.SITES[site], _site_dir(work, site) / "cache"
        )
    return evaluation_from_records(evaluate_classifier_task(content, cache, site_id=site))


def frechet_to_test(
    work: Path, site: str, images: Path | np.ndarray, resolution_px: int
) -> float | None:
    """FD between images (an archive folder, or uint8 ``[N, R, R]``) and the site's real
    test split, in the site labeller's features; None for fewer than 2 images."""
    from PIL import Image

    from shared.artifacts.labeller import load_labeller_export
    from shared.metrics.features import LabellerExtractor
    from shared.metrics.frechet import frechet_distance_from_features
    from site_node.data.cache import SiteCache

    labeller, _ = load_labeller_export(
        _site_dir(work, site) / "labeller" / "export", trust_local_export=True
    )
    extract = LabellerExtractor(labeller, input_px=resolution_px)
    cache = SiteCache(_site_dir(work, site) / "cache")
    real = np.asarray(cache.images(resolution_px)[cache.indices("test")])
    if isinstance(images, Path):
        files = sorted((images / "images").glob("*.png"))
        if len(files) < 2:
            return None
        images = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    return frechet_distance_from_features(extract(real), extract(images))


def generator_samples(run_dir: Path, num_images: int) -> np.ndarray:
    """``num_images`` unconditional G_ema samples (uint8), seed 0: no class optimisation."""
    from site_node.pggan.export import load_exported_generator
    from site_node.pggan.sampling import generate_uint8

    return generate_uint8(load_exported_generator(run_dir), num_images, seed=0)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every stage for every setting; rows of the results table."""
    work = args.work / f"{args.resolution}px"
    pc.RESOLUTION_PX = args.resolution  # the reused stages read it
    pc.ACCELERATOR = args.accelerator
    settings = args.settings.split(",")
    sites = sorted({s.split(":")[0] for s in settings})
    rows, real_cache = [], {}
    times_path = work / "times.json"
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = json.loads(times_path.read_text()) if times_path.is_file() else {}
    # Load each site's images (cache) and train its labeller (at the site).
    from helpers_cache import build_site_cache

    for site in sites:
        cache_dir = _site_dir(work, site) / "cache"
        build_site_cache(pc._sample_data() / pc.SITES[site], cache_dir, (args.resolution,))
        if f"labeller:{site}" not in times:
            start = time.time()
            pc.stage_small_labellers(work, args.labeller_epochs, [site])
            _timed(times, f"labeller:{site}", start)
    # Per setting: PGGAN (site), archive (hub), archive classifier (hub), evaluation (site).
    for setting in settings:
        site, mode = setting.split(":")
        tag, archive_tag = f"{site}-{mode}", _archive_tag(setting, args)
        outputs = _site_stages(work, setting, args, times)
        _save_times(times_path, times)
        fd_samples = None
        if outputs.get("pggan") is not None:
            samples = generator_samples(outputs["pggan"], args.fd_samples)
            fd_samples = frechet_to_test(work, site, samples, args.resolution)
        if outputs.get("classifier") is None:
            rows.append({"resolution_px": args.resolution, "site": site, "setting": mode,
                         "fd_samples": fd_samples, "gan_s": times.get(f"pggan:{tag}"),
                         "archive_seed": args.archive_seed,
                         "archive_s": times.get(f"archive:{archive_tag}"),
                         "failed": "no archive classifier (empty archive)"})  # fmt: skip
            print(f"| {args.resolution} | {site} | {mode} | FD samples {fd_samples} | failed: "
                  f"empty archive | {times.get(f'pggan:{tag}')} |", flush=True)  # fmt: skip
            _save_rows(work / "results.json", rows)
            continue
        evaluation = evaluate_at_site(work, site, outputs["classifier"], None, args)
        if site not in real_cache:
            start = time.time()
            cfg = _classifier_config(outputs["classifier"], work)
            real_cache[site] = evaluate_at_site(work, site, None, cfg, args)
            _timed(times, f"real:{site}", start)
        synthetic_auc, per_label = macro_auc(evaluation)
        resolution = args.resolution
        real_auc, real_per_label = macro_auc(real_cache[site])
        ada_p = _final_p(outputs["pggan"])
        rows.append({
            "resolution_px": args.resolution, "site": site, "setting": mode,
            "fd_samples": fd_samples,
            "fd_archive": frechet_to_test(work, site, outputs["archive"], resolution),
            "auc_synthetic": round(synthetic_auc, 3), "auc_real": round(real_auc, 3),
            "kept": round(synthetic_auc / real_auc, 3), "final_p": ada_p,
            "per_label_synthetic": per_label, "per_label_real": real_per_label,
            "archive_seed": args.archive_seed,
            "archive_images": read_archive_manifest(outputs["archive"]).num_images,
            "kimg_per_phase": args.kimg_per_phase, "classifier_lr": args.classifier_lr,
            "gan_s": times.get(f"pggan:{tag}"), "archive_s": times.get(f"archive:{archive_tag}"),
            "classifier_s": times.get(f"classifier:{archive_tag}"),
        })  # fmt: skip
        _save_rows(work / "results.json", rows)
        _save_times(times_path, times)
        print(_row_line(rows[-1]), flush=True)
    return rows


def _save_times(path: Path, times: dict[str, float]) -> None:
    """Merge ``times`` into ``path`` (two runs on one work folder keep each other's)."""
    merged = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**merged, **times}, indent=1))


def _save_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Merge ``rows`` into ``path`` (a later run of a setting replaces its row)."""
    kept = json.loads(path.read_text()) if path.is_file() else []
    keys = {_row_key(r) for r in rows}
    merged = [r for r in kept if _row_key(r) not in keys] + rows
    path.write_text(json.dumps(merged, indent=1))


def _row_key(row: dict[str, Any]) -> tuple[str, str, int]:
    """A results row's identity: site, setting, archive seed (rows before it: seed 0)."""
    return row["site"], row["setting"], row.get("archive_seed", 0)


def _site_stages(
    work: Path, setting: str, args: argparse.Namespace, times: dict[str, float]
) -> dict[str, Any]:
    """PGGAN (site), archive (hub), archive classifier (hub); a stage that fails ends it."""
    site, mode = setting.split(":")
    tag = _archive_tag(setting, args)
    outputs: dict[str, Any] = {}
    for stage in ("pggan", "archive", "classifier"):
        start = time.time()
        try:
            if stage == "pggan":
                outputs[stage] = train_pggan(work, setting, args)
            elif stage == "archive":
                outputs[stage] = make_archive(work, setting, outputs["pggan"], args)
            else:
                outputs[stage] = train_archive_classifier(work, tag, outputs["archive"], args)
        except TrainingError as error:  # e.g. an archive with no annotated image
            log.warning("%s %s: %s", setting, stage, error)
            outputs[stage] = None
            break
        # the generator is the setting's; archive and classifier are per archive seed
        key = f"pggan:{site}-{mode}" if stage == "pggan" else f"{stage}:{tag}"
        if key not in times:
            _timed(times, key, start)
    return outputs


def _classifier_config(bundle: Path, work: Path) -> Any:
    from hub.trust import HubKeyring
    from shared.artifacts.classifier import load_classifier_bundle

    net, _, _ = load_classifier_bundle(bundle, HubKeyring.at_root(work / "hub"))
    return net.cfg


def _final_p(run_dir: Path) -> float | None:
    training = json.loads((run_dir / "export" / "generator.json").read_text())["training"]
    return training.get("augment", {}).get("final_p")


def _row_line(row: dict[str, Any]) -> str:
    p = "-" if row["final_p"] is None else f"{row['final_p']:.2f}"
    fd_archive = "-" if row["fd_archive"] is None else f"{row['fd_archive']:.3f}"
    return (
        f"| {row['resolution_px']} | {row['site']} | {row['setting']} | {row['fd_samples']:.3f} "
        f"| {fd_archive} "
        f"| {row['auc_synthetic']:.3f} | {row['auc_real']:.3f} | {row['kept']:.2f} | {p} "
        f"| {row['gan_s']} | {row['archive_s']} | {row['classifier_s']} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radshare-small-gan"))
    parser.add_argument("--resolution", type=int, default=32, help="32, 64, 128, ... px")
    parser.add_argument("--settings", default="a:none,a:ada,b:none,b:ada,b:warm-ada")
    parser.add_argument("--warm-base-site", default="a")
    parser.add_argument("--kimg-per-phase", type=float, default=0.5)
    parser.add_argument("--warm-kimg", type=float, default=1.0, help="fine-tune kimg (one phase)")
    parser.add_argument("--labeller-epochs", type=int, default=12)
    parser.add_argument("--archive-size", type=int, default=150)
    parser.add_argument("--max-steps", type=int, default=40, help="class optimisation steps")
    parser.add_argument("--classifier-epochs", type=int, default=8)
    parser.add_argument(
        "--classifier-lr", type=float, default=1e-3, help="Adam lr, archive and real-only alike"
    )
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--fd-samples", type=int, default=500, help="G samples for FD")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--seed", type=int, default=0, help="PGGAN seed (networks and draws)")
    parser.add_argument("--archive-seed", type=int, default=0, help="class optimisation seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("RADSHARE_SAMPLE_DATA", str(ROOT.parent / "shared" / "data"))
    print("| px | site | setting | FD samples | FD archive | AUC synthetic | AUC real | kept "
          "| final p | GAN s | archive s | classifier s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    run(args)


if __name__ == "__main__":
    main()
