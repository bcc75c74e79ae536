"""The demo's HTML report: one self-contained ``<out>/report/index.html`` with every section.

Sections, in order: at a glance (per site: real and synthetic images side by side, label
prevalence, real-only / site-synthetic / pooled AUCs, the demo's targets; see
:mod:`deployment.glance`, which also writes ``results.json``), what the demo cannot afford,
what ran (every step, its status, seconds and error), synthetic
sample grids per site (drawn at the hub from the pulled, signature-checked generator),
label prevalence real versus synthetic with 95% CIs, memorisation audit histograms, the
classifier comparison table, and where the logs are. A section whose inputs are missing
says which step failed or is blocked, and why. Only aggregates and generated images
appear: the real prevalence comes from the generator manifest's counts (what the hub
receives), never from a real image.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from deployment.glance import (
    GLANCE_TITLE,
    LIMITS_TITLE,
    demo_results,
    glance_section,
    limits_section,
)
from deployment.site_steps import DemoContext
from deployment.state import DemoState
from hub.quality.prevalence import PrevalenceCI, plot_prevalence, prevalence_ci
from hub.quality.report import Section, write_report
from shared.fileio import atomic_write_text
from shared.labels import NIH_LABELS

__all__ = ["RESULTS_FILE", "SECTION_TITLES", "write_demo_report"]

#: ``<out>/report/results.json``: the first screen's numbers and threshold checks.
RESULTS_FILE = "results.json"

log = logging.getLogger("radshare.demo.report")

SECTION_TITLES = (
    GLANCE_TITLE,
    LIMITS_TITLE,
    "What ran",
    "Synthetic samples per site",
    "Label prevalence: real versus synthetic",
    "Memorisation audit",
    "Classifier comparison",
    "Logs and services",
)


def _why_missing(state: DemoState, *steps: str) -> str:
    """'step X failed: ...' for the first of ``steps`` that is not done."""
    for step in steps:
        record = state.get(step)
        if record is None:
            return f"step {step} did not run"
        if record.status != "done":
            first = (record.error or "").strip().splitlines()
            return f"step {step} is {record.status}: {first[0] if first else 'no detail'}"
    return "its inputs are missing"


def _steps_section(state: DemoState, elapsed_s: float, ctx: DemoContext) -> Section:
    rows: list[list[object]] = []
    for name, record in state.steps().items():
        error = (record.error or "").strip().splitlines()
        rows.append(
            [name, record.status, round(record.elapsed_s, 1), error[0][:200] if error else ""]
        )
    done = sum(1 for r in state.steps().values() if r.status == "done")
    text = [
        f"Profile {ctx.config.profile}; {len(ctx.config.sites)} sites; "
        f"{done}/{len(rows)} steps done; this run took {elapsed_s / 60:.1f} min.",
        "Each site kept its images, labels, cache, discriminator and audit panel; what left "
        "a site: the signed G_ema bundle, the audit's aggregate numbers, federated replies.",
    ]
    return Section(SECTION_TITLES[2], text, [("Steps", ["step", "status", "s", "error"], rows)])


def _hub_grid(bundle: Path, hub_root: Path, seed: int, num_images: int = 32) -> np.ndarray:
    """A grid of ``num_images`` samples drawn at the hub from a pulled generator bundle."""
    import torch

    from hub.trust import HubKeyring
    from shared.artifacts.generator import load_generator

    G = load_generator(bundle, HubKeyring.at_root(hub_root))  # verified with the hub's keys
    z = torch.randn(num_images, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = ((G(z).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()
    return _grid(images)


def _grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    rows = -(-len(images) // columns)
    size = images.shape[-1]
    canvas = np.zeros((rows * (size + 2), columns * (size + 2)), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (size + 2) : r * (size + 2) + size, c * (size + 2) : c * (size + 2) + size] = (
            image
        )
    return np.kron(canvas, np.ones((max(1, 64 // size),) * 2, dtype=np.uint8))


def _samples_section(ctx: DemoContext, state: DemoState) -> Section:
    section = Section(SECTION_TITLES[3])
    for site in ctx.config.sites:
        pulled = state.outputs(f"hub.pull.{site.site_id}").get("bundle")
        try:
            if pulled:
                section.figures.append(
                    (
                        f"site {site.site_id}: 32 samples drawn at the hub",
                        _hub_grid(Path(pulled), ctx.layout.registry, ctx.config.seed),
                    )
                )
                continue
        except Exception as error:  # a bad bundle must not stop the report
            section.paragraphs.append(f"site {site.site_id}: cannot sample its bundle: {error}")
        grid = state.outputs(f"site.{site.site_id}.train").get("grid")
        if grid:
            from PIL import Image

            image = np.asarray(Image.open(grid).convert("L"))
            section.figures.append(
                (f"site {site.site_id}: training sample grid (at the site)", image)
            )
        else:
            why = _why_missing(state, f"site.{site.site_id}.train", f"hub.pull.{site.site_id}")
            section.paragraphs.append(f"site {site.site_id}: no samples, because {why}.")
    return section


def _real_counts(
    ctx: DemoContext, state: DemoState, site_id: str
) -> tuple[int, dict[str, int]] | None:
    manifest = state.outputs(f"hub.pull.{site_id}").get("manifest")
    if manifest:
        return int(manifest["data"]["num_images"]), dict(manifest["data"]["counts_per_label"])
    return None


def _synthetic_labels(archive: Path) -> np.ndarray:
    """0/1 ``[N, 15]`` in NIH label order from an archive's CSV (``Finding Labels``)."""
    csv_path = next(
        (p for p in (archive / "labels.csv", archive / "Data_Entry.csv") if p.is_file()), None
    )
    if csv_path is None:
        csv_path = next(archive.glob("*.csv"))
    with csv_path.open(newline="") as handle:
        found = [set(row["Finding Labels"].split("|")) for row in csv.DictReader(handle)]
    rows = [[label in f for label in NIH_LABELS] for f in found]
    return np.array(rows, dtype=np.float32).reshape(len(rows), len(NIH_LABELS))


