"""A match-site archive keeps the site's label prevalence (issue 13, 5): sites A and B.

Per site, a tiny PGGAN and a small DenseNet labeller (``small_network``) are trained on
the site's real images at 32 px (site A's are shared with ``test_classopt_site_a.py`` and
``test_labeller_site_a.py``). The check is independent of the code under test: the site's
prevalence is read from the site's cache table (train split), the archive's from its
``Data_Entry.csv``, and the patient-bootstrap CI is a plain resampling loop. 45 images
(9 patients) give CIs of +-0.2-0.4, so this catches gross drift (a label the archive loses
or floods), not a close miss.

The labeller calls only the classes whose validation AUC is above chance with 95%
confidence (``usable_thresholds``). Site B's always include Pneumonia. Site A's small
labeller is near chance at 32 px: measured runs called Consolidation, or no class at all,
in which case the hub refuses to synthesise and site A's case skips with that refusal.
Before the rule, findings at val AUC 0.53-0.57 were targets and 4 of 5 No Finding patients
were abandoned. Abandoned patients bias prevalence, so fewer than 70% written fails.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_classopt_site_a import site_a_generator
from test_labeller_site_a import site_cache, trained_site_a_labeller

from hub.synthesis.class_optimisation import ClassOptimisationSettings
from hub.synthesis.local_sampling import LocalSamplingSettings
from hub.synthesis.pipeline import SynthesisOptions, synthesize
from shared.errors import LabelError

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

NUM_IMAGES = 45
SMALL_LABELLER = dict(
    max_epochs=12, early_stop_patience_epochs=5, bootstrap_resamples=200, small_network=True
)
MIN_WRITTEN_SHARE = 0.7  # fewer written patients: abandoned targets bias the prevalence


def _sources(tmp_path_factory, site_dir: Path, site: str) -> tuple[Path, Path, Path]:
    """The site's cache, tiny PGGAN export and small labeller export (built once)."""
    name = f"site-{site}-labeller-small-32"
    labeller = trained_site_a_labeller(tmp_path_factory, site_dir, name, site, **SMALL_LABELLER)
    generator = site_a_generator(tmp_path_factory, site_dir, site)
    return site_cache(tmp_path_factory, site_dir, site), generator / "export", labeller / "export"


@pytest.fixture(scope="module", params=["a", "b"])
def archive(request, tmp_path_factory):
    site = request.param
    data = request.getfixturevalue(f"site_{site}")
    cache, generator, labeller = _sources(tmp_path_factory, data, site)
    out = tmp_path_factory.mktemp(f"prevalence-{site}") / "archive"
    options = SynthesisOptions(
        generator=str(generator), labeller=str(labeller), out_dir=out,
        num_images=NUM_IMAGES, labels="match-site", seed=0, device="cpu",
        trust_local_export=True,  # the default retry budget (20 attempts)
        optimisation=ClassOptimisationSettings(batch_size=32, max_steps=100,
                                               plateau_patience_steps=30),
        sampling=LocalSamplingSettings(batch_size=64, max_draws_per_image=50),
    )  # fmt: skip
    try:
        manifest = synthesize(options)
    except LabelError as error:
        if site == "b":
            raise
        # Site a at 32 px: the small labeller's validation AUCs are 0.4-0.8 on 5-30
        # positives; some runs call one class with 95% confidence, some none, and the hub
        # then refuses (the behaviour asked for). Site b always has a callable class.
        pytest.skip(f"site a: the small labeller calls no class; the hub refused: {error}")
    return out, manifest, cache


def _expected_targets(cache: Path, annotated: list[str]) -> dict[str, float]:
    """The site's train-split prevalence; No Finding per the joint model's documented rule."""
    table = pd.read_csv(cache / "table.csv")
    train = table[table.split == "train"]
    findings = [n for n in annotated if n != "No Finding"]
    targets = {n: float(train[n].mean()) for n in findings}
    p0 = float(train["No Finding"].mean())
    callable_sum = sum(targets.values())
    targets["No Finding"] = p0 if callable_sum > 1 - p0 else 1 - callable_sum
    return targets


def _patient_bootstrap(rows: list[dict], labels: list[str], resamples: int = 2000):
    by_patient: dict[str, list[set[str]]] = {}
    for r in rows:
        by_patient.setdefault(r["Patient ID"], []).append(set(r["Finding Labels"].split("|")))
    series = list(by_patient.values())
    rng = np.random.default_rng(123)
    draws = []
    for _ in range(resamples):
        pick = [series[i] for i in rng.integers(0, len(series), len(series))]
        images = [im for s in pick for im in s]
        draws.append([np.mean([lab in im for im in images]) for lab in labels])
    low, high = np.quantile(np.array(draws), [0.025, 0.975], axis=0)
    for i, lab in enumerate(labels):  # no (or every) image carries it: exact CI on patients
        share = np.mean([lab in im for s in series for im in s])
        if share in (0.0, 1.0):
            k = int(share) * len(series)
            ci = stats.binomtest(k, len(series)).proportion_ci(0.95, method="exact")
            low[i], high[i] = ci.low, ci.high
    return low, high


def test_archive_prevalence_stays_within_its_ci_of_the_site_prevalence(archive):
    out, manifest, cache = archive
    plan = json.loads((out / "plan.json").read_text())["patients"]
    with open(out / "Data_Entry.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = manifest.annotated_labels
    # Achieved labels are the target vectors (see the next test): exclusivity holds.
    targets = _expected_targets(cache, labels)
    low, high = _patient_bootstrap(rows, labels)
    prevalence = json.loads((out / "prevalence.json").read_text())
    report = {r["label"]: r for r in prevalence["labels"]}
    written = {r["Patient ID"] for r in rows}
    abandoned = sorted(
        "|".join(p["target_labels"]) for p in plan if str(p["patient_id"]) not in written
    )
    assert prevalence["patients_written"] == len(written) == manifest.num_patients
    assert prevalence["patients_abandoned"] == len(abandoned)
    print(f"\n{'label':20s} target  archive  95% CI (patients)")
    for i, label in enumerate(labels):
        achieved = np.mean([label in r["Finding Labels"].split("|") for r in rows])
        print(f"{label:20s} {targets[label]:.3f}  {achieved:.3f}  [{low[i]:.3f}, {high[i]:.3f}]")
        assert report[label]["achieved"] == pytest.approx(achieved, abs=1e-12)
        assert report[label]["target"] == pytest.approx(targets[label], abs=1e-9)
    assert len(written) >= MIN_WRITTEN_SHARE * len(plan), (
        f"only {len(written)}/{len(plan)} patients written (abandoned targets: {abandoned})"
    )
    for i, label in enumerate(labels):
        assert low[i] <= targets[label] <= high[i], f"{label}: prevalence left its CI"


def test_no_finding_patients_carry_no_finding(archive):
    out, _, _ = archive
    plan = {p["patient_id"]: p for p in json.loads((out / "plan.json").read_text())["patients"]}
    with open(out / "Data_Entry.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for r in rows:
        labels = r["Finding Labels"].split("|")
        assert labels == ["No Finding"] or "No Finding" not in labels
        target = plan[int(r["Patient ID"])]["target_labels"]
        assert sorted(labels) == sorted(target), (r["Image Index"], labels, target)
