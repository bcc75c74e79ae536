"""Issue 13, must-show 3 (site a): per-label test AUC with patient-level CIs at a small site.

    RADSHARE_SAMPLE_DATA=/work/shared/data .venv/bin/python benchmarks/per_label_site.py \
        --work /tmp/pool-a --site a --resolution 32 [--generator RUN_DIR]

Uses ``small_site_gan.py``'s layout (``WORK/<R>px/site-<S>/cache``, ``.../labeller``,
``WORK/<R>px/hub/classifiers/<S>-*/bundle``). The site trains its real-only classifier
(``train-real``, the small DenseNet, all labels the site annotated, ``--classifier-epochs``)
and evaluates it and every archive classifier found on its real test split
(``small_site_gan.evaluate_at_site``). Per label: test positives (images, patients), the
site's AUC, a patient-level bootstrap 95% CI (``shared.stats.bootstrap_ci`` over test
patients) and whether the CI lies above 0.5 ("signal"; not assessed below
``MIN_POSITIVE_PATIENTS`` positive test patients).

``--generator RUN_DIR`` adds why class optimisation may not converge: class optimisation
asks the labeller's logit to reach Youden's threshold plus a severity ``|N(1, 1)|``
(median about 1.1 logits); printed per label, the share of real test positives and of
unconditional generator samples whose logit reaches Youden and Youden + 1.
Results: ``benchmarks/per_label_site_<S>_results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pooled_comparison as pc  # noqa: E402
import pooling_b1_b2 as pb  # noqa: E402  (patient-level bootstrap, the site's train-real net)
import small_site_gan as ssg  # noqa: E402

log = logging.getLogger("radshare.bench.per_label_site")
# Below this many positive test patients a patient-level CI describes a handful of images
# (one patient: whether that patient is drawn), not the label: "signal" is not assessed.
MIN_POSITIVE_PATIENTS = 5


def per_label_rows(cache: Any, net: Any, reply: Any, args: argparse.Namespace) -> list[dict]:
    """Per annotated label with positives and negatives in test: AUCs and the patient CI."""
    from shared.stats import bootstrap_ci, roc_auc
    from site_node.evaluation.evaluate import images_at, predict_split, split_labels

    names = list(net.cfg.class_names)
    rows = cache.indices("test")
    logits = predict_split(net, images_at(cache, args.resolution), rows)
    labels = split_labels(cache, "test", names)
    _, patient = np.unique(cache.table.patient_id.astype(str).to_numpy()[rows], return_inverse=True)
    site_auc = {c.name: c.auc for c in reply.classes}
    out = []
    for c, name in enumerate(names):
        y, s = labels[:, c], logits[:, c]
        if not 0 < y.sum() < len(y):
            out.append({"label": name, "test_positives": int(y.sum()), "auc": None})
            continue

        def score(r: np.ndarray, y: np.ndarray = y, s: np.ndarray = s) -> float:
            return roc_auc(y[r], s[r])

        patients, metric = pb.patient_metric(patient, score)
        ci = bootstrap_ci(patients, patients, metric, num_resamples=args.resamples, seed=0)
        out.append({
            "label": name, "test_positives": int(y.sum()),
            "test_positive_patients": len(np.unique(patient[y > 0])),
            "auc": round(ci.estimate, 3), "site_auc": site_auc.get(name),
            "low": round(ci.low, 3), "high": round(ci.high, 3), "signal": _signal(ci, patient, y),
        })  # fmt: skip
    return out


def _signal(ci: Any, patient: np.ndarray, y: np.ndarray) -> bool | None:
    """CI above 0.5; None (not assessable) below ``MIN_POSITIVE_PATIENTS`` positive patients."""
    if len(np.unique(patient[y > 0])) < MIN_POSITIVE_PATIENTS:
        return None
    return bool(ci.low > 0.5)


def reachability(work: Path, site: str, cache: Any, generator: Path, args) -> list[dict]:
    """Per labeller class: shares of real test positives and G samples at Youden, Youden + 1."""
    from shared.artifacts.labeller import load_labeller_export
    from site_node.evaluation.evaluate import images_at, predict_split, split_labels

    labeller, card = load_labeller_export(
        ssg._site_dir(work, site) / "labeller" / "export", trust_local_export=True
    )
    names = list(labeller.cfg.class_names)
    rows = cache.indices("test")
    real = predict_split(labeller, images_at(cache, args.resolution), rows)
    labels = split_labels(cache, "test", names)
    samples = ssg.generator_samples(generator, args.samples)
    fake = predict_split(labeller, samples, np.arange(len(samples)))
    out = []
    for c, metrics in enumerate(card.classes):
        if metrics.threshold_logit is None:
            continue
        t, positive = metrics.threshold_logit, labels[:, c] > 0
        out.append({
            "label": metrics.name, "youden_logit": round(t, 3), "val_auc": metrics.val_auc,
            "real_pos_at_youden": _share(real[positive, c] >= t),
            "real_pos_at_youden_plus_1": _share(real[positive, c] >= t + 1),
            "samples_at_youden": _share(fake[:, c] >= t),
            "samples_at_youden_plus_1": _share(fake[:, c] >= t + 1),
            "samples_logit_max_minus_youden": round(float(fake[:, c].max() - t), 3),
        })  # fmt: skip
    return out


def _share(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 3) if mask.size else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The real-only classifier, any archive classifiers, and (optional) reachability."""
    from helpers_cache import build_site_cache

    from shared.networks.labeller import LabellerConfig
    from site_node.evaluation.evaluate import annotated_labels

    work = args.work / f"{args.resolution}px"
    pc.RESOLUTION_PX, pc.ACCELERATOR = args.resolution, args.accelerator
    cache = build_site_cache(
        pc._sample_data() / pc.SITES[args.site],
        ssg._site_dir(work, args.site) / "cache",
        (args.resolution,),
    )
    names = tuple(annotated_labels(cache))
    network: dict[str, Any] = dict(pc.SMALL_NETWORK)  # the archive classifiers' network
    cfg = LabellerConfig(resolution_px=args.resolution, class_names=names, **network)
    reply = ssg.evaluate_at_site(work, args.site, None, cfg, args, cache=cache)
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    results["real-only"] = per_label_rows(cache, pb._real_net(cache, cfg, args), reply, args)
    for bundle in sorted((work / "hub" / "classifiers").glob(f"{args.site}-*/bundle")):
        reply = ssg.evaluate_at_site(work, args.site, bundle, None, args, cache=cache)
        net = pb._bundle_net(work, bundle)
        results[f"archive:{bundle.parent.name}"] = per_label_rows(cache, net, reply, args)
    if args.generator is not None:
        results["reachability"] = reachability(work, args.site, cache, args.generator, args)
    path = Path(__file__).with_name(f"per_label_site_{args.site}_results.json")
    path.write_text(json.dumps(results, indent=1))
    for key, rows in results.items():
        if key != "settings":
            print(f"\n{key}")
            for row in rows:
                print(row)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pool-a"))
    parser.add_argument("--site", default="a", choices=sorted(pc.SITES))
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--classifier-epochs", type=int, default=15)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--generator", type=Path, default=None, help="PGGAN run folder")
    parser.add_argument("--samples", type=int, default=500, help="G samples (reachability)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("RADSHARE_SAMPLE_DATA", str(ROOT.parent / "shared" / "data"))
    run(args)


if __name__ == "__main__":
    main()
