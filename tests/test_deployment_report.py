"""The demo report: every section is always there, and a missing input says which step and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deployment.config import DemoConfig
from deployment.layout import DemoLayout
from deployment.report import (
    SECTION_TITLES,
    _counts_as_labels,
    _synthetic_labels,
    write_demo_report,
)
from deployment.site_steps import DemoContext
from deployment.state import DemoState
from hub.quality.prevalence import prevalence_ci
from shared.labels import NIH_LABELS


def _context(tmp_path: Path) -> tuple[DemoContext, DemoState]:
    config = DemoConfig(out_dir=tmp_path, profile="tiny")
    layout = DemoLayout(tmp_path)
    layout.logs.mkdir(parents=True)
    (layout.logs / "demo.log").write_text("ts=1 component=demo msg=x\n")
    return DemoContext(config, config.resolved_settings(), layout), DemoState(layout.state, "{}")


def test_every_section_is_written_and_failures_are_explained(tmp_path: Path):
    ctx, state = _context(tmp_path)
    state.run("site.a.train", lambda _: (_ for _ in ()).throw(RuntimeError("out of memory")))
    state.run("hub.pull.a", lambda _: {}, needs=("site.a.train",))
    path = write_demo_report(ctx, state, elapsed_s=12.0)
    page = path.read_text()
    assert path == tmp_path / "report" / "index.html"
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in page
    assert "step site.a.train is failed: RuntimeError: out of memory" in page
    assert "No comparison table, because step hub.classifiers did not run" in page


def test_comparison_table_and_audit_histograms_are_shown(tmp_path: Path):
    ctx, state = _context(tmp_path)
    histogram = {"bin_edges": [0.0, 0.5, 1.0], "counts": [3, 1]}
    state.run("site.a.audit", lambda _: {"histogram": histogram, "passed": True, "near_copies": 0})
    state.run(
        "hub.federated-audit",
        lambda _: {"sites": {"a": {"histogram": histogram, "passed": True, "near_copies": 0},
                             "b": {"unavailable": "node b: code 5 Node Unavailable"}}},
    )  # fmt: skip
    columns = ["setting", "site", "label", "auc", "auc_low", "auc_high", "n_pos", "n_neg"]
    rows = [
        ["pooled", "a", "Effusion", "0.8", "0.7", "0.9", "10", "20"],
        ["pooled", "a", "Mass", "0.6", "0.5", "0.7", "10", "20"],
        ["real", "a", "Mass", "nan", "", "", "2", "20"],
    ]
    state.run("hub.federated-evaluate", lambda _: {"table": {"columns": columns, "rows": rows}})
    page = write_demo_report(ctx, state, elapsed_s=1.0).read_text()
    assert "Mean AUC over labels" in page and "<td>0.700</td>" in page  # mean of 0.8 and 0.6
    assert "unavailable" in page and "Node Unavailable" in page
    assert page.count("data:image/png;base64,") == 2  # local and federated histograms


def test_counts_reproduce_the_prevalence_a_site_reported():
    labels = _counts_as_labels(200, {"Effusion": 50, "No Finding": 120})
    ci = prevalence_ci(labels, num_resamples=2000)
    effusion = NIH_LABELS.index("Effusion")
    assert ci.estimate[effusion] == pytest.approx(0.25)
    assert ci.low[effusion] < 0.25 < ci.high[effusion]
    assert ci.estimate[NIH_LABELS.index("Mass")] == 0.0


def test_synthetic_labels_read_finding_labels(tmp_path: Path):
    (tmp_path / "labels.csv").write_text(
        "Image Index,Finding Labels\n1.png,Effusion|Mass\n2.png,No Finding\n"
    )
    labels = _synthetic_labels(tmp_path)
    assert labels.shape == (2, len(NIH_LABELS))
    expected = np.zeros((2, len(NIH_LABELS)), dtype=np.float32)
    expected[0, [NIH_LABELS.index("Effusion"), NIH_LABELS.index("Mass")]] = 1
    expected[1, NIH_LABELS.index("No Finding")] = 1
    np.testing.assert_array_equal(labels, expected)
