"""The README's demo, end to end, as real processes: what `make demo` runs, at its size.

One phantom demo output (the ``tiny`` profile in CI, which has no time for the ``cpu``
profile's three runs; ``RADSHARE_DEMO_TEST_PROFILE=cpu`` runs what `make demo` runs and
checks issue 13's targets on it) is built in three invocations, like a person would:
1. started and stopped (SIGTERM) once the first site's data is ingested;
2. run again with a fault drill: site b's SuperNode is killed during the federated audit;
3. run again: it completes what is missing and skips what is done.
Then the demo's own numbers (``report/results.json``, from the federated evaluation and the
archives) are checked against issue 13's targets, recomputed here from the evaluation's
``comparison.csv`` and the archives' label files. ``test_demo_real_data.py`` runs the
demo on the team's real images and searches its logs for patient ids.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployment.report import SECTION_TITLES

# The three phantom invocations share one module fixture; on an idle 2-core machine the
# tiny profile takes about 5 minutes per full run (cpu: 10+), far longer on a loaded one.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(7200)]

REPO = Path(__file__).resolve().parent.parent
DEMO_TIMEOUT_S = 3000
PROFILE = os.environ.get("RADSHARE_DEMO_TEST_PROFILE", "tiny")


def _demo(
    out: Path, *args: str, timeout_s: float = DEMO_TIMEOUT_S, profile: str = PROFILE
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployment.demo", "--profile", profile, "--out", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _steps(out: Path) -> dict[str, dict]:
    return json.loads((out / "state.json").read_text())["steps"]


def _stop_after(out: Path, step: str, timeout_s: float = 600) -> None:
    """Start the demo, SIGTERM it once ``step`` is done, wait for it to exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "deployment.demo", "--profile", PROFILE, "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and process.poll() is None:
            state = out / "state.json"
            if state.is_file() and _steps(out).get(step, {}).get("status") == "done":
                break
            time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def phantom_demo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    _stop_after(out, "site.a.ingest")
    stopped = _steps(out)
    drill = _demo(out, "--kill-site-during-audit", "b")
    after_drill = _steps(out)
    started = time.monotonic()
    final = _demo(out)
    return {
        "out": out,
        "stopped": stopped,
        "drill": drill,
        "after_drill": after_drill,
        "final": final,
        "final_s": time.monotonic() - started,
    }


def test_stopped_demo_resumes_instead_of_starting_over(phantom_demo):
    stopped, steps = phantom_demo["stopped"], _steps(phantom_demo["out"])
    done_before = [name for name, r in stopped.items() if r["status"] == "done"]
    assert "site.a.ingest" in done_before
    for name in done_before:
        assert steps[name]["attempts"] == 1, f"{name} ran again after the stop"


def test_demo_completes_and_the_report_has_every_section(phantom_demo):
    final, out = phantom_demo["final"], phantom_demo["out"]
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert f"report: {out / 'report' / 'index.html'}" in final.stdout
    page = (out / "report" / "index.html").read_text()
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in page
    assert page.count("data:image/png;base64,") >= 2 + 2  # two sample grids, two prevalence plots
    unfinished = {n: r["status"] for n, r in _steps(out).items() if r["status"] != "done"}
    assert unfinished == {}


def _comparison_aucs(out: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Label → AUC per (site, setting), read from the evaluation's own comparison.csv."""
    values: dict[tuple[str, str], dict[str, float]] = {}
    with (out / "hub" / "federated" / "evaluate" / "comparison.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["auc"]:
                values.setdefault((row["site"], row["setting"]), {})[row["label"]] = float(
                    row["auc"]
                )
    return values


def _prevalence(labels_csv: Path, label: str) -> float:
    with labels_csv.open(newline="") as handle:
        rows = [set(r["Finding Labels"].split("|")) for r in csv.DictReader(handle)]
    return sum(label in r for r in rows) / len(rows)


def test_demo_results_agree_with_the_evaluation_and_the_archives(phantom_demo):
    """results.json (the first screen's numbers) against the files it summarises."""
    out = phantom_demo["out"]
    results = json.loads((out / "report" / "results.json").read_text())
    aucs = _comparison_aucs(out)
    for site, numbers in results["sites"].items():
        real = aucs[(site, "real")]
        synthetic = aucs[(site, "site-synthetic")]
        assert numbers["auc"]["real"] == pytest.approx(sum(real.values()) / len(real), abs=1e-3)
        # over the real-only classifier's labels; one the archive lacks scores chance (0.5)
        expected = sum(synthetic.get(label, 0.5) for label in real) / len(real)
        assert numbers["auc"]["synthetic"] == pytest.approx(expected, abs=1e-3)
        archive = out / "hub" / "archives" / site
        annotated = json.loads((archive / "manifest.json").read_text())["annotated_labels"]
        for label, p in numbers["prevalence"].items():
            if label not in annotated:
                assert p["synthetic"] is None and p["gap_pp"] is None
                continue
            share = _prevalence(archive / "Data_Entry.csv", label)
            assert p["synthetic"] == pytest.approx(share, abs=1e-9)
    manifest = json.loads((out / "hub" / "archives" / "a" / "manifest.json").read_text())
    assert manifest["unlabelled"] is False  # made by class optimisation


@pytest.mark.skipif(
    PROFILE != "cpu",
    reason="issue 13's targets are for the cpu profile (make demo): "
    "RADSHARE_DEMO_TEST_PROFILE=cpu (about 10 min; docs/demo.md has the runs)",
)
def test_demo_meets_the_product_targets(phantom_demo):
    """Issue 13: real-only mean AUC >= 0.85, synthetic >= 90% of it, prevalence within 10 pp."""
    results = json.loads((phantom_demo["out"] / "report" / "results.json").read_text())
    assert set(results["sites"]) == {"a", "b"}
    for site, numbers in results["sites"].items():
        real, synthetic = numbers["auc"]["real"], numbers["auc"]["synthetic"]
        gaps = {  # None: the archive does not annotate the label
            label: 100.0 if p["gap_pp"] is None else round(p["gap_pp"], 1)
            for label, p in numbers["prevalence"].items()
        }
        assert real >= 0.85, (site, numbers["auc"])
        assert synthetic >= 0.9 * real, (site, numbers["auc"])
        assert max(gaps.values()) <= 10.0, (site, gaps)


def test_killed_site_is_unavailable_during_the_audit_then_completed(phantom_demo):
    audit = phantom_demo["after_drill"]["hub.federated-audit"]
    assert audit["status"] == "partial", audit
    assert "histogram" in audit["outputs"]["sites"]["a"]
    assert "unavailable" in json.dumps(audit["outputs"]["sites"]["b"])
    completed = _steps(phantom_demo["out"])["hub.federated-audit"]
    assert completed["status"] == "done"
    assert {"a", "b"} <= set(completed["outputs"]["sites"])
    assert all("histogram" in v for v in completed["outputs"]["sites"].values())


def test_every_log_line_is_tagged_with_its_component(phantom_demo):
    logs = sorted((phantom_demo["out"] / "logs").glob("*.log"))
    assert {"demo.log", "hub.log", "superlink.log", "supernode-a.log", "site-a.log"} <= {
        p.name for p in logs
    }
    for path in logs:
        for line in path.read_text().splitlines():
            assert line.startswith("ts=") and " component=" in line, (path.name, line[:200])
