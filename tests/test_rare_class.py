"""Han et al. Fig. 4B at a site: keep a fraction of a class's positive patients, oversample.

Every check compares :func:`rare_class_rows` / :func:`training_set` with counts computed
here independently (numpy bincount, pandas groupby over the rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.errors import ConfigError
from shared.evaluation_records import RareClassSetting
from shared.labels import parse_finding_labels
from shared.networks.labeller import LabellerConfig
from site_node.data.cache import SiteCache, write_cache
from site_node.evaluation.baseline import rare_class_rows, training_set


def _patients_table(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels [N, 2] and patient ids: 40 positive patients with 1-5 images, 30 negative ones."""
    rng = np.random.default_rng(seed)
    ids, positive = [], []
    for patient in range(70):
        n = int(rng.integers(1, 6))
        ids += [1000 + patient] * n
        positive += [patient < 40] * n
    order = rng.permutation(len(ids))  # a patient's images are not contiguous
    labels = np.zeros((len(ids), 2))
    labels[:, 0] = np.array(positive, float)[order]
    labels[:, 1] = 1 - labels[:, 0]
    return labels, np.array(ids)[order]


def test_patient_unit_keeps_whole_patients_and_every_negative():
    labels, ids = _patients_table()
    setting = RareClassSetting(label="x", keep_fraction=0.1, unit="patients", seed=5)
    kept, repeats = rare_class_rows(labels, 0, setting, ids)
    assert len(repeats) == 0
    positive = labels[:, 0] > 0
    kept_mask = np.zeros(len(labels), bool)
    kept_mask[kept] = True
    assert kept_mask[~positive].all()  # every negative row stays
    per_patient = pd.DataFrame({"id": ids[positive], "kept": kept_mask[positive]})
    kept_share = per_patient.groupby("id").kept.mean()
    assert set(kept_share.unique()) <= {0.0, 1.0}  # a patient is in or out as a whole
    assert int(kept_share.sum()) == round(0.1 * 40) == 4
    images_of = pd.Series(ids[positive]).value_counts()
    assert kept_mask[positive].sum() == images_of[kept_share[kept_share == 1].index].sum()
    again, _ = rare_class_rows(labels, 0, setting, ids)
    np.testing.assert_array_equal(kept, again)  # seeded
    other, _ = rare_class_rows(labels, 0, setting.model_copy(update={"seed": 6}), ids)
    assert not np.array_equal(kept, other)


def test_oversampling_restores_exactly_the_original_positive_count():
    labels, ids = _patients_table()
    n_pos = int(labels[:, 0].sum())
    for unit, patient_ids in (("patients", ids), ("images", None)):
        setting = RareClassSetting(
            label="x", keep_fraction=0.1, unit=unit, strategy="oversample", seed=1
        )
        kept, repeats = rare_class_rows(labels, 0, setting, patient_ids)
        kept_pos = kept[labels[kept, 0] > 0]
        assert labels[np.concatenate([kept, repeats]), 0].sum() == n_pos
        assert set(repeats) <= set(kept_pos) and labels[repeats, 0].all()
        times = np.bincount(np.concatenate([kept_pos, repeats]), minlength=len(labels))[kept_pos]
        assert times.max() - times.min() <= 1  # as even as whole copies allow
        assert times.min() == n_pos // len(kept_pos)
        none, _ = rare_class_rows(labels, 0, setting.model_copy(update={"strategy": "none"}), ids)
        np.testing.assert_array_equal(kept, none)  # the same kept rows in every condition


def test_image_unit_keeps_the_rounded_fraction_at_least_one():
    labels = np.zeros((200, 2))
    labels[:60, 0] = 1
    for fraction, expect in ((0.05, 3), (0.001, 1), (1.0, 60)):
        kept, _ = rare_class_rows(
            labels, 0, RareClassSetting(label="x", keep_fraction=fraction, strategy="none")
        )
        assert labels[kept, 0].sum() == expect and len(kept) == 200 - 60 + expect


def test_patient_unit_needs_patient_ids():
    labels, ids = _patients_table()
    with pytest.raises(ConfigError, match="patient id"):
        rare_class_rows(labels, 0, RareClassSetting(label="x", unit="patients"), ids[:-1])


def test_site_b_pneumonia_five_percent_of_patients(site_b):
    """On site B's real labels.csv: 5% of the Pneumonia patients, every image of each."""
    table = pd.read_csv(site_b / "labels.csv")
    pneumonia = np.array(
        ["Pneumonia" in parse_finding_labels(f) for f in table["Finding Labels"]], float
    )
    labels = np.stack([pneumonia, 1 - pneumonia], axis=1)
    ids = table["Patient ID"].to_numpy()
    setting = RareClassSetting(label="Pneumonia", unit="patients", strategy="oversample")
    kept, repeats = rare_class_rows(labels, 0, setting, ids)
    n_patients = table.loc[pneumonia > 0, "Patient ID"].nunique()
    kept_ids = np.unique(ids[kept][pneumonia[kept] > 0])
    assert len(kept_ids) == round(0.05 * n_patients)
    images = table.loc[table["Patient ID"].isin(kept_ids) & (pneumonia > 0)]
    assert pneumonia[kept].sum() == len(images)
    assert len(repeats) == pneumonia.sum() - len(images)


def test_training_set_counts_and_rows_on_a_cache(tmp_path):
    labels, ids = _patients_table()
    n = len(labels)
    rng = np.random.default_rng(0)
    split = np.where(rng.random(n) < 0.8, "train", "test")
    table = pd.DataFrame(
        {
            "image_index": [f"{i:08d}_000.png" for i in range(n)],
            "patient_id": ids,
            "split": split,
            "Pneumonia": labels[:, 0].astype(int),
            "No Finding": labels[:, 1].astype(int),
        }
    )
    images = rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
    write_cache(tmp_path, {32: images}, table, ["Pneumonia", "No Finding"])
    cache = SiteCache(tmp_path)
    cfg = LabellerConfig(
        resolution_px=32,
        class_names=("Pneumonia", "No Finding"),
        init_features=4,
        growth_rate=2,
        block_config=(1, 1, 1, 1),
    )
    setting = RareClassSetting(
        label="Pneumonia", keep_fraction=0.2, unit="patients", strategy="oversample"
    )
    data, counts = training_set(cache, cfg, ["Pneumonia", "No Finding"], setting)
    train = table[table.split == "train"]
    pos = train[train.Pneumonia == 1]
    assert counts["rare_positives_before"] == len(pos)
    assert counts["rare_patients_before"] == pos.patient_id.nunique()
    assert counts["rare_patients_kept"] == round(0.2 * pos.patient_id.nunique())
    assert data.labels[:, 0].sum() == len(pos)  # oversampled back to the original count
    assert (
        counts["train_images"]
        == len(data)
        == len(train) + counts["oversampled_copies"] - (len(pos) - counts["rare_positives_kept"])
    )
    # every training image is a train-split image of the cache with its own labels
    train_rows = np.flatnonzero(split == "train")
    lookup = {images[r].tobytes(): r for r in train_rows}
    rows = np.array([lookup[img.tobytes()] for img in data.images])
    np.testing.assert_array_equal(data.labels, labels[rows].astype(np.float32))
    assert (table.loc[rows[data.labels[:, 1] > 0], "No Finding"] == 1).all()
    assert len(np.unique(rows[data.labels[:, 1] > 0])) == (train["No Finding"] == 1).sum()
