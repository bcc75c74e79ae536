"""The demo's first-screen numbers (deployment.glance) from files laid out as a demo leaves them.

A state file, a generator manifest's counts, an archive's Data_Entry.csv and an evaluation
table are written by hand; the expected means, gaps and threshold verdicts are computed
here by hand, not by the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployment import hub_steps
from deployment.commands import StepFailedError
from deployment.config import DemoConfig
from deployment.demo import _fingerprint
from deployment.glance import demo_results, glance_section
from deployment.layout import DemoLayout
from deployment.site_steps import DemoContext, site_classes
from deployment.state import DemoState, StepRecord
from site_node.phantom.series import plan_site
from site_node.phantom.style import DEMO_FINDINGS, get_style

COLUMNS = ["setting", "site", "label", "n_pos", "n_neg", "auc", "auc 95% CI"]


def _archive(folder: Path, labels: list[str]) -> Path:
    (folder / "images").mkdir(parents=True)
    rows = [f"{i:08d}_000.png,{cell},0,{i},,," for i, cell in enumerate(labels)]
    for i in range(len(labels)):
        Image.fromarray(np.full((32, 32), 8 * i, np.uint8)).save(folder / f"images/{i:08d}_000.png")
    header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View"
    (folder / "Data_Entry.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def _record_site_a(state: DemoState, manifest: dict, archive: Path, rows: list[list]) -> None:
    """What the demo's steps record: the pulled manifest, the archive, the evaluation table."""
    state.set("hub.pull.a", StepRecord(status="done", outputs={"manifest": manifest}))
    state.set("hub.synthesize.a", StepRecord(status="done", outputs={"archive": str(archive)}))
    table = {"columns": COLUMNS, "rows": rows}
    state.set("hub.federated-evaluate", StepRecord(status="done", outputs={"table": table}))


def _context(tmp_path: Path) -> tuple[DemoContext, DemoState]:
    config = DemoConfig(out_dir=tmp_path / "out", profile="tiny")
    layout = DemoLayout(config.out_dir)
    layout.out.mkdir(parents=True)
    state = DemoState(layout.state, _fingerprint(config))
    return DemoContext(config, config.resolved_settings(), layout), state


def test_results_are_means_gaps_and_verdicts_of_the_demo_files(tmp_path):
    ctx, state = _context(tmp_path)
    counts = {"Cardiomegaly": 25, "Effusion": 30, "Pneumothorax": 20, "No Finding": 40}
    manifest = {"data": {"num_images": 100, "counts_per_label": counts}}
    # 10 synthetic images: Cardiomegaly 3 (gap 5 pp), Effusion 3, Pneumothorax 2, No Finding 4.
    cells = ["Cardiomegaly|Effusion"] * 2 + ["Cardiomegaly", "Effusion"]
    cells += ["Pneumothorax"] * 2 + ["No Finding"] * 4
    archive = _archive(tmp_path / "arch-a", cells)
    rows = [
        ["real", "a", "Cardiomegaly", 9, 30, 0.9, ""],
        ["real", "a", "Effusion", 9, 30, 0.8, ""],
        ["real", "a", "Pneumothorax", 2, 37, "– (withheld)", ""],
        ["site-synthetic", "a", "Cardiomegaly", 9, 30, 0.85, ""],
        ["site-synthetic", "a", "Effusion", 9, 30, 0.65, ""],
        ["pooled", "a", "Cardiomegaly", 9, 30, 0.7, ""],
        ["real", "b", "Cardiomegaly", 9, 30, 0.1, ""],
    ]
    _record_site_a(state, manifest, archive, rows)

    site = demo_results(ctx, state, elapsed_s=1.0)["sites"]["a"]

    assert site["auc"]["real"] == pytest.approx(0.85)  # (0.9 + 0.8) / 2, withheld skipped
    assert site["auc"]["synthetic"] == pytest.approx(0.75)
    assert site["auc"]["pooled"] == pytest.approx(0.6)  # (0.7 + chance 0.5 for Effusion) / 2
    assert site["auc"]["synthetic_fraction_of_real"] == pytest.approx(0.75 / 0.85)
    gaps = {label: round(v["gap_pp"], 6) for label, v in site["prevalence"].items()}
    assert gaps == {"Cardiomegaly": 5.0, "Effusion": 0.0, "Pneumothorax": 0.0, "No Finding": 0.0}
    assert site["checks"] == {
        "real_mean_auc": True,
        "synthetic_keeps_real_auc": False,  # 0.75 / 0.85 = 88%
        "prevalence_within_gap": True,
    }
    # Site b has no archive yet: its prevalence check has nothing to check, and says so.
    section = glance_section(ctx, state, demo_results(ctx, state, elapsed_s=1.0))
    assert any("site b: no synthetic archive yet" in p for p in section.paragraphs)


