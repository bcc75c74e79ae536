"""The report's first screen: per site, real and synthetic side by side, and the demo's verdict.

For each site: example images per label (real phantoms beside the class-optimised synthetic
archive's; a real-data site's images never leave it, so only synthetic ones are shown),
label prevalence real (the generator manifest's training counts, what the hub receives)
versus synthetic (the archive's labels), and the mean AUC on the site's real test split of
the real-only, the site-synthetic and the pooled classifier (the federated evaluation's
table). :func:`demo_results` computes these numbers and checks them against
:data:`THRESHOLDS`; the demo writes them to ``<out>/report/results.json`` (what the e2e test
reads) and :func:`glance_section` draws them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from deployment.config import PROFILE_SETTINGS
from deployment.site_steps import DemoContext, site_classes
from deployment.state import DemoState
from hub.quality.report import Section
from shared.labels import NO_FINDING

__all__ = [
    "GLANCE_TITLE",
    "LIMITS_TITLE",
    "THRESHOLDS",
    "demo_results",
    "glance_section",
    "limits_section",
]

GLANCE_TITLE = "At a glance: real versus synthetic, per site"
LIMITS_TITLE = "What this demo cannot afford"

#: What the demo must show on each site (issue 13, must-show 1).
THRESHOLDS = {
    "real_mean_auc_min": 0.85,
    "synthetic_fraction_of_real_min": 0.90,
    "prevalence_gap_pp_max": 10.0,
}
#: The AUC a classifier gets on a label it cannot output (its archive does not annotate it).
CHANCE_AUC = 0.5

_EXAMPLES_PER_LABEL = 4


# --------------------------------------------------------------------------- numbers


def _archive_rows(archive: Path) -> list[tuple[str, set[str]]]:
    """(image path, labels) of every archive image (``Data_Entry.csv`` or ``labels.csv``)."""
    csv_path = next(
        (p for p in (archive / "Data_Entry.csv", archive / "labels.csv") if p.is_file()), None
    )
    if csv_path is None:
        return []
    with csv_path.open(newline="") as handle:
        return [
            (str(archive / "images" / row["Image Index"]), set(row["Finding Labels"].split("|")))
            for row in csv.DictReader(handle)
        ]


def _mean_aucs(state: DemoState, site_id: str) -> dict[str, Any]:
    """Mean AUC at ``site_id`` per setting (real, synthetic:<site>, pooled), and its labels."""
    table = state.outputs("hub.federated-evaluate").get("table") or {}
    columns, rows = table.get("columns", []), table.get("rows", [])
    if not columns:
        return {}
    index = {name: i for i, name in enumerate(columns)}
    values: dict[str, dict[str, float]] = {}
    for row in rows:
        if str(row[index["site"]]) != site_id:
            continue
        try:
            auc = float(row[index["auc"]])
        except (TypeError, ValueError):
            continue
        if np.isfinite(auc):
            values.setdefault(str(row[index["setting"]]), {})[str(row[index["label"]])] = auc
    named = {"real": "real", "site-synthetic": "synthetic", "pooled": "pooled"}
    labels = list(values.get("real", {}))  # the real-only classifier's labels, if any
    out: dict[str, Any] = {}
    for setting, name in named.items():
        if values.get(setting):
            per_label = values[setting]
            missing = [lb for lb in labels if lb not in per_label]
            # Over the real-only classifier's labels: one the classifier cannot output
            # (its archive does not annotate it) counts as chance, 0.5.
            scores = [per_label.get(lb, CHANCE_AUC) for lb in labels or per_label]
            out[name] = float(np.mean(scores))
            out[f"{name}_per_label"] = per_label
            if missing:
                out[f"{name}_labels_at_chance"] = missing
    return out


def _site_results(ctx: DemoContext, state: DemoState, site: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    manifest = state.outputs(f"hub.pull.{site.site_id}").get("manifest") or {}
    archive = state.outputs(f"hub.synthesize.{site.site_id}").get("archive")
    rows = _archive_rows(Path(archive)) if archive else []
    annotated_labels = _annotated(archive)
    classes = site_classes(site) or annotated_labels
    data = manifest.get("data", {})
    if data and rows:
        real_n, counts = int(data["num_images"]), dict(data["counts_per_label"])
        prevalence: dict[str, dict[str, Any]] = {}
        annotated = set(annotated_labels) or set(classes)
        for label in classes:
            real = counts.get(label, 0) / max(real_n, 1)
            if label not in annotated:  # the labeller cannot call it: the archive is silent
                prevalence[label] = {"real": real, "synthetic": None, "gap_pp": None}
                continue
            synthetic = sum(label in labels for _, labels in rows) / len(rows)
            prevalence[label] = {
                "real": real,
                "synthetic": synthetic,
                "gap_pp": 100.0 * abs(synthetic - real),
            }
        result["prevalence"] = prevalence
        result["real_images"], result["synthetic_images"] = real_n, len(rows)
    aucs = _mean_aucs(state, site.site_id)
    if aucs:
        result["auc"] = aucs
        if aucs.get("real") and "synthetic" in aucs:
            aucs["synthetic_fraction_of_real"] = aucs["synthetic"] / aucs["real"]
    result["checks"] = _checks(result)
    return result


def _annotated(archive: str | None) -> list[str]:
    if not archive or not (Path(archive) / "manifest.json").is_file():
        return []
    import json

    manifest = json.loads((Path(archive) / "manifest.json").read_text())
    return list(manifest.get("annotated_labels", []))


def _gaps(prevalence: dict[str, dict[str, Any]]) -> list[float]:
    """Each label's prevalence gap in points; inf for a label the archive does not annotate
    (it has no synthetic prevalence, so the target is not met)."""
    return [np.inf if v["gap_pp"] is None else v["gap_pp"] for v in prevalence.values()]


def _checks(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each threshold: True (met), False (missed) or None (no number to check)."""
    aucs, prevalence = result.get("auc", {}), result.get("prevalence")
    real, fraction = aucs.get("real"), aucs.get("synthetic_fraction_of_real")
    gaps = _gaps(prevalence or {})
    return {
        "real_mean_auc": None if real is None else real >= THRESHOLDS["real_mean_auc_min"],
        "synthetic_keeps_real_auc": (
            None if fraction is None else fraction >= THRESHOLDS["synthetic_fraction_of_real_min"]
        ),
        "prevalence_within_gap": (
            None if not gaps else max(gaps) <= THRESHOLDS["prevalence_gap_pp_max"]
        ),
    }


