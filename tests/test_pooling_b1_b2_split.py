"""The b1/b2 "hospital" split of ``benchmarks/pooling_b1_b2.py`` (issue 13, item 4).

Checked against pandas group-bys on a made-up site table: patients never straddle
hospitals, test rows stay common, each of train and val is halved, label shares match,
and a hospital's cache holds exactly its rows and their pixels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pooling_b1_b2 as pb

from site_node.data.cache import SiteCache, write_cache

LABELS = ["Pneumonia", "Effusion", "No Finding"]


def _site_table(seed: int = 3, patients: int = 400) -> pd.DataFrame:
    """Patients with 1-4 images each, patient-level splits, correlated labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        split = rng.choice(["train", "val", "test"], p=[0.7, 0.15, 0.15])
        sick = rng.random() < 0.6
        for i in range(int(rng.integers(1, 5))):
            pneumonia = sick and rng.random() < 0.9
            effusion = sick and rng.random() < 0.3
            rows.append({
                "image_index": f"{p:04d}_{i}.png", "patient_id": f"P{p:04d}", "split": split,
                "Pneumonia": int(pneumonia), "Effusion": int(effusion),
                "No Finding": int(not (pneumonia or effusion)),
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_hospitals_are_patient_level_disjoint_halves_with_common_test() -> None:
    table = _site_table()
    hospital = pb.split_hospitals(table, LABELS, seed=0)
    table = table.assign(hospital=hospital)
    assert (table.hospital[table.split == "test"] == "test").all()
    assert set(table.hospital[table.split != "test"]) == {"b1", "b2"}
    # One hospital per patient, so the hospitals' patient sets are disjoint.
    assert (table.groupby("patient_id").hospital.nunique() == 1).all()
    for split in ("train", "val"):
        part = table[table.split == split]
        share_b1 = (part.hospital == "b1").mean()
        assert abs(share_b1 - 0.5) < 0.05, (split, share_b1)
        prevalence = part.groupby("hospital")[LABELS].mean()
        gap = (prevalence.loc["b1"] - prevalence.loc["b2"]).abs().max()
        assert gap < 0.05, (split, prevalence)


def test_split_depends_on_the_seed_only() -> None:
    table = _site_table()
    shuffled = table.sample(frac=1.0, random_state=1)
    first = pd.Series(pb.split_hospitals(table, LABELS, seed=0), index=table.index)
    again = pd.Series(pb.split_hospitals(shuffled, LABELS, seed=0), index=shuffled.index)
    assert (first == again.loc[first.index]).all()
    other = pb.split_hospitals(table, LABELS, seed=1)
    assert (other != first.to_numpy()).any()


def test_hospital_cache_holds_its_rows_and_the_test_rows(tmp_path: Path) -> None:
    table = _site_table(patients=60)
    images = np.random.default_rng(0).integers(0, 256, (len(table), 8, 8), dtype=np.uint8)
    write_cache(tmp_path / "full", {8: images}, table, LABELS, split_seed=0)
    full = SiteCache(tmp_path / "full")
    hospital = pb.split_hospitals(full.table, LABELS, seed=0)
    cache = pb.write_hospital_cache(full, hospital, "b2", tmp_path / "b2")
    expected = table[(hospital == "b2") | (table.split == "test").to_numpy()]
    assert cache.table.image_index.tolist() == expected.image_index.tolist()
    assert cache.table.split.tolist() == expected.split.tolist()
    np.testing.assert_array_equal(np.asarray(cache.images(8)), images[expected.index.to_numpy()])
    assert cache.manifest.site_id == "b2"


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_non_test_row_goes_to_exactly_one_hospital(split: str) -> None:
    table = _site_table(seed=5)
    hospital = pb.split_hospitals(table, LABELS, seed=2)
    rows = (table.split == split).to_numpy()
    counts = pd.Series(hospital[rows]).value_counts()
    assert counts.sum() == rows.sum() and set(counts.index) == {"b1", "b2"}