def test_a_label_the_archive_does_not_annotate_counts_as_chance_and_misses_prevalence(tmp_path):
    ctx, state = _context(tmp_path)
    counts = {"Cardiomegaly": 25, "Effusion": 30, "Pneumothorax": 20, "No Finding": 40}
    manifest = {"data": {"num_images": 100, "counts_per_label": counts}}
    cells = ["Cardiomegaly"] * 3 + ["Effusion"] * 3 + ["No Finding"] * 4
    archive = _archive(tmp_path / "arch-a", cells)
    annotated = ["Cardiomegaly", "Effusion", "No Finding"]  # Pneumothorax: not callable
    (archive / "manifest.json").write_text(json.dumps({"annotated_labels": annotated}))
    rows = [
        ["real", "a", "Cardiomegaly", 9, 30, 0.9, ""],
        ["real", "a", "Effusion", 9, 30, 0.9, ""],
        ["real", "a", "Pneumothorax", 9, 30, 0.8, ""],
        ["site-synthetic", "a", "Cardiomegaly", 9, 30, 0.9, ""],
        ["site-synthetic", "a", "Effusion", 9, 30, 0.85, ""],
    ]
    _record_site_a(state, manifest, archive, rows)

    results = demo_results(ctx, state, elapsed_s=1.0)
    site = results["sites"]["a"]

    # (0.9 + 0.85 + 0.5) / 3 over the real-only classifier's labels, not (0.9 + 0.85) / 2.
    assert site["auc"]["synthetic"] == pytest.approx(0.75)
    assert site["auc"]["synthetic_labels_at_chance"] == ["Pneumothorax"]
    assert site["auc"]["synthetic_fraction_of_real"] == pytest.approx(0.75 / (2.6 / 3))
    assert site["prevalence"]["Pneumothorax"] == {"real": 0.2, "synthetic": None, "gap_pp": None}
    assert site["prevalence"]["Cardiomegaly"]["gap_pp"] == pytest.approx(5.0)
    assert site["checks"]["prevalence_within_gap"] is False
    section = glance_section(ctx, state, results)
    assert any("does not annotate Pneumothorax" in p for p in section.paragraphs)


def test_no_classifier_is_trained_on_an_archive_of_fewer_than_two_patients(tmp_path):
    ctx, state = _context(tmp_path)
    one_patient = _archive(tmp_path / "arch-a", ["Cardiomegaly"])  # Patient ID 0
    empty = _archive(tmp_path / "arch-b", [])
    pool = _archive(tmp_path / "pool", ["Effusion"])
    (pool / "Data_Entry.csv").rename(pool / "Data_Entry_pool.csv")  # the pool's layout
    for site, archive in (("a", one_patient), ("b", empty)):
        outputs = {"archive": str(archive)}
        state.set(f"hub.synthesize.{site}", StepRecord(status="done", outputs=outputs))
    state.set("hub.pool", StepRecord(status="done", outputs={"pool": str(pool)}))
    with pytest.raises(StepFailedError) as raised:
        hub_steps.train_classifiers(ctx, state)
    message = str(raised.value)
    assert message.count("needs at least 2") == 3, message
    assert "holds 1 synthetic patient(s)" in message and "holds 0" in message
    assert not (ctx.layout.hub / "classifiers").exists()  # nothing was started


def test_demo_styles_draw_only_the_demo_findings_at_a_visible_severity():
    for name in ("demo-a", "demo-b"):
        style = get_style(name)
        plans = plan_site(300, style, seed=3)
        drawn = {f.label for plan in plans for f in plan.findings}
        assert drawn == set(DEMO_FINDINGS)
        assert min(f.severity for plan in plans for f in plan.findings) >= style.severity_floor
        # every finding common enough for a test split of ~60 images to hold positives
        for label in DEMO_FINDINGS:
            share = sum(label in plan.finding_labels.split("|") for plan in plans) / len(plans)
            assert share >= 0.1, (name, label, share)


def test_a_phantom_site_learns_its_style_labels_and_a_real_site_all():
    config = DemoConfig()
    assert site_classes(config.sites[0]) == [*sorted(DEMO_FINDINGS), "No Finding"]
    real = config.sites[0].model_copy(update={"data_dir": Path("/data/a")})
    assert site_classes(real) is None


def test_the_demo_labeller_is_small_and_its_export_rebuilds_small(tmp_path):
    """``train-labeller --small-network`` (the cpu profile's) records its size in the card."""
    from test_labeller_training import _synthetic_cache

    from shared.artifacts.labeller import load_labeller_export
    from site_node.labeller.train import SMALL_NETWORK, LabellerTrainOptions, train_labeller

    options = LabellerTrainOptions(
        cache_dir=_synthetic_cache(tmp_path / "cache"),
        out_dir=tmp_path / "run",
        resolution_px=32,
        class_names=["Mass", "No Finding"],
        max_epochs=1,
        batch_size=8,
        bootstrap_resamples=20,
        progress_bar=False,
        small_network=True,
    )
    result = train_labeller(options)
    network, card = load_labeller_export(result.export_dir, trust_local_export=True)
    assert card.labeller_config.init_features == SMALL_NETWORK["init_features"] == 16
    assert card.labeller_config.block_config == (2, 2, 2, 2)
    parameters = sum(p.numel() for p in network.parameters())
    assert parameters < 100_000  # DenseNet-121 has about 7 million