def demo_results(ctx: DemoContext, state: DemoState, elapsed_s: float) -> dict[str, Any]:
    """Every number of the first screen, per site, with the threshold checks."""
    settings = ctx.settings
    return {
        "profile": ctx.config.profile,
        "synthesis": settings.synthesis,
        "elapsed_s": round(elapsed_s, 1),
        "step_seconds": {n: round(r.elapsed_s, 1) for n, r in state.steps().items()},
        "thresholds": THRESHOLDS,
        "sites": {s.site_id: _site_results(ctx, state, s) for s in ctx.config.sites},
    }


# --------------------------------------------------------------------------- drawing


def _load(path: str, size_px: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        grey = image.convert("L")
        if grey.size != (size_px, size_px):
            grey = grey.resize((size_px, size_px), Image.Resampling.BILINEAR)
        return np.asarray(grey, dtype=np.uint8)


def _real_rows(ctx: DemoContext, state: DemoState, site: Any) -> list[tuple[str, set[str]]]:
    """(image, labels) of a phantom site's data; none for a real site (its images stay)."""
    if site.data_dir is not None:
        return []
    folder = Path(state.outputs(f"site.{site.site_id}.data").get("data_dir", ""))
    if not (folder / "labels.csv").is_file():
        return []
    with (folder / "labels.csv").open(newline="") as handle:
        return [
            (str(folder / "images" / row["Image Index"]), set(row["Finding Labels"].split("|")))
            for row in csv.DictReader(handle)
        ]


def _examples(rows: list[tuple[str, set[str]]], label: str, size_px: int) -> list[np.ndarray]:
    """Up to four images carrying ``label`` (No Finding: no finding), spread over the rows."""
    chosen = [path for path, labels in rows if label in labels]
    step = max(1, len(chosen) // _EXAMPLES_PER_LABEL)
    return [_load(p, size_px) for p in chosen[::step][:_EXAMPLES_PER_LABEL]]


def _strip(images: list[np.ndarray], size_px: int) -> np.ndarray:
    """Four images in a row with 1 px gaps (grey where there is none)."""
    canvas = np.full((size_px, _EXAMPLES_PER_LABEL * (size_px + 1) - 1), 96, dtype=np.uint8)
    for i, image in enumerate(images[:_EXAMPLES_PER_LABEL]):
        canvas[:, i * (size_px + 1) : i * (size_px + 1) + size_px] = image
    return canvas


def _site_figure(
    ctx: DemoContext, state: DemoState, site: Any, result: dict[str, Any]
) -> Figure | None:
    archive = state.outputs(f"hub.synthesize.{site.site_id}").get("archive")
    synthetic_rows = _archive_rows(Path(archive)) if archive else []
    prevalence = result.get("prevalence", {})
    labels = [NO_FINDING, *(lb for lb in prevalence if lb != NO_FINDING)]
    if not synthetic_rows:
        return None
    size, real_rows = ctx.settings.pggan_resolution_px, _real_rows(ctx, state, site)
    fig = Figure(figsize=(12, 0.8 + 0.85 * len(labels)))
    grid = fig.add_gridspec(len(labels), 4, width_ratios=[1.4, 1.4, 0.8, 0.8], wspace=0.15)
    for r, label in enumerate(labels):
        for c, (rows, kind) in enumerate(((real_rows, "real"), (synthetic_rows, "synthetic"))):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(_strip(_examples(rows, label, size), size), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label.replace("_", " "), rotation=0, ha="right", va="center")
            if r == 0:
                title = kind if rows or kind == "synthetic" else "real (stays at the site)"
                ax.set_title(f"{title}, {size} px", fontsize=9)
    _prevalence_axes(fig.add_subplot(grid[:, 2]), prevalence, labels)
    _auc_axes(fig.add_subplot(grid[:, 3]), result.get("auc", {}))
    fig.suptitle(f"site {site.site_id}", x=0.02, ha="left", fontsize=11)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.88, bottom=0.14)
    return fig


def _prevalence_axes(ax: Any, prevalence: dict[str, dict[str, float]], labels: list[str]) -> None:
    y = np.arange(len(labels))

    def share(label: str, kind: str) -> float:
        value = prevalence.get(label, {}).get(kind)
        return np.nan if value is None else value  # None: the archive does not annotate it

    real = [share(lb, "real") for lb in labels]
    synthetic = [share(lb, "synthetic") for lb in labels]
    ax.barh(y - 0.2, real, height=0.4, label="real", color="#4c72b0")
    ax.barh(y + 0.2, synthetic, height=0.4, label="synthetic", color="#dd8452")
    ax.set_yticks(y, [])  # the rows of images name the labels
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_title("label prevalence", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def _auc_axes(ax: Any, aucs: dict[str, Any]) -> None:
    names = ["real", "synthetic", "pooled"]
    captions = ["real\nonly", "site-\nsynthetic", "pooled\nsynthetic"]
    values = [aucs.get(n, np.nan) for n in names]
    ax.bar(range(3), values, color=["#4c72b0", "#dd8452", "#55a868"])
    for i, v in enumerate(values):
        if np.isfinite(v):
            ax.text(i, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(range(3), captions, fontsize=7)
    ax.set_ylim(0.0, 1.05)
    ax.axhline(0.5, color="#999", lw=0.8, ls=":")
    ax.set_title("mean AUC on the site's\nreal test split", fontsize=9)


def _verdict_rows(results: dict[str, Any]) -> list[list[object]]:
    rows: list[list[object]] = []
    for site_id, site in results["sites"].items():
        aucs, checks = site.get("auc", {}), site.get("checks", {})
        gaps = _gaps(site.get("prevalence", {}))
        rows.append(
            [
                f"site {site_id}",
                aucs.get("real", float("nan")),
                aucs.get("synthetic", float("nan")),
                f"{100 * aucs['synthetic_fraction_of_real']:.0f}%"
                if "synthetic_fraction_of_real" in aucs
                else "–",
                aucs.get("pooled", float("nan")),
                ("not annotated" if max(gaps) == np.inf else f"{max(gaps):.1f}") if gaps else "–",
                _met(checks),
            ]
        )
    return rows


def _met(checks: dict[str, bool | None]) -> str:
    if any(v is None for v in checks.values()):
        return "incomplete"
    missed = [name for name, ok in checks.items() if not ok]
    return "all met" if not missed else "missed: " + ", ".join(missed)


def _prevalence_rows(results: dict[str, Any]) -> list[list[object]]:
    return [
        [f"site {site_id}", label, v["real"]]
        + (
            ["not annotated", "–"]
            if v["gap_pp"] is None
            else [v["synthetic"], round(v["gap_pp"], 1)]
        )
        for site_id, site in results["sites"].items()
        for label, v in site.get("prevalence", {}).items()
    ]


def _limits(ctx: DemoContext) -> str:
    """What this profile cannot afford, and what the gpu profile and real data do instead."""
    s, gpu = ctx.settings, PROFILE_SETTINGS["gpu"]
    kimg = 7 * s.pggan_kimg_per_phase
    labeller = "a small DenseNet" if s.labeller_small_network else "DenseNet-121"
    phantom = all(site.data_dir is None for site in ctx.config.sites)
    data = (
        f"{s.phantom_images} phantom radiographs per site with three findings drawn large "
        "enough to see at 32 px (Cardiomegaly, Effusion, Pneumothorax); real chest X-rays "
        "carry 14 findings, many subtle, and need the real-data runs of docs/benchmarks.md"
        if phantom
        else "the sites' real images"
    )
    return (
        f"What this {ctx.config.profile} profile can afford: {data}; "
        f"{s.pggan_resolution_px} px generators trained {kimg:.1f} kimg each "
        f"(the gpu profile: {gpu.pggan_resolution_px} px, {7 * gpu.pggan_kimg_per_phase:.0f}+ "
        f"kimg); {labeller} labeller, {s.labeller_epochs} epochs (gpu: DenseNet-121); "
        f"archives of {s.archive_images_per_site} images by "
        + (
            f"class optimisation, at most {s.synthesis_max_steps} steps per start "
            f"(gpu: {gpu.synthesis_max_steps})"
            if s.synthesis == "optimise"
            else "sampling and labelling afterwards (NOT class optimisation)"
        )
        + f"; small classifiers, {s.classifier_epochs} epochs; memorisation audits of "
        f"{s.audit_num_generated} generated images (gpu: {gpu.audit_num_generated}), too few "
        "for a verdict to mean much. Test splits are small, so AUCs carry wide CIs (below)."
    )


def _silent_labels(results: dict[str, Any]) -> list[str]:
    """One line per site whose archive leaves a label out: the labeller cannot call it."""
    lines = []
    for site_id, site in results["sites"].items():
        silent = [lb for lb, v in site.get("prevalence", {}).items() if v["gap_pp"] is None]
        if silent:
            lines.append(
                f"site {site_id}: the archive does not annotate {', '.join(silent)}: the "
                "site's labeller cannot call it (validation AUC not above chance with 95% "
                "confidence), so class optimisation does not target it, and the site-"
                f"synthetic classifier scores chance ({CHANCE_AUC}) on it in the mean AUC."
            )
    return lines


def glance_section(ctx: DemoContext, state: DemoState, results: dict[str, Any]) -> Section:
    """The first screen: the verdict table, then one figure per site."""
    section = Section(GLANCE_TITLE)
    method = (
        "class optimisation"
        if ctx.settings.synthesis == "optimise"
        else "sampling, labelled afterwards (not class optimisation)"
    )
    t = THRESHOLDS
    section.paragraphs.append(
        f"Archives made at the hub by {method} from each site's published generator and "
        "labeller; every classifier evaluated at each site on its real test split (federated: "
        f"only numbers came back). Targets: real-only mean AUC >= {t['real_mean_auc_min']}, "
        f"site-synthetic >= {100 * t['synthetic_fraction_of_real_min']:.0f}% of it, each "
        f"label's synthetic prevalence within {t['prevalence_gap_pp_max']:.0f} points of real."
    )
    header = ["site", "real only", "site-synthetic", "of real", "pooled", "max prevalence gap"]
    section.tables.append(
        ("Mean AUC on the site's real test split", [*header, "targets"], _verdict_rows(results))
    )
    section.paragraphs.extend(_silent_labels(results))
    for site in ctx.config.sites:
        figure = _site_figure(ctx, state, site, results["sites"].get(site.site_id, {}))
        if figure is not None:
            section.figures.append((f"site {site.site_id}", figure))
        else:
            section.paragraphs.append(f"site {site.site_id}: no synthetic archive yet.")
    return section


def limits_section(ctx: DemoContext, results: dict[str, Any]) -> Section:
    """What this profile cannot afford, and the prevalence numbers behind the bars."""
    return Section(
        LIMITS_TITLE,
        [_limits(ctx)],
        [
            (
                "Label prevalence (real: the generator's training split; synthetic: the archive)",
                ["site", "label", "real", "synthetic", "gap (points)"],
                _prevalence_rows(results),
            )
        ],
    )
