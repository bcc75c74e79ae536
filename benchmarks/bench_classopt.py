"""Batched class optimisation pays: converged labelled images per second, batch 1 vs batched.

    .venv/bin/python benchmarks/bench_classopt.py [--generator G --labeller L]
        [--device cpu|cuda] [--batch-sizes 1,64] [--seconds 30]

For each batch size, on the same machine and the same stream of starts (targets cycling
over the labeller's usable classes, seeds fixed), it runs for ``--seconds``:

1. class optimisation alone (``BatchedClassOptimiser``): converged latents per second;
2. the whole archive path (``run_synthesis``: optimisation, local sampling of 3-6
   follow-ups, labels, PNGs, journal): archive images per second, counted from the
   start of the run (so the first batch's latency is in it: use a long enough window).

With ``--labels-study CACHE`` it measures instead what the archive's labels say
(issue 13, item 3), on real sources (``--generator``/``--labeller``, e.g. a site-A
PGGAN and labeller) and the site's ingested cache (its real test split):

3. per ``--overshoots`` value: a ``match-site`` archive of ``--archive-images``; its
   prevalence table (target = the site's, planned, achieved with the patient-bootstrap
   95% CI; ``prevalence.json``), the share of follow-ups rejected, and the downstream
   macro AUC on the site's real test split of a probe classifier trained only on the
   archive (L2 logistic regression on the pixels, one per label: cheap enough for 2
   cores; a DenseNet is what ``pooled_comparison.py`` trains);
4. at the first overshoot, the same archive with the severity redrawn on every retry
   (the behaviour before the fix): drawn ``|N(1, 1)|`` vs kept vs achieved severity.

``--generator``/``--labeller`` take training exports or bundles (e.g. the tiny PGGAN and
the 32 px labeller the tests train on site A). Without them it uses stand-ins of the same
architecture and cost: a 32 px PGGAN generator (the trainer's ``tiny`` profile) and a
DenseNet-121 labeller at 32 px, both with random weights, the labeller's logits rescaled
to median 0 and sd 1 over the generator's samples, every class called at logit 0.7.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections import deque
from itertools import count
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hub.synthesis.class_optimisation import (  # noqa: E402
    BatchedClassOptimiser,
    ClassOptimisationSettings,
    Converged,
    make_start,
)
from hub.synthesis.local_sampling import LocalSamplingSettings  # noqa: E402
from hub.synthesis.pipeline import (  # noqa: E402
    SynthesisOptions,
    prepare_synthesis,
    run_synthesis,
    usable_thresholds,
)
from hub.synthesis.prevalence import PREVALENCE_FILE  # noqa: E402
from hub.synthesis.sources import resolve_generator, resolve_labeller  # noqa: E402
from shared.artifacts.labeller import ClassMetrics, LabellerCard, save_labeller_export  # noqa: E402
from shared.labels import NIH_LABELS  # noqa: E402
from shared.networks.generator import Generator, GeneratorConfig  # noqa: E402
from shared.networks.labeller import Labeller, LabellerConfig  # noqa: E402


class _StopError(Exception):
    """Raised from the progress callback when the time is up."""


def stand_in_sources(folder: Path, resolution_px: int = 32) -> tuple[str, str]:
    """Random-weight generator and labeller exports with calibrated logits (see docstring)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    G = Generator(
        GeneratorConfig(resolution_px=resolution_px, z_dim=64, fmap_base=256, fmap_max=32)
    )
    G.eval()
    (folder / "gen").mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in G.state_dict().items()},
        str(folder / "gen" / "g_ema.safetensors"),
    )
    data = {"label_space": list(NIH_LABELS)}
    export = {"generator_config": G.cfg.model_dump(), "training": {}, "data": data}
    (folder / "gen" / "generator.json").write_text(json.dumps(export))
    cfg = LabellerConfig(resolution_px=resolution_px)
    labeller = Labeller(cfg).eval()
    with torch.no_grad():
        logits = labeller(G(torch.randn(256, G.cfg.z_dim)))
        out = labeller.net.class_layers[-1]
        sd, median = logits.std(0), logits.median(0).values
        out.weight /= sd[:, None]
        out.bias.copy_((out.bias - median) / sd)
    classes = [
        ClassMetrics(name=n, threshold_logit=0.7, val_auc=0.8, train_positives=1)
        for n in NIH_LABELS
    ]
    save_labeller_export(
        folder / "lab", labeller, LabellerCard(labeller_config=cfg, classes=classes)
    )
    return str(folder / "gen"), str(folder / "lab")