def _counts_as_labels(num_images: int, counts: dict[str, int]) -> np.ndarray:
    """A 0/1 matrix with the same per-label counts (all a binomial bootstrap needs)."""
    labels = np.zeros((num_images, len(NIH_LABELS)), dtype=np.float32)
    for column, label in enumerate(NIH_LABELS):
        labels[: min(num_images, counts.get(label, 0)), column] = 1.0
    return labels


def _prevalence_section(ctx: DemoContext, state: DemoState) -> Section:
    section = Section(SECTION_TITLES[4])
    section.paragraphs.append(
        "Real: the training-set counts in each generator's manifest (what the hub receives). "
        "Synthetic: the archive's Finding Labels. 95% percentile bootstrap CIs (10,000 resamples)."
    )
    for site in ctx.config.sites:
        real = _real_counts(ctx, state, site.site_id)
        archive = state.outputs(f"hub.synthesize.{site.site_id}").get("archive")
        if real is None or archive is None:
            why = _why_missing(state, f"hub.pull.{site.site_id}", f"hub.synthesize.{site.site_id}")
            section.paragraphs.append(f"site {site.site_id}: no comparison, because {why}.")
            if real is not None:
                section.tables.append(
                    _prevalence_table(site.site_id, prevalence_ci(_counts_as_labels(*real)), None)
                )
            continue
        real_ci = prevalence_ci(_counts_as_labels(*real))
        synthetic_ci = prevalence_ci(_synthetic_labels(Path(archive)))
        section.tables.append(_prevalence_table(site.site_id, real_ci, synthetic_ci))
        section.figures.append(
            (f"site {site.site_id}", plot_prevalence(NIH_LABELS, real_ci, synthetic_ci))
        )
    return section


def _prevalence_table(site_id: str, real: PrevalenceCI, synthetic: PrevalenceCI | None) -> tuple:
    header = ["label", "real", "real 95% CI", "synthetic", "synthetic 95% CI"]
    rows: list[list[object]] = []
    for i, label in enumerate(NIH_LABELS):
        row: list[object] = [
            label,
            float(real.estimate[i]),
            f"{real.low[i]:.3f}–{real.high[i]:.3f}",
        ]
        if synthetic is None:
            row += ["–", "–"]
        else:
            row += [float(synthetic.estimate[i]), f"{synthetic.low[i]:.3f}–{synthetic.high[i]:.3f}"]
        rows.append(row)
    caption = f"site {site_id}: real n={real.num_images}" + (
        f", synthetic n={synthetic.num_images}" if synthetic else ""
    )
    return caption, header, rows


def _histogram_figure(title: str, histograms: dict[str, dict[str, Any]]) -> Figure:
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    for name, histogram in histograms.items():
        edges, counts = np.asarray(histogram["bin_edges"]), np.asarray(histogram["counts"])
        ax.stairs(counts, edges, label=name)
    ax.set(xlabel="best SSIM of each generated image against the training split", ylabel="images")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def _audit_section(ctx: DemoContext, state: DemoState) -> Section:
    section = Section(SECTION_TITLES[5])
    local: dict[str, dict[str, Any]] = {}
    rows: list[list[object]] = []
    for site in ctx.config.sites:
        outputs = state.outputs(f"site.{site.site_id}.audit")
        if outputs.get("histogram"):
            local[f"site {site.site_id}"] = outputs["histogram"]
            rows.append(
                [f"site {site.site_id} (local)", outputs.get("passed"), outputs.get("near_copies")]
            )
        else:
            why = _why_missing(state, f"site.{site.site_id}.audit")
            section.paragraphs.append(f"site {site.site_id}: no local audit, because {why}.")
    if local:
        section.figures.append(
            ("local audits (before publishing)", _histogram_figure("local audit", local))
        )
    federated = state.get("hub.federated-audit")
    sites = (federated.outputs.get("sites") if federated else None) or {}
    fed_histograms = {
        f"site {k}": v["histogram"]
        for k, v in sites.items()
        if isinstance(v, dict) and v.get("histogram")
    }
    for site_id, value in sites.items():
        if isinstance(value, dict) and "histogram" in value:
            rows.append(
                [f"site {site_id} (federated)", value.get("passed"), value.get("near_copies")]
            )
        else:
            why = value.get("unavailable", value) if isinstance(value, dict) else value
            rows.append([f"site {site_id} (federated)", "unavailable", str(why)[:160]])
    if fed_histograms:
        section.figures.append(
            ("federated audit", _histogram_figure("federated audit", fed_histograms))
        )
    else:
        section.paragraphs.append(
            f"Federated audit: no results, because {_why_missing(state, 'hub.federated-audit')}."
        )
    if federated is not None and federated.status == "partial":
        section.paragraphs.append(f"Federated audit incomplete: {federated.error}.")
    header = ["audit", "passed", "near copies (or why unavailable)"]
    section.tables.append(("Audit verdicts", header, rows))
    return section


