"""make_phantom_site and ``radshare-site phantom``: an NIH-layout site with follow-up series."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from shared.errors import ConfigError
from shared.labels import NIH_FINDINGS, NO_FINDING, parse_finding_labels
from site_node.cli import app
from site_node.phantom import NIH_HEADER, get_style, make_phantom_site, render_phantom
from site_node.phantom.render import render_study
from site_node.phantom.series import StudyPlan, plan_site

NIH_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-image hospital-a site at 128 px."""
    out = tmp_path_factory.mktemp("phantom") / "site"
    make_phantom_site(out, 40, style="hospital-a", resolution_px=128, seed=11)
    return out


def _digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            sha.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return sha.hexdigest()


def test_csv_has_the_nih_columns_and_header_quirk(site: Path) -> None:
    table = pd.read_csv(site / "labels.csv")
    assert list(table.columns[: len(NIH_COLUMNS)]) == NIH_COLUMNS
    first_line = (site / "labels.csv").read_text().splitlines()[0]
    assert first_line == NIH_HEADER
    assert first_line.startswith(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )
    assert len(table) == 40
    assert set(table["View Position"]) <= {"PA", "AP"}
    assert set(table["Patient Gender"]) <= {"M", "F"}
    assert (table["OriginalImage[Width"] == 128).all() and (table["Height]"] == 128).all()


def test_csv_columns_match_the_real_nih_sample(site: Path, site_a: Path) -> None:
    real = pd.read_csv(site_a / "labels.csv", nrows=5)
    phantom = pd.read_csv(site / "labels.csv", nrows=5)
    assert list(phantom.columns) == list(real.columns)
    assert (site / "labels.csv").read_text().splitlines()[0] == (
        (site_a / "labels.csv").read_text().splitlines()[0]
    )


def test_every_row_has_its_8bit_image_and_nothing_else_is_there(site: Path) -> None:
    table = pd.read_csv(site / "labels.csv")
    on_disk = sorted(p.name for p in (site / "images").iterdir())
    assert on_disk == sorted(table["Image Index"])
    for name in table["Image Index"][:5]:
        with Image.open(site / "images" / name) as image:
            assert image.mode == "L" and image.size == (128, 128)


def test_image_index_names_patient_and_follow_up(site: Path) -> None:
    table = pd.read_csv(site / "labels.csv")
    for row in table.itertuples(index=False):
        name = row[0]
        assert re.fullmatch(r"\d{8}_\d{3}\.png", name), name
        assert name == f"{row[3]:08d}_{row[2]:03d}.png"


def test_labels_parse_into_the_nih_label_space(site: Path) -> None:
    table = pd.read_csv(site / "labels.csv")
    for cell in table["Finding Labels"]:
        labels = parse_finding_labels(cell)
        assert labels == [NO_FINDING] or (NO_FINDING not in labels and labels == sorted(labels))


def test_patients_have_follow_up_series_of_one_to_four(site: Path) -> None:
    table = pd.read_csv(site / "labels.csv")
    sizes = table.groupby("Patient ID").size()
    assert sizes.min() >= 1 and sizes.max() <= 4 and (sizes > 1).any()
    for _, series in table.groupby("Patient ID"):
        assert list(series["Follow-up #"]) == list(range(len(series)))
        assert series["Patient Gender"].nunique() == 1
        assert series["Patient Age"].is_monotonic_increasing
        assert series["OriginalImagePixelSpacing[x"].nunique() == 1


def test_follow_ups_share_the_patients_anatomy() -> None:
    plans = plan_site(60, get_style("hospital-a"), seed=5)
    by_patient: dict[int, list[StudyPlan]] = {}
    for plan in plans:
        by_patient.setdefault(plan.patient_id, []).append(plan)
    series = [group for group in by_patient.values() if len(group) > 1]
    assert series, "some patients must have follow-ups"
    for group in series:
        assert len({plan.anatomy.seed for plan in group}) == 1  # same vessel tree
        assert len({plan.anatomy.thorax_half_width for plan in group}) == 1
        ratios = [plan.anatomy.cardiothoracic_ratio for plan in group]
        assert max(ratios) - min(ratios) < 0.06