def optimisation_rate(generator, labeller, batch_size: int, seconds: float, device) -> dict:
    """Converged latents per second over ``seconds`` of batched optimisation."""
    settings = ClassOptimisationSettings(batch_size=batch_size)
    thresholds = usable_thresholds(labeller.card, 0.5)
    targets = [c for c, t in enumerate(thresholds) if t is not None]

    def starts():
        for task in count():
            c = targets[task % len(targets)]
            yield make_start(task, 0, c, thresholds[c], base_seed=0, settings=settings)

    pending: deque = deque()
    stream = starts()
    optimiser = BatchedClassOptimiser(
        generator.G, labeller.labeller, generator.config.z_dim, settings, device
    )
    converged = finished = 0
    pending.extend(next(stream) for _ in range(batch_size))
    began = time.perf_counter()
    for outcome in optimiser.run(pending):
        finished += 1
        converged += isinstance(outcome, Converged)
        pending.append(next(stream))  # never let the queue run dry
        if time.perf_counter() - began > seconds:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - began
    return {
        "converged": converged,
        "finished": finished,
        "seconds": elapsed,
        "per_s": converged / elapsed,
    }


def archive_rate(
    generator_ref: str, labeller_ref: str, batch_size: int, seconds: float, device
) -> dict:
    """Archive images per second over ``seconds`` of writing (loading and checks excluded)."""
    written = [0]
    with tempfile.TemporaryDirectory() as tmp:
        options = SynthesisOptions(
            generator=generator_ref, labeller=labeller_ref, out_dir=Path(tmp) / "a",
            num_images=1_000_000, labels="balanced", device=str(device),
            optimisation=ClassOptimisationSettings(batch_size=batch_size),
            sampling=LocalSamplingSettings(batch_size=max(batch_size, 8)),
        )  # fmt: skip
        job = prepare_synthesis(options)
        began = time.perf_counter()

        def progress(num_images: int) -> None:
            written[0] += num_images
            if time.perf_counter() - began > seconds:
                raise _StopError

        with contextlib.suppress(_StopError):
            run_synthesis(job, progress)
        elapsed = time.perf_counter() - began
    return {"images": written[0], "seconds": elapsed, "per_s": written[0] / elapsed}