def _macro_auc_rows(
    columns: list[str], rows: list[list[Any]]
) -> tuple[list[str], list[list[object]]]:
    """Mean AUC over labels, one row per setting and one column per site."""
    index = {name: i for i, name in enumerate(columns)}
    values: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        try:
            auc = float(row[index["auc"]])
        except (TypeError, ValueError):
            continue
        if np.isfinite(auc):
            values.setdefault((str(row[index["setting"]]), str(row[index["site"]])), []).append(auc)
    sites = sorted({site for _, site in values})
    settings = sorted({setting for setting, _ in values})
    table: list[list[object]] = [
        [setting, *(float(np.mean(values.get((setting, site), [np.nan]))) for site in sites)]
        for setting in settings
    ]
    return ["trained on", *(f"site {site}" for site in sites)], table


def _comparison_section(ctx: DemoContext, state: DemoState) -> Section:
    section = Section(SECTION_TITLES[6])
    record = state.get("hub.federated-evaluate")
    table = (record.outputs.get("table") if record else None) or None
    if not table or record is None:
        why = _why_missing(state, "hub.classifiers", "hub.federated-evaluate")
        section.paragraphs.append(f"No comparison table, because {why}.")
        return section
    section.paragraphs.append(
        "Each classifier was evaluated at each site on its real test split (federated; only "
        "AUCs and counts came back). real: trained at the site on its real train split; "
        "site-synthetic: trained on that site's synthetic archive; pooled: trained on the "
        f"pooled archive of every site. Full report: {record.outputs.get('report', '')}"
    )
    header, macro = _macro_auc_rows(table["columns"], table["rows"])
    section.tables.append(("Mean AUC over labels", header, macro))
    section.tables.append(("Per label (95% bootstrap CI)", table["columns"], table["rows"]))
    return section


def _logs_section(ctx: DemoContext, state: DemoState) -> Section:
    logs = sorted(p.name for p in ctx.layout.logs.glob("*.log"))
    text = [
        "Structured logs (one key=value line each, tagged with the component) are in "
        f"{ctx.layout.logs}: " + ", ".join(logs),
        f"Resumable state: {ctx.layout.state}. Run the demo again to redo what is not done.",
    ]
    services = state.outputs("services")
    rows: list[list[object]] = [[k, str(v)] for k, v in services.items() if k != "logs"]
    return Section(
        SECTION_TITLES[7], text, [("Services of the last run", ["service", "address"], rows)]
    )


def write_demo_report(ctx: DemoContext, state: DemoState, *, elapsed_s: float) -> Path:
    """Write ``<out>/report/index.html`` with every section (missing inputs explained)."""
    ctx.layout.report.mkdir(parents=True, exist_ok=True)
    try:
        results = demo_results(ctx, state, elapsed_s)
    except Exception as error:  # the report is written whatever happened
        log.exception("demo results failed")
        results = {"error": f"{type(error).__name__}: {error}", "sites": {}}
    atomic_write_text(ctx.layout.report / RESULTS_FILE, json.dumps(results, indent=2))
    builders = (
        lambda: glance_section(ctx, state, results),
        lambda: limits_section(ctx, results),
        lambda: _steps_section(state, elapsed_s, ctx),
        lambda: _samples_section(ctx, state),
        lambda: _prevalence_section(ctx, state),
        lambda: _audit_section(ctx, state),
        lambda: _comparison_section(ctx, state),
        lambda: _logs_section(ctx, state),
    )
    sections = []
    for title, build in zip(SECTION_TITLES, builders, strict=True):
        try:
            sections.append(build())
        except Exception as error:  # the report always has every section
            log.exception("report section %r failed", title)
            sections.append(
                Section(
                    title, [f"This section could not be built: {type(error).__name__}: {error}"]
                )
            )
    path = write_report(ctx.layout.report / "index.html", "radshare demo", sections)
    (ctx.layout.report / "state.json").write_text(
        json.dumps({n: r.status for n, r in state.steps().items()})
    )
    return path