def test_follow_ups_look_more_alike_than_other_patients() -> None:
    """Rendered in one fixed acquisition, a patient's visits differ less than two patients do."""
    style = get_style("hospital-a")
    plans = plan_site(60, style, seed=5)
    acquisition = plans[0].acquisition
    pixels = {
        (plan.patient_id, plan.follow_up): render_study(
            plan.anatomy, plan.findings, acquisition, style, 128, np.random.default_rng(0)
        ).astype(float)
        for plan in plans
    }
    patients = sorted({patient for patient, _ in pixels})
    same = [np.abs(pixels[p, 0] - pixels[p, 1]).mean() for p in patients if (p, 1) in pixels]
    other = [np.abs(pixels[a, 0] - pixels[b, 0]).mean() for a, b in itertools.pairwise(patients)]
    assert np.median(same) < 0.6 * np.median(other), (same, other)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_phantom_site(tmp_path / name, 6, style="hospital-b", resolution_px=64, seed=seed)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_a_non_empty_folder_is_never_written_into(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="never overwritten"):
        make_phantom_site(tmp_path, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_bad_requests_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_images"):
        make_phantom_site(tmp_path / "x", 0)
    with pytest.raises(ConfigError, match="did you mean 'hospital-b'"):
        make_phantom_site(tmp_path / "y", 3, style="hospital_b")


def test_styles_differ_in_mean_intensity() -> None:
    means = {
        style: [render_phantom([], np.random.default_rng(s), style, 128).mean() for s in range(10)]
        for style in ("hospital-a", "hospital-b")
    }
    assert max(means["hospital-b"]) < min(means["hospital-a"]), means
    assert np.mean(means["hospital-a"]) - np.mean(means["hospital-b"]) > 15, means


@pytest.mark.parametrize("style_name", ["hospital-a", "hospital-b"])
def test_label_frequencies_follow_the_style_prevalence(style_name: str) -> None:
    style = get_style(style_name)
    plans = plan_site(4000, style, seed=0)
    counts = Counter(f.label for plan in plans for f in plan.findings)
    for label in NIH_FINDINGS:
        expected = style.prevalence_of(label)
        observed = counts[label] / len(plans)
        assert abs(observed - expected) < 0.2 * expected + 0.01, (label, observed, expected)


def test_the_two_styles_differ_in_prevalence_view_and_age() -> None:
    plans = {
        name: plan_site(2000, get_style(name), seed=1) for name in ("hospital-a", "hospital-b")
    }

    def share(name: str, predicate: Callable[[StudyPlan], bool]) -> float:
        return float(np.mean([predicate(plan) for plan in plans[name]]))

    def pneumonia(plan: StudyPlan) -> bool:
        return "Pneumonia" in plan.finding_labels

    assert share("hospital-b", pneumonia) > share("hospital-a", pneumonia) + 0.1
    assert share("hospital-b", lambda p: p.acquisition.view == "AP") > 0.7
    assert share("hospital-a", lambda p: p.acquisition.view == "AP") < 0.4
    assert min(p.age_years for p in plans["hospital-b"]) >= 40


def test_cli_writes_a_site(tmp_path: Path) -> None:
    out = tmp_path / "cli-site"
    args = ["phantom", "--out", str(out), "--num-images", "4", "--resolution", "64", "--seed", "2"]
    result = CliRunner().invoke(app, [*args, "--style", "hospital-b"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out / "labels.csv")) == 4
    assert "hospital-b" in (out / "phantom.json").read_text()


def test_cli_rejects_an_unknown_style(tmp_path: Path) -> None:
    args = ["phantom", "--out", str(tmp_path / "x"), "--num-images", "2", "--style", "hospital-z"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ConfigError)
    assert "hospital-a, hospital-b" in str(result.exception)
