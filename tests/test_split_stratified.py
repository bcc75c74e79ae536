"""Patient-level iterative stratified split on the real labels of sites A and B (issue 2).

Tolerance, stated once: for every label with at least 20 positive images and every
split, ``|share of the split's images carrying it - share of all images| <= 0.05``;
image fractions within 0.02 of 70/10/20. Site A is hard: one patient holds 66 of its
840 images and another 21 of the 30 Edema images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from shared.errors import ConfigError, SplitError
from shared.labels import NIH_LABELS
from site_node.data.split import SPLIT_NAMES, iterative_stratified_split, split_summary

SHARE_TOLERANCE = 0.05
MIN_POSITIVES = 20
FRACTION_TOLERANCE = 0.02
FRACTIONS = (0.7, 0.1, 0.2)


def load_labels(site: Path) -> tuple[np.ndarray, np.ndarray]:
    """Patient ids and a 0/1 matrix over NIH_LABELS, straight from labels.csv."""
    frame = pd.read_csv(site / "labels.csv")
    findings = frame["Finding Labels"].str.split("|")
    labels = np.array([[int(name in cell) for name in NIH_LABELS] for cell in findings])
    return frame["Patient ID"].astype(str).to_numpy(), labels


def worst_share_deviation(labels: np.ndarray, splits: np.ndarray) -> float:
    """max over splits and labels with >= MIN_POSITIVES of |p_split - p_all| (pandas)."""
    frame = pd.DataFrame(labels, columns=NIH_LABELS).assign(split=splits)
    common = [name for name in NIH_LABELS if frame[name].sum() >= MIN_POSITIVES]
    per_split = frame.groupby("split")[common].mean()
    return float((per_split - frame[common].mean()).abs().to_numpy().max())


def random_patient_split(patient_ids: np.ndarray, seed: int) -> np.ndarray:
    patients = np.unique(patient_ids)
    order = np.random.default_rng(seed).permutation(len(patients))
    cut_train, cut_val = round(0.7 * len(patients)), round(0.8 * len(patients))
    split_of = np.empty(len(patients), dtype=object)
    split_of[order[:cut_train]], split_of[order[cut_train:cut_val]] = "train", "val"
    split_of[order[cut_val:]] = "test"
    return split_of[np.searchsorted(patients, patient_ids)]


def iterstrat_patient_split(patient_ids: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """iterstrat on per-patient union labels: test 20 %, then val 1/8 of the rest."""
    patients, image_patient = np.unique(patient_ids, return_inverse=True)
    union = np.zeros((len(patients), labels.shape[1]))
    np.maximum.at(union, image_patient, labels)
    first = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
    rest, test = next(first.split(np.zeros(len(patients)), union))
    second = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.125, random_state=seed)
    train, val = next(second.split(np.zeros(len(rest)), union[rest]))
    split_of = np.empty(len(patients), dtype=object)
    split_of[test], split_of[rest[train]], split_of[rest[val]] = "test", "train", "val"
    return split_of[image_patient]


@pytest.fixture(params=["site_a", "site_b"])
def site_labels(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    return load_labels(request.getfixturevalue(request.param))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_patient_in_two_splits_and_shares_within_tolerance(
    site_labels: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    patient_ids, labels = site_labels
    splits = iterative_stratified_split(patient_ids, labels, FRACTIONS, seed)
    per_patient = pd.Series(splits).groupby(patient_ids).nunique()
    assert (per_patient == 1).all()
    fractions = [float(np.mean(splits == name)) for name in SPLIT_NAMES]
    np.testing.assert_allclose(fractions, FRACTIONS, atol=FRACTION_TOLERANCE)
    assert worst_share_deviation(labels, splits) <= SHARE_TOLERANCE


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beats_iterstrat_and_random_patient_splits(
    site_labels: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    patient_ids, labels = site_labels
    ours = worst_share_deviation(
        labels, iterative_stratified_split(patient_ids, labels, FRACTIONS, seed)
    )
    iterstrat = worst_share_deviation(labels, iterstrat_patient_split(patient_ids, labels, seed))
    best_random = min(
        worst_share_deviation(labels, random_patient_split(patient_ids, s)) for s in range(5)
    )
    assert ours <= iterstrat and ours <= best_random


def test_deterministic_for_a_seed_whatever_the_row_order(
    site_labels: tuple[np.ndarray, np.ndarray],
) -> None:
    patient_ids, labels = site_labels
    splits = iterative_stratified_split(patient_ids, labels, FRACTIONS, seed=0)
    np.testing.assert_array_equal(
        splits, iterative_stratified_split(patient_ids, labels, FRACTIONS, seed=0)
    )
    order = np.random.default_rng(7).permutation(len(patient_ids))
    shuffled = iterative_stratified_split(patient_ids[order], labels[order], FRACTIONS, seed=0)
    np.testing.assert_array_equal(shuffled, splits[order])
    other = iterative_stratified_split(patient_ids, labels, FRACTIONS, seed=1)
    changed = pd.Series(splits != other).groupby(patient_ids).any()
    assert changed.sum() >= 10  # another seed moves many patients, not one


def test_summary_matches_a_pandas_count(site_a: Path) -> None:
    patient_ids, labels = load_labels(site_a)
    splits = iterative_stratified_split(patient_ids, labels, FRACTIONS, seed=0)
    summary = split_summary(patient_ids, labels, splits, NIH_LABELS)
    frame = pd.DataFrame(labels, columns=NIH_LABELS).assign(split=splits, patient=patient_ids)
    assert summary["images"] == frame.split.value_counts().to_dict()
    assert summary["patients"] == frame.groupby("split").patient.nunique().to_dict()
    for name in NIH_LABELS:
        for split, part in frame.groupby("split"):
            entry = summary["labels"][name][split]
            assert entry["count"] == part[name].sum()
            assert entry["fraction"] == pytest.approx(part[name].mean(), abs=1e-12)


def test_zero_fraction_and_too_few_patients() -> None:
    patient_ids = np.array(["a", "a", "b", "c", "d", "e"])
    labels = np.eye(6, len(NIH_LABELS), dtype=int)
    splits = iterative_stratified_split(patient_ids, labels, (0.8, 0.0, 0.2), seed=0)
    assert "val" not in set(splits) and {"train", "test"} == set(splits)
    with pytest.raises(SplitError, match="need at least 3 patients"):
        iterative_stratified_split(np.array(["a", "b"]), labels[:2], FRACTIONS, seed=0)
    for bad in ((0.7, 0.1), (0.7, 0.4, -0.1), (0.5, 0.2, 0.2)):
        with pytest.raises(ConfigError, match="--split"):
            iterative_stratified_split(patient_ids, labels, bad, seed=0)
