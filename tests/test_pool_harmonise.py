"""Pooling at the hub: union label space, per-site masks, counts, selection, the written archive."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from helpers_pool import make_archive

from hub.archives.store import ArchiveStore
from hub.pooling.archive import read_archive
from hub.pooling.pool import (
    PoolOptions,
    PoolStrategy,
    plan_labels,
    plan_pool,
    rake_weights,
    union_label_space,
)
from hub.pooling.writer import write_pooled_archive
from shared.artifacts.archive import ARCHIVE_MANIFEST
from shared.errors import ConfigError, LabelError

A_FINDINGS = [
    "Effusion",
    "Cardiomegaly|Effusion",
    "No Finding",
    "Pneumonia",
    "No Finding",
    "Atelectasis",
    "Effusion",
    "No Finding",
    "Cardiomegaly",
    "No Finding",
] * 3
B_FINDINGS = ["Pneumonia", "Pneumonia", "No Finding", "Pneumonia", "No Finding", "Pneumonia"] * 4


@pytest.fixture()
def sources(tmp_path):
    a = make_archive(tmp_path / "arch-a", A_FINDINGS, site_id="a", seed=1)
    b = make_archive(
        tmp_path / "arch-b",
        B_FINDINGS,
        site_id="b",
        seed=2,
        class_names=["Pneumonia", "No Finding"],
    )
    return [read_archive(a), read_archive(b)]


def _recount(csv: pd.DataFrame, label: str) -> int:
    return sum(label in str(t).split("|") for t in csv["Finding Labels"])


def test_union_label_space_and_masks(sources):
    a, b = sources
    assert a.site_id == "a" and b.site_id == "b"
    assert b.annotated_labels == ("Pneumonia", "No Finding")  # from the archive's manifest
    expected = ("Atelectasis", "Cardiomegaly", "Effusion", "Pneumonia", "No Finding")
    assert union_label_space(sources) == expected
    plan = plan_pool(sources, PoolOptions())
    np.testing.assert_array_equal(plan.masks["a"], [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(plan.masks["b"], [0, 0, 0, 1, 1])
    labels, mask, sites = plan_labels(plan, sources)
    assert len(labels) == len(A_FINDINGS) + len(B_FINDINGS)
    b_rows = np.array(sites) == "b"
    # Site b's images are unknown (masked, label 0) for Effusion, never negative.
    assert mask[b_rows, 2].sum() == 0 and labels[b_rows, 2].sum() == 0
    assert mask[~b_rows].all()


def test_declared_labels_must_cover_what_occurs(tmp_path):
    folder = make_archive(tmp_path / "x", ["Effusion", "No Finding"], site_id="x")
    with pytest.raises(LabelError, match="Effusion"):
        read_archive(folder, annotated_labels=["No Finding"])


def test_written_pool_counts_and_checksums(sources, tmp_path):
    plan = plan_pool(sources, PoolOptions())
    pooled = write_pooled_archive(plan, sources, PoolOptions(), tmp_path / "store")
    folder = pooled.folder
    # The id is the manifest's sha256; every listed file hashes to its entry.
    manifest_bytes = (folder / ARCHIVE_MANIFEST).read_bytes()
    assert hashlib.sha256(manifest_bytes).hexdigest() == pooled.archive_id
    manifest = json.loads(manifest_bytes)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {ARCHIVE_MANIFEST}
    for rel, entry in manifest["files"].items():
        data = (folder / rel).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (
            entry["sha256"],
            entry["size_bytes"],
        )
    # Counts per site and label, recounted from the source CSVs.
    csv_a = pd.read_csv(tmp_path / "arch-a" / "Data_Entry_synthetic.csv")
    csv_b = pd.read_csv(tmp_path / "arch-b" / "Data_Entry_synthetic.csv")
    counts = manifest["sites"]
    for label in ("Effusion", "Pneumonia", "No Finding"):
        assert counts["a"]["counts"][label]["positives"] == _recount(csv_a, label)
        assert counts["a"]["counts"][label]["negatives"] == len(csv_a) - _recount(csv_a, label)
    assert counts["b"]["counts"]["Pneumonia"]["positives"] == _recount(csv_b, "Pneumonia")
    assert counts["b"]["counts"]["Effusion"] == {
        "positives": 0,
        "negatives": 0,
        "unknown": len(csv_b),
    }
    # Each pooled image is byte-identical to its source image (via provenance.csv).
    prov = pd.read_csv(folder / "provenance.csv")
    entry = pd.read_csv(folder / "Data_Entry_pool.csv")
    for _, row in prov.iterrows():
        src = tmp_path / f"arch-{row['Source Site']}" / "images" / row["Source Image Index"]
        dst = folder / entry.loc[entry["Image Index"] == row["Image Index"], "Image Path"].item()
        assert src.read_bytes() == dst.read_bytes()
    assert ArchiveStore(tmp_path / "store").list()[0].num_images == len(entry)


def test_sharded_pool_has_loadable_shards(sources, tmp_path):
    plan = plan_pool(sources, PoolOptions())
    pooled = write_pooled_archive(
        plan, sources, PoolOptions(), tmp_path / "s", shard_size_images=20
    )
    shards = pooled.manifest.shards
    assert shards == ["shard-00000", "shard-00001", "shard-00002"]
    total = 0
    for shard in shards:
        csv = pd.read_csv(pooled.folder / shard / "Data_Entry.csv")
        assert all((pooled.folder / shard / "images" / n).is_file() for n in csv["Image Index"])
        total += len(csv)
    assert total == len(A_FINDINGS) + len(B_FINDINGS)


def test_rake_weights_match_target_prevalence():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 3)) < [0.1, 0.4, 0.7]).astype(float)
    mask = np.ones_like(labels)
    mask[:100, 2] = 0
    target = np.array([0.3, 0.2, 0.5])
    w = rake_weights(labels, mask, target, np.full(400, 1 / 400))
    for c in range(3):
        rows = mask[:, c] > 0
        weighted = (w[rows] * labels[rows, c]).sum() / w[rows].sum()
        assert weighted == pytest.approx(target[c], abs=1e-5)


def test_match_prevalence_resamples_towards_target(sources):
    options = PoolOptions(
        strategy=PoolStrategy.MATCH_PREVALENCE,
        num_images=4000,
        target_prevalence={"Pneumonia": 0.25, "Effusion": 0.2},
        seed=3,
    )
    plan = plan_pool(sources, options)
    labels, mask, _ = plan_labels(plan, sources)
    space = plan.label_space
    for name, target in options.target_prevalence.items():
        c = space.index(name)
        observed = labels[mask[:, c] > 0, c].mean()
        assert abs(observed - target) < 0.03, (name, observed)


def test_balance_gives_each_label_its_quota(sources):
    plan = plan_pool(sources, PoolOptions(strategy=PoolStrategy.BALANCE, images_per_label=5))
    labels, _, _ = plan_labels(plan, sources)
    positives = labels.sum(axis=0)
    available = sum(t.split("|").count("Atelectasis") for t in A_FINDINGS)
    atelectasis = plan.label_space.index("Atelectasis")
    assert available == 3 and positives[atelectasis] == available  # fewer than asked: all of them
    assert (np.delete(positives, atelectasis) >= 5).all()
    assert len(set(zip(plan.source_index, plan.row_index, strict=True))) == len(plan)  # no repeats


def test_enrich_adds_unused_images_of_the_class(sources):
    base = plan_pool(sources, PoolOptions(strategy=PoolStrategy.BALANCE, images_per_label=3))
    options = PoolOptions(
        strategy=PoolStrategy.BALANCE, images_per_label=3, enrich={"Cardiomegaly": 2}
    )
    plan = plan_pool(sources, options)
    assert len(plan) == len(base) + 2
    extra = plan.reason == "enrich:Cardiomegaly"
    labels, _, _ = plan_labels(plan, sources)
    assert extra.sum() == 2 and labels[extra, plan.label_space.index("Cardiomegaly")].all()
    assert len(set(zip(plan.source_index, plan.row_index, strict=True))) == len(plan)
    with pytest.raises(ConfigError, match="only"):
        plan_pool(sources, PoolOptions(enrich={"Atelectasis": 99}))
