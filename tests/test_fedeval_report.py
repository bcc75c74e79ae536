"""The hub's comparison table and HTML report, from hand-made site replies."""

from __future__ import annotations

import pandas as pd

from hub.evaluation.comparison import (
    comparison_table,
    load_evaluations,
    markdown_table,
    save_evaluations,
)
from hub.evaluation.report import write_report
from shared.evaluation_records import ClassResult, SiteEvaluation

GRID = [i / 4 for i in range(5)]


def _result(name, auc, n_pos=10, n_neg=40, source="site-val"):
    return ClassResult(
        name=name,
        n_pos=n_pos,
        n_neg=n_neg,
        threshold_source=source,
        auc=auc,
        auc_low=auc - 0.1,
        auc_high=auc + 0.05,
        roc_tpr=[0.0, 0.5, 0.7, 0.9, 1.0],
    )


def _evaluation(site, tag, auc):
    classes = [
        _result("Pneumonia", auc),
        ClassResult(name="Effusion", n_pos=0, n_neg=0, threshold_source="not-annotated"),
    ]
    return SiteEvaluation(
        site_id=site,
        tag=tag,
        split="test",
        n_images=50,
        num_resamples=10_000,
        roc_fpr_grid=GRID,
        classes=classes,
    )


EVALUATIONS = [
    _evaluation("a", "real", 0.80),
    _evaluation("a", "synthetic:a", 0.70),
    _evaluation("a", "synthetic:b", 0.60),
    _evaluation("a", "pooled", 0.75),
    _evaluation("b", "real", 0.90),
    _evaluation("b", "synthetic:a", 0.55),
    _evaluation("b", "pooled", 0.85),
]


def test_comparison_maps_tags_to_settings_per_site():
    table = comparison_table(EVALUATIONS)
    got = {(r.site, r.setting): r.auc for r in table.itertuples()}
    assert got == {
        ("a", "pooled"): 0.75,
        ("a", "real"): 0.80,
        ("a", "site-synthetic"): 0.70,
        ("b", "pooled"): 0.85,
        ("b", "real"): 0.90,
    }
    assert set(table.label) == {"Pneumonia"}  # Effusion was not annotated anywhere it was asked
    md = markdown_table(table)
    row_a = "| a | Pneumonia | 10/40 | 0.800 [0.700, 0.850] | 0.700 [0.600, 0.750] | "
    assert row_a + "0.750 [0.650, 0.800] |" in md
    assert "| b | Pneumonia | 10/40 | 0.900 [0.800, 0.950] | – | 0.850 [0.750, 0.900] |" in md


def test_report_and_round_trip(tmp_path):
    save_evaluations(tmp_path / "evaluations.json", EVALUATIONS, {"node 3": "no reply"})
    loaded, failures = load_evaluations(tmp_path / "evaluations.json")
    assert loaded == EVALUATIONS and failures == {"node 3": "no reply"}
    html = write_report(tmp_path / "report.html", loaded, failures).read_text()
    assert html.count("<img") == 2  # one ROC figure per (site, label)
    assert "no reply" in html and "0.800 [0.700, 0.850]" in html
    assert isinstance(comparison_table([]), pd.DataFrame)
