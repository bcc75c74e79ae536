"""Ingest of label CSVs: NIH (real site A file), CheXpert and plain layouts, layout
detection, and CheXpert's uncertainty policy (issue 2)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from shared.errors import ConfigError, LabelError
from shared.labels import NIH_LABELS
from site_node.data.cache import SiteCache
from site_node.data.chexpert import CHEXPERT_LABELS, UncertaintyPolicy
from site_node.data.ingest import IngestOptions, ingest
from site_node.data.layouts import Layout, detect_layout, read_label_table
from site_node.data.locate import ImageLocator
from site_node.data.records import RowRejectedError

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
ROOT = "CheXpert-v1.0-small/train"


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def _chexpert_row(path: str, view: str, ap_pa: str, **labels: str) -> list[str]:
    cells = {"Path": path, "Sex": "Female", "Age": "60", "Frontal/Lateral": view, "AP/PA": ap_pa}
    cells.update({name.replace("_", " "): value for name, value in labels.items()})
    return [cells.get(column, "") for column in CHEXPERT_HEADER]


def _save_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


# Row -> (NIH labels under the default policy, under "negative", under "negative,Edema=positive").
CHEXPERT_CASES = [
    (
        dict(No_Finding="1.0", Support_Devices="1.0"),
        {"No Finding"},
        {"No Finding"},
        {"No Finding"},
    ),
    (
        dict(Edema="-1.0", Consolidation="-1.0", Cardiomegaly="1.0"),
        {"Edema", "Cardiomegaly"},
        {"Cardiomegaly"},
        {"Edema", "Cardiomegaly"},
    ),
    (
        dict(Pleural_Effusion="1.0", Lung_Lesion="-1", Pleural_Other="0.0", Atelectasis=""),
        {"Effusion", "Nodule"},
        {"Effusion"},
        {"Effusion"},
    ),
    (dict(Lung_Opacity="1.0", Fracture="-1.0"), set(), set(), set()),  # no NIH counterpart
    (
        dict(Pneumothorax="1", Pneumonia="-1"),
        {"Pneumothorax", "Pneumonia"},
        {"Pneumothorax"},
        {"Pneumothorax"},
    ),
]


@pytest.fixture()
def chexpert_site(tmp_path: Path) -> Path:
    rows = []
    for patient, (labels, *_expected) in enumerate(CHEXPERT_CASES, start=1):
        path = f"{ROOT}/patient{patient:05d}/study1/view1_frontal.jpg"
        rows.append(_chexpert_row(path, "Frontal", "AP" if patient % 2 else "PA", **labels))
    rows.append(
        _chexpert_row(
            f"{ROOT}/patient00001/study1/view2_lateral.jpg", "Lateral", "", No_Finding="1.0"
        )
    )
    rows.append(
        _chexpert_row(f"{ROOT}/patient00009/study2/view1_frontal.jpg", "Frontal", "AP", Edema="2")
    )
    rows.append(
        _chexpert_row(f"{ROOT}/nobody/study1/view1_frontal.jpg", "Frontal", "AP", Edema="1")
    )
    for index, row in enumerate(rows):  # distinct images: identical bytes join patients
        _save_png(tmp_path / row[0], seed=index)
    return _write_csv(tmp_path / "train.csv", CHEXPERT_HEADER, rows)


@pytest.mark.parametrize("policy_text, column", [
    ("positive,Consolidation=negative", 1), ("negative", 2), ("negative,Edema=positive", 3),
])  # fmt: skip
def test_chexpert_labels_follow_the_uncertainty_policy(
    chexpert_site: Path, policy_text: str, column: int
) -> None:
    policy = UncertaintyPolicy.parse(policy_text)
    table = read_label_table(chexpert_site, None, policy)
    assert table.layout is Layout.CHEXPERT
    assert [set(record.labels) for record in table.records[:5]] == [
        c[column] for c in CHEXPERT_CASES
    ]
    assert [record.patient_id for record in table.records[:5]] == [
        "00001",
        "00002",
        "00003",
        "00004",
        "00005",
    ]
    assert [record.view for record in table.records] == ["AP", "PA", "AP", "PA", "AP", "LATERAL"]
    assert any(note.startswith("1 row(s) carry no NIH label") for note in table.notes)
    found = {(i.row, i.category.value, i.field, i.value) for i in table.issues}
    assert found == {
        (8, "bad_value", "Edema", "2"),
        (9, "bad_value", "Path", f"{ROOT}/nobody/study1/view1_frontal.jpg"),
    }


def test_default_policy_is_uncertain_positive_except_consolidation() -> None:
    policy = UncertaintyPolicy()
    assert str(policy) == "positive,Consolidation=negative"
    assert UncertaintyPolicy.parse(str(policy)) == policy
    assert [policy.uncertain_is_positive(n) for n in CHEXPERT_LABELS].count(False) == 1
    assert not policy.uncertain_is_positive("Consolidation")


@pytest.mark.parametrize("text, message", [
    ("maybe", "'maybe'"),
    ("positive,Edemaa=negative", "did you mean 'Edema'"),
    ("Edema=negative", "no default"),
    ("positive,negative", "two defaults"),
    ("positive,Edema=perhaps", "'perhaps'"),
])  # fmt: skip
def test_uncertainty_policy_errors_name_the_bad_token(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UncertaintyPolicy.parse(text)


def test_chexpert_ingest_keeps_frontal_views_unless_all_views(
    chexpert_site: Path, tmp_path: Path
) -> None:
    for images_dir in (tmp_path, tmp_path / "CheXpert-v1.0-small"):  # paths with and without root
        out = tmp_path / f"cache-{images_dir.name}"
        result = ingest(chexpert_site, images_dir, out, IngestOptions(max_resolution_px=8))
        assert (result.counts.kept, result.counts.rejected) == (5, 3)
        assert result.counts.rejected_by_category == {"bad_value": 2, "excluded_view": 1}
        table = SiteCache(out).table
        expected = np.array([[int(n in case[1]) for n in NIH_LABELS] for case in CHEXPERT_CASES])
        np.testing.assert_array_equal(table[list(NIH_LABELS)].to_numpy(), expected)
    everything = ingest(
        chexpert_site,
        tmp_path,
        tmp_path / "all",
        IngestOptions(max_resolution_px=8, all_views=True),
    )
    assert (everything.counts.kept, everything.counts.rejected) == (6, 2)


def test_nih_layout_reads_the_real_file_like_pandas(site_a: Path) -> None:
    table = read_label_table(site_a / "labels.csv")
    reference = pd.read_csv(site_a / "labels.csv")  # split header: 'OriginalImage[Width', 'Height]'
    assert table.layout is Layout.NIH and table.issues == []
    assert table.rows_read == len(reference) == len(table.records) == 840
    assert [r.image_ref for r in table.records] == reference["Image Index"].tolist()
    assert [r.patient_id for r in table.records] == reference["Patient ID"].astype(str).tolist()
    assert [r.view for r in table.records] == reference["View Position"].tolist()
    assert [r.follow_up for r in table.records] == reference["Follow-up #"].tolist()
    assert [set(r.labels) for r in table.records] == [
        set(t.split("|")) for t in reference["Finding Labels"]
    ]
    assert "'OriginalImage[Width', 'Height]'" in table.notes[0]


def test_plain_layout_rows_and_their_issues(tmp_path: Path) -> None:
    rows = [
        ["a/1.png", "Effusion|Mass", "p1", "PA"],
        ["a/2.png", "No Finding", "p2", ""],
        ["a/3.png", "Efusion", "p3", "PA"],
        ["a/4.png", "No Finding|Mass", "p4", "PA"],
        ["a/5.png", "", "p5", "PA"],
        ["a/6.png", "Hernia", "", "PA"],
        ["a/7.png", "Hernia", "p7", "Lateral"],
    ]
    table = read_label_table(
        _write_csv(tmp_path / "l.csv", ["path", "labels", "patient_id", "view"], rows)
    )
    assert table.layout is Layout.PLAIN
    assert [(r.image_ref, r.labels, r.patient_id, r.view) for r in table.records] == [
        ("a/1.png", ("Effusion", "Mass"), "p1", "PA"),
        ("a/2.png", ("No Finding",), "p2", None),
        ("a/7.png", ("Hernia",), "p7", "LATERAL"),
    ]
    found = {(i.row, i.category.value, i.field, i.value) for i in table.issues}
    assert found == {
        (4, "unknown_label", "labels", "Efusion"),
        (5, "bad_value", "labels", "No Finding|Mass"),
        (6, "missing_field", "labels", ""),
        (7, "missing_field", "patient_id", ""),
    }
    assert "did you mean 'Effusion'" in next(i.reason for i in table.issues if i.row == 4)


def test_plain_layout_without_patients_or_views_keeps_all(tmp_path: Path) -> None:
    names = [f"img{i}.png" for i in range(6)]
    for seed, name in enumerate(names):
        _save_png(tmp_path / "png" / name, seed)
    csv_path = _write_csv(
        tmp_path / "l.csv", ["path", "labels"], [[n, "No Finding"] for n in names]
    )
    result = ingest(
        csv_path, tmp_path / "png", tmp_path / "cache", IngestOptions(max_resolution_px=4)
    )
    assert (
        result.counts.kept == 6 and result.report.split["patients"] == result.report.split["images"]
    )
    assert any("every image is its own patient" in note for note in result.report.notes)


def test_layout_detection_and_override(tmp_path: Path) -> None:
    assert (
        detect_layout(["Image Index", "Finding Labels", "Patient ID"], csv_path=tmp_path)
        is Layout.NIH
    )
    assert detect_layout(CHEXPERT_HEADER, csv_path=tmp_path) is Layout.CHEXPERT
    assert detect_layout(["path", "labels"], csv_path=tmp_path) is Layout.PLAIN
    with pytest.raises(ConfigError, match="--layout"):
        detect_layout(["file", "finding"], csv_path=tmp_path)
    both = _write_csv(
        tmp_path / "b.csv", ["path", "labels", "Path", "Edema"], [["x.png", "Edema", "y", "1"]]
    )
    assert read_label_table(both).layout is Layout.CHEXPERT
    assert read_label_table(both, Layout.PLAIN).records[0].image_ref == "x.png"
    with pytest.raises(
        LabelError, match=r"needs column\(s\) \['Image Index', 'Finding Labels', 'Patient ID'\]"
    ):
        read_label_table(both, Layout.NIH)
    with pytest.raises(LabelError, match="empty"):
        read_label_table(_write_csv(tmp_path / "e.csv", [], []))


def test_locator_finds_nih_subfolders_and_reports_ambiguity(tmp_path: Path) -> None:
    _save_png(tmp_path / "images_001" / "images" / "00000001_000.png", 1)
    _save_png(tmp_path / "images_002" / "images" / "00000002_000.png", 2)
    _save_png(tmp_path / "images_002" / "images" / "twice.png", 3)
    _save_png(tmp_path / "images_003" / "images" / "twice.png", 4)
    locator = ImageLocator(tmp_path)
    found = locator.locate("00000002_000.png")
    assert found == tmp_path / "images_002" / "images" / "00000002_000.png"
    assert locator.locate("images_001/images/00000001_000.png").is_file()
    with pytest.raises(RowRejectedError, match="2 files of that name") as ambiguous:
        locator.locate("twice.png")
    assert ambiguous.value.category.value == "missing_file"
    with pytest.raises(RowRejectedError, match="no such file"):
        locator.locate("images_009/nothing.png")


@pytest.mark.parametrize("options, message", [
    (dict(layout="nhi"), "--layout: 'nhi' is not one of"),
    (dict(seed=-1), "--seed: -1"),
    (dict(site_id="a b"), "--site-id: 'a b'"),
    (dict(max_resolution_px=48), "--max-resolution: 48"),
    (dict(split_fractions=(0.7, 0.2, 0.2)), "--split"),
])  # fmt: skip
def test_options_name_the_bad_option_and_value(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IngestOptions(**options)
    assert IngestOptions(layout="chexpert").layout is Layout.CHEXPERT