def _archive(gen_ref: str, lab_ref: str, out: Path, args, overshoot: float, redraw: bool):
    """A match-site archive; returns its manifest, prevalence report and wall seconds."""
    options = SynthesisOptions(
        generator=gen_ref, labeller=lab_ref, out_dir=out, num_images=args.archive_images,
        labels="match-site", seed=args.seed, device=args.device, trust_local_export=True,
        redraw_severity=redraw, max_attempts_per_patient=args.max_attempts,
        optimisation=ClassOptimisationSettings(
            batch_size=args.study_batch, max_steps=args.max_steps,
            plateau_patience_steps=max(5, args.max_steps // 3), overshoot_logit=overshoot,
        ),
        sampling=LocalSamplingSettings(batch_size=64, max_draws_per_image=args.max_draws),
    )  # fmt: skip
    began = time.perf_counter()
    manifest = run_synthesis(prepare_synthesis(options))
    report = json.loads((out / PREVALENCE_FILE).read_text())
    return manifest, report, time.perf_counter() - began


def probe_macro_auc(archive: Path, cache: Path, labels: list[str]) -> tuple[float, dict]:
    """Macro AUC on the cache's real test split of per-label pixel logistic regressions."""
    import numpy as np
    import pandas as pd
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    from shared.stats import roc_auc

    entries = pd.read_csv(archive / "Data_Entry.csv")
    if entries.empty:
        return float("nan"), {}
    x_syn = np.stack([np.asarray(Image.open(archive / "images" / n), dtype=np.float32)
                      for n in entries["Image Index"]]).reshape(len(entries), -1) / 255  # fmt: skip
    table = pd.read_csv(cache / "table.csv", dtype={"image_index": str})
    px = round(x_syn.shape[1] ** 0.5)
    real = np.load(cache / f"images_{px}px.npy", mmap_mode="r")
    test = table.split.to_numpy() == "test"
    x_test = np.asarray(real[test], dtype=np.float32).reshape(int(test.sum()), -1) / 255
    aucs = {}
    for label in labels:
        y = entries["Finding Labels"].str.split("|").apply(lambda ls, lab=label: lab in ls)
        y_test = table.loc[test, label].to_numpy()
        if y.nunique() < 2 or y_test.sum() < 5 or (1 - y_test).sum() < 5:
            continue  # no positives (or negatives) to learn or to score: no AUC
        probe = LogisticRegression(C=0.01, max_iter=500).fit(x_syn, y.to_numpy())
        aucs[label] = float(roc_auc(y_test, probe.decision_function(x_test)))
    return (float(np.mean(list(aucs.values()))) if aucs else float("nan")), aucs


def _prevalence_table(report: dict) -> str:
    lines = ["| label | target (site) | planned | archive | 95% CI (patients) | in CI |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["labels"]:
        target = "-" if r["target"] is None else f"{r['target']:.3f}"
        lines.append(
            f"| {r['label']} | {target} | {r['planned']:.3f} | {r['achieved']:.3f} | "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['within_ci']} |"
        )
    return "\n".join(lines)


def _severity_rows(name: str, severity: dict) -> list[str]:
    rows = []
    for key in ("drawn_all_starts", "drawn_kept", "achieved_minus_youden_kept"):
        d = severity[key]
        if not d.get("n"):
            rows.append(f"| {name} | {key} | 0 | - | - | - |")
            continue
        q = d["quantiles"]
        rows.append(
            f"| {name} | {key} | {d['n']} | {q['0.25']:.2f} / {q['0.5']:.2f} / {q['0.75']:.2f} "
            f"| {d['ks_statistic']:.3f} | {d['ks_pvalue']:.3g} |"
        )
    return rows


def labels_study(args) -> None:
    """Item 3 of issue 13: prevalence, severity before/after, the overshoot sweep."""
    gen_ref, lab_ref = args.generator, args.labeller
    work = Path(tempfile.mkdtemp(prefix="bench-classopt-"))
    overshoots = [float(o) for o in args.overshoots.split(",")]
    sweep, reports = [], {}
    for overshoot in overshoots:
        manifest, report, seconds = _archive(gen_ref, lab_ref, work / f"os{overshoot}", args,
                                             overshoot, redraw=False)  # fmt: skip
        drawn = sum(c.neighbours_drawn for c in manifest.per_class)
        rejected = sum(c.neighbours_rejected for c in manifest.per_class)
        starts = sum(c.starts for c in manifest.per_class)
        converged = sum(c.converged for c in manifest.per_class)
        labels = [n for n in manifest.annotated_labels if n != "No Finding"]
        macro, per_label = probe_macro_auc(work / f"os{overshoot}", args.labels_study, labels)
        reports[overshoot] = report
        sweep.append((overshoot, manifest.num_images, manifest.num_patients,
                      manifest.abandoned_patients, converged, starts, rejected, drawn, macro,
                      per_label, seconds))  # fmt: skip
        print(f"overshoot {overshoot}: {manifest.num_images} images in {seconds:.0f} s", flush=True)
    _, before, seconds = _archive(gen_ref, lab_ref, work / "redraw", args, overshoots[0], True)
    print(f"\n### Prevalence, target vs archive (overshoot {overshoots[0]})\n")
    print(_prevalence_table(reports[overshoots[0]]))
    print(f"\nnote: {reports[overshoots[0]]['target_note'] or '-'}")
    print("\n### Severity above Youden (logits) vs |N(1, 1)| (quartiles 0.67 / 1.09 / 1.59)\n")
    print("| retries | what | n | q25 / median / q75 | KS D | KS p |\n|---|---|---|---|---|---|")
    for row in _severity_rows("redraw (before)", before["severity"]) + _severity_rows(
        "same severity (after)", reports[overshoots[0]]["severity"]
    ):
        print(row)
    print(f"\nbefore: {before['patients_written']} patients written, "
          f"{before['patients_abandoned']} abandoned; after: "
          f"{reports[overshoots[0]]['patients_written']} written, "
          f"{reports[overshoots[0]]['patients_abandoned']} abandoned")  # fmt: skip
    print("\n### Overshoot sweep\n")
    print(
        "| overshoot (logits) | images | patients | abandoned | centres converged/starts "
        "| follow-ups rejected | probe macro AUC (real test) | labels in CI | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for o, n_img, n_pat, aband, conv, starts, rej, drawn, macro, _, sec in sweep:
        within = [r["within_ci"] for r in reports[o]["labels"] if r["within_ci"] is not None]
        print(f"| {o} | {n_img} | {n_pat} | {aband} | {conv}/{starts} | {rej}/{drawn} "
              f"({rej / max(drawn, 1):.0%}) | {macro:.3f} | {sum(within)}/{len(within)} "
              f"| {sec:.0f} |")  # fmt: skip
    for o, *_, per_label, _ in sweep:
        print(f"overshoot {o} per-label probe AUC: "
              + ", ".join(f"{k} {v:.3f}" for k, v in per_label.items()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", help="generator export or bundle (default: stand-in)")
    parser.add_argument("--labeller", help="labeller export or bundle (default: stand-in)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--seconds", type=float, default=30.0, help="per measurement")
    parser.add_argument("--skip-archive", action="store_true", help="only class optimisation")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--trust-local-export", action="store_true", help="--generator/--labeller are exports"
    )
    parser.add_argument(
        "--labels-study",
        type=Path,
        metavar="CACHE",
        help="site cache (ingested): run the prevalence/severity/overshoot study",
    )
    parser.add_argument("--archive-images", type=int, default=120)
    parser.add_argument("--overshoots", default="0,0.5,1.0")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--max-attempts", type=int, default=8)
    parser.add_argument("--study-batch", type=int, default=32)
    parser.add_argument("--max-draws", type=int, default=4, help="per follow-up image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.labels_study:
        if not (args.generator and args.labeller):
            parser.error("--labels-study needs --generator and --labeller (real sources)")
        labels_study(args)
        return
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        if args.generator and args.labeller:
            gen_ref, lab_ref = args.generator, args.labeller
            trusted = args.trust_local_export
        else:
            gen_ref, lab_ref = stand_in_sources(Path(tmp))
            trusted = True  # unsigned stand-ins this script just made
        generator = resolve_generator(gen_ref, trust_local_export=trusted)
        labeller = resolve_labeller(lab_ref, trust_local_export=trusted)
        print(f"device {device} ({platform.processor() or platform.machine()}, "
              f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}); "
              f"generator {generator.config.resolution_px} px z_dim {generator.config.z_dim}; "
              f"labeller DenseNet blocks {labeller.card.labeller_config.block_config}")  # fmt: skip
        results = {}
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            optimisation_rate(
                generator, labeller, batch_size, min(3.0, args.seconds), device
            )  # warm up
            row = {
                "optimisation": optimisation_rate(
                    generator, labeller, batch_size, args.seconds, device
                )
            }
            if not args.skip_archive:
                row["archive"] = archive_rate(gen_ref, lab_ref, batch_size, args.seconds, device)
            results[batch_size] = row
            opt = row["optimisation"]
            line = (
                f"batch {batch_size:4d}: class optimisation {opt['per_s']:8.2f} converged/s "
                f"({opt['converged']}/{opt['finished']} starts in {opt['seconds']:.1f} s)"
            )
            if "archive" in row:
                arch = row["archive"]
                line += f"; archive {arch['per_s']:8.2f} images/s ({arch['images']} images)"
            print(line, flush=True)
        sizes = sorted(results)
        if len(sizes) >= 2:
            lo, hi = results[sizes[0]], results[sizes[-1]]
            speedup = hi["optimisation"]["per_s"] / max(lo["optimisation"]["per_s"], 1e-9)
            print(
                f"speed-up batch {sizes[-1]} vs {sizes[0]}: class optimisation {speedup:.1f}x",
                end="",
            )
            if "archive" in hi:
                print(
                    f", archive {hi['archive']['per_s'] / max(lo['archive']['per_s'], 1e-9):.1f}x"
                )
            else:
                print()
        if args.json:
            args.json.write_text(json.dumps({"device": str(device), "results": results}, indent=2))


if __name__ == "__main__":
    main()
