"""Synthetic archives end to end on small networks: NIH layout, labels, provenance, resume, errors.

The torchxrayvision check re-implements ``NIH_Dataset``'s reading logic (torchxrayvision
1.5.7, ``datasets.py``, Apache-2.0) because torchxrayvision imports torchvision, which does
not import beside the CPU torch 2.13 this project uses (docs: field notes). The copy keeps
every step that touches the archive: ``check_paths_exist``, ``pd.read_csv``, the
``Patient Sex`` rename, ``limit_to_selected_views``, ``unique_patients``, the substring
label match, ``patientid``/``age_years``/``sex_*`` columns, and ``__getitem__``'s
``skimage.io.imread`` + ``normalize(img, maxval=255, reshape=True)``.
"""

import csv
import hashlib
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from skimage.io import imread

from hub.synthesis.archive import DATA_ENTRY_COLUMNS, JOURNAL_FILE, ArchiveWriter
from hub.synthesis.class_optimisation import ClassOptimisationSettings
from hub.synthesis.local_sampling import LocalSamplingSettings
from hub.synthesis.pipeline import (
    SynthesisOptions,
    prepare_synthesis,
    synthesize,
    usable_thresholds,
)
from hub.synthesis.targets import allocate_targets, plan_series_sizes
from shared.artifacts.keyring import ConsortiumKeyring
from shared.artifacts.labeller import (
    ClassMetrics,
    LabellerCard,
    load_labeller_export,
    save_labeller_export,
)
from shared.errors import ConfigError, LabelError
from shared.labels import NIH_FINDINGS, NIH_LABELS
from shared.networks.generator import Generator, GeneratorConfig
from shared.networks.labeller import Labeller, LabellerConfig

Z_DIM, RES = 16, 32
NO_THRESHOLD = ("Hernia", "Pneumonia")  # no validation positives: no threshold
BELOW_CHANCE = "Pleural_Thickening"  # a threshold, but a validation AUC below 0.5
NOT_CALLABLE = (*NO_THRESHOLD, BELOW_CHANCE)


# --- torchxrayvision 1.5.7 NIH_Dataset, reading logic only (see module docstring) -----------


def _xrv_normalize(img, maxval, reshape=False):
    if img.max() > maxval:
        raise ValueError(f"max image value ({img.max()}) higher than expected bound ({maxval}).")
    img = (2 * (img.astype(np.float32) / maxval) - 1.0) * 1024
    if reshape:
        if len(img.shape) > 2:
            img = img[:, :, 0]
        img = img[None, :, :]
    return img


class XrvNIHDataset:
    pathologies = sorted(
        ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
         "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule",
         "Mass", "Hernia"]
    )  # fmt: skip

    def __init__(self, imgpath, csvpath, views=("PA",), unique_patients=True):
        if not os.path.isdir(imgpath):
            raise Exception("imgpath must be a directory")
        if not os.path.isfile(csvpath):
            raise Exception("csvpath must be a file")
        self.imgpath = imgpath
        self.csv = pd.read_csv(csvpath)
        if "Patient Gender" not in self.csv.columns and "Patient Sex" in self.csv.columns:
            self.csv = self.csv.rename(columns={"Patient Sex": "Patient Gender"})
        self.csv["view"] = self.csv["View Position"]
        views = list(views)
        if "*" in views:
            views = ["*"]
        self.csv["view"] = self.csv["view"].fillna("UNKNOWN")
        if "*" not in views:
            self.csv = self.csv[self.csv["view"].isin(views)]
        if unique_patients:
            self.csv = self.csv.groupby("Patient ID").first()
        self.csv = self.csv.reset_index()
        self.labels = np.asarray(
            [self.csv["Finding Labels"].str.contains(p).values for p in self.pathologies]
        ).T.astype(np.float32)
        self.csv["patientid"] = self.csv["Patient ID"].astype(str)
        self.csv["age_years"] = self.csv["Patient Age"] * 1.0
        self.csv["sex_male"] = self.csv["Patient Gender"] == "M"
        self.csv["sex_female"] = self.csv["Patient Gender"] == "F"

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        img = imread(os.path.join(self.imgpath, self.csv["Image Index"].iloc[idx]))
        return {"idx": idx, "lab": self.labels[idx], "img": _xrv_normalize(img, 255, reshape=True)}


# --- small networks with usable thresholds -------------------------------------------------


def _write_generator_export(folder, G, label_space=NIH_LABELS, counts=None):
    folder.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in G.state_dict().items()}, str(folder / "g_ema.safetensors")
    )
    data = {"label_space": list(label_space), "counts_per_label": counts or {}}
    (folder / "generator.json").write_text(
        json.dumps(
            {"generator_config": G.cfg.model_dump(mode="json"), "training": {}, "data": data}
        )
    )


def _calibrated_labeller(G, cfg):
    """A small random labeller rescaled so every logit has median 0 and sd 1 over G's samples."""
    torch.manual_seed(1)
    labeller = Labeller(cfg).eval()
    with torch.no_grad():
        logits = labeller(G(torch.randn(512, Z_DIM, generator=torch.Generator().manual_seed(2))))
        out = labeller.net.class_layers[-1]
        sd, median = logits.std(0), logits.median(0).values
        out.weight /= sd[:, None]
        out.bias.copy_((out.bias - median) / sd)
    return labeller


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution_px=RES, z_dim=Z_DIM, fmap_base=64, fmap_max=16)).eval()
    counts = {name: 10 * (i + 1) for i, name in enumerate(NIH_LABELS)}
    _write_generator_export(root / "gen", G, counts=counts)
    cfg = LabellerConfig(
        resolution_px=RES, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1)
    )
    labeller = _calibrated_labeller(G, cfg)
    # Findings are called at logit >= 0.7 (about 24% of samples), No Finding at >= -0.5.
    classes = [
        ClassMetrics(
            name=name,
            threshold_logit=None
            if name in NO_THRESHOLD
            else (-0.5 if name == "No Finding" else 0.7),
            val_auc=None if name in NO_THRESHOLD else (0.45 if name == BELOW_CHANCE else 0.8),
            train_positives=counts[name],
        )
        for name in NIH_LABELS
    ]
    save_labeller_export(root / "lab", labeller, LabellerCard(labeller_config=cfg, classes=classes))
    return root


def _options(sources, out, **changes):
    base = dict(
        generator=str(sources / "gen"), labeller=str(sources / "lab"), out_dir=out,
        num_images=60, labels="balanced", seed=3, device="cpu",
        optimisation=ClassOptimisationSettings(
            batch_size=16, max_steps=80, plateau_patience_steps=25
        ),
        sampling=LocalSamplingSettings(batch_size=64, max_draws_per_image=6),
        trust_local_export=True,  # the sources are training exports
    )  # fmt: skip
    return SynthesisOptions(**{**base, **changes})


@pytest.fixture(scope="module")
def archive(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("archives") / "a"
    manifest = synthesize(_options(sources, out))
    return out, manifest


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _labeller_logits_of_pngs(sources, image_dir, names):
    labeller, card = load_labeller_export(sources / "lab", trust_local_export=True)
    pixels = np.stack([imread(image_dir / n) for n in names])
    with torch.no_grad():
        logits = labeller(torch.from_numpy(pixels).float()[:, None] / 127.5 - 1)
    return logits.numpy(), card


# --- the archive as written --------------------------------------------------------------


def test_archive_loads_in_the_nih_dataset_reference(archive):
    out, manifest = archive
    entries = pd.read_csv(out / "Data_Entry.csv")
    dataset = XrvNIHDataset(
        out / "images", out / "Data_Entry.csv", views=["*"], unique_patients=False
    )
    assert len(dataset) == manifest.num_images == 60
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample["img"].shape == (1, RES, RES)
        assert sample["img"].min() >= -1024 and sample["img"].max() <= 1024
        expected = [
            float(p in entries["Finding Labels"][i].split("|")) for p in dataset.pathologies
        ]
        np.testing.assert_array_equal(sample["lab"], expected)
    # The defaults keep one image per patient and PA rows only: unknown views are dropped.
    assert len(XrvNIHDataset(out / "images", out / "Data_Entry.csv")) == 0
    per_patient = XrvNIHDataset(out / "images", out / "Data_Entry.csv", views=["*"])
    assert len(per_patient) == manifest.num_patients
    assert dataset.csv["age_years"].isna().all() and not dataset.csv["sex_male"].any()


def test_every_row_points_at_an_8bit_png_and_checksums_match(archive):
    out, manifest = archive
    rows = _rows(out / "Data_Entry.csv")
    assert list(rows[0]) == list(DATA_ENTRY_COLUMNS)
    names = [r["Image Index"] for r in rows]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(names)
    sums = dict(
        line.split("  images/")[::-1]
        for line in (out / "images_sha256.txt").read_text().split("\n")
        if line
    )
    for r in rows:
        data = (out / "images" / r["Image Index"]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[24] == 8 and data[25] == 0  # 8-bit grey
        assert hashlib.sha256(data).hexdigest() == sums[r["Image Index"]]
        assert imread(out / "images" / r["Image Index"]).dtype == np.uint8
        assert r["Patient Age"] == r["Patient Gender"] == r["View Position"] == ""
    for name, digest in manifest.files.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest.sha256


def test_patients_group_three_to_six_consecutive_follow_ups(archive):
    out, manifest = archive
    table = pd.read_csv(out / "Data_Entry.csv")
    for pid, group in table.groupby("Patient ID"):
        assert 3 <= len(group) <= 6
        assert sorted(group["Follow-up #"]) == list(range(len(group)))
        for _, row in group.iterrows():
            assert row["Image Index"] == f"{pid:08d}_{row['Follow-up #']:03d}.png"
    assert table["Patient ID"].nunique() == manifest.num_patients
    assert not table["Image Index"].duplicated().any()


def test_labels_are_the_labellers_calls_on_the_pngs_and_targets_are_met(archive, sources):
    out, _ = archive
    rows, prov = _rows(out / "Data_Entry.csv"), _rows(out / "provenance.csv")
    logits, card = _labeller_logits_of_pngs(
        sources, out / "images", [r["Image Index"] for r in rows]
    )
    thresholds = [None if c.name in NOT_CALLABLE else c.threshold_logit for c in card.classes]
    for row, p, logit in zip(rows, prov, logits, strict=True):
        assert p["Image Index"] == row["Image Index"]
        # Independent relabelling of the PNG as written (skip calls within 1e-3 of a threshold).
        found = {
            n for n, v, t in zip(NIH_LABELS, logit, thresholds, strict=True)
            if n in NIH_FINDINGS and t is not None and v >= t
        }  # fmt: skip
        near = any(
            t is not None and abs(v - t) < 1e-3 for v, t in zip(logit, thresholds, strict=True)
        )
        if not near:
            assert row["Finding Labels"] == (
                "|".join(n for n in NIH_LABELS if n in found) or "No Finding"
            )
        assert not set(row["Finding Labels"].split("|")) & set(NOT_CALLABLE)
        target = p["target_class"]
        assert float(p["achieved_logit"]) >= float(p["threshold_logit"]) - 1e-6
        assert float(p["threshold_logit"]) >= card.thresholds_logit[target]
        assert abs(float(p["achieved_logit"]) - logit[NIH_LABELS.index(target)]) < 1e-3
        if target != "No Finding":  # a finding reached its T_c >= Youden: it is in the labels
            assert target in row["Finding Labels"].split("|")


def test_manifest_reports_give_ups_and_rejections_per_class(archive):
    out, manifest = archive
    prov = pd.read_csv(out / "provenance.csv")
    judgeable = [n for n in NIH_LABELS if n not in NOT_CALLABLE]
    assert sorted(manifest.target_weights) == sorted(judgeable) == sorted(manifest.callable_classes)
    journal = [json.loads(line) for line in (out / JOURNAL_FILE).read_text().splitlines()]
    for c in manifest.per_class:
        gave_up = sum(
            e["event"] == "gave_up" and e["target_class"] == c.target_class for e in journal
        )
        assert c.gave_up_plateau + c.gave_up_step_limit == gave_up
        assert c.starts == c.converged + gave_up
        assert c.images == int((prov["target_class"] == c.target_class).sum())
        assert c.neighbours_drawn - c.neighbours_rejected >= c.images
        mine = prov["target_class"] == c.target_class
        labels = pd.read_csv(out / "Data_Entry.csv")["Finding Labels"][mine]
        assert c.images_labelled_with_target == sum(c.target_class in s.split("|") for s in labels)
        if c.starts:
            assert c.give_up_rate == pytest.approx(gave_up / c.starts)


# --- plan, resume, errors -------------------------------------------------------------------


@pytest.mark.parametrize("num_images", [3, 4, 6, 7, 11, 12, 13, 60, 1001])
def test_series_sizes_add_up_and_stay_within_three_to_six(num_images):
    sizes = plan_series_sizes(num_images, seed=num_images)
    assert sum(sizes) == num_images and min(sizes) >= 3 and max(sizes) <= 6
    with pytest.raises(ConfigError, match="--size"):
        plan_series_sizes(2, seed=0)


def test_target_allocation_is_largest_remainder():
    targets = allocate_targets(10, {"Mass": 0.55, "Nodule": 0.3, "Effusion": 0.15}, seed=0)
    # Shares 5.5 / 3 / 1.5: floors 5 / 3 / 1; the one left goes to the largest remainder,
    # a tie between Mass and Effusion that the first listed wins.
    assert sorted(targets) == sorted(["Mass"] * 6 + ["Nodule"] * 3 + ["Effusion"])


def test_interrupted_synthesis_resumes_without_duplicates(sources, archive, tmp_path):
    out = tmp_path / "resumed"
    seen = []

    def stop_after_some(num_images):
        seen.append(num_images)
        if sum(seen) >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(_options(sources, out), progress=stop_after_some)
    assert not (out / "manifest.json").exists()
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    with open(out / JOURNAL_FILE, "ab") as handle:
        handle.write(b'{"event": "patient", "patient_id": 9')  # a torn line from a crash
    manifest = synthesize(_options(sources, out))
    full_out, full = archive
    assert manifest.num_images == 60 and manifest.num_patients == full.num_patients
    table = pd.read_csv(out / "Data_Entry.csv")
    assert not table["Image Index"].duplicated().any()
    for name, data in before.items():  # finished patients were not redone
        if name in set(table["Image Index"]):
            assert (out / "images" / name).read_bytes() == data
    # Same plan: same patients, sizes and targets as the uninterrupted archive.
    ours = (
        pd.read_csv(out / "provenance.csv")
        .groupby("Patient ID")["target_class"]
        .agg(["first", "size"])
    )
    theirs = (
        pd.read_csv(full_out / "provenance.csv")
        .groupby("Patient ID")["target_class"]
        .agg(["first", "size"])
    )
    pd.testing.assert_frame_equal(ours, theirs)
    assert synthesize(_options(sources, out)) == manifest  # complete: nothing more to do


def test_resume_with_other_options_is_refused(sources, archive):
    out, _ = archive
    with pytest.raises(ConfigError, match=r"other options.*seed"):
        synthesize(_options(sources, out, seed=4))


def test_unlabelled_archive_is_labelled_afterwards(sources, tmp_path):
    manifest = synthesize(_options(sources, tmp_path / "u", unlabelled=True, num_images=20))
    prov, rows = _rows(tmp_path / "u" / "provenance.csv"), _rows(tmp_path / "u" / "Data_Entry.csv")
    assert manifest.num_images == 20 and all(p["target_class"] == "" for p in prov)
    logits, card = _labeller_logits_of_pngs(
        sources, tmp_path / "u" / "images", [r["Image Index"] for r in rows]
    )
    usable = {n: t for n, t in card.thresholds_logit.items() if n not in NOT_CALLABLE}
    calls = logits >= np.array([usable.get(n, np.inf) for n in NIH_LABELS])
    has_finding = calls[:, [NIH_LABELS.index(f) for f in NIH_FINDINGS]].any(axis=1)
    assert [r["Finding Labels"] != "No Finding" for r in rows] == list(has_finding)


def test_errors_come_before_any_work(sources, tmp_path):
    out = tmp_path / "never"
    # A labeller over another label space than the generator's.
    G = Generator(GeneratorConfig(resolution_px=RES, z_dim=Z_DIM, fmap_base=64, fmap_max=16))
    _write_generator_export(tmp_path / "gen_b", G, label_space=("Pneumonia", "No Finding"))
    with pytest.raises(LabelError, match=r"class_names: .*missing \[\].*extra \['Atelectasis'"):
        prepare_synthesis(_options(sources, out, generator=str(tmp_path / "gen_b")))
    # A labeller at another resolution.
    G64 = Generator(GeneratorConfig(resolution_px=64, z_dim=Z_DIM, fmap_base=64, fmap_max=16))
    _write_generator_export(tmp_path / "gen64", G64)
    with pytest.raises(ConfigError, match=r"reads 32 px but generator .* makes 64 px"):
        prepare_synthesis(_options(sources, out, generator=str(tmp_path / "gen64")))
    # Label files naming unknown labels, or labels the labeller cannot judge.
    bad = tmp_path / "labels.csv"
    bad.write_text("label,weight\nMass,2\nEffusoin,1\n")
    with pytest.raises(
        LabelError, match=r"labels.csv: line 3: unknown label 'Effusoin' \(did you mean 'Effusion'"
    ):
        prepare_synthesis(_options(sources, out, labels=str(bad)))
    for label in ("Hernia", BELOW_CHANCE):
        (tmp_path / "labels.json").write_text(json.dumps({"Mass": 1, label: 1}))
        with pytest.raises(LabelError, match=f"key '{label}': label '{label}' cannot be a target"):
            prepare_synthesis(_options(sources, out, labels=str(tmp_path / "labels.json")))
    with pytest.raises(ConfigError, match="neither a file nor"):
        prepare_synthesis(_options(sources, out, labels="matchsite"))
    with pytest.raises(ConfigError, match="no hub was given"):
        prepare_synthesis(_options(sources, out, generator="3f9a1c07deadbeef"))
    assert not out.exists()


def test_a_class_is_callable_only_when_its_val_auc_ci_is_above_chance():
    cfg = LabellerConfig(resolution_px=RES, class_names=("Mass", "Nodule", "Effusion", "Edema",
                                                         "Hernia", "No Finding"))  # fmt: skip
    classes = [
        ClassMetrics(name="Mass", threshold_logit=0.1, val_auc=0.80, val_auc_ci95=(0.62, 0.93)),
        ClassMetrics(name="Nodule", threshold_logit=0.2, val_auc=0.57, val_auc_ci95=(0.44, 0.70)),
        ClassMetrics(name="Effusion", threshold_logit=0.3, val_auc=0.62, val_auc_ci95=(0.50, 0.74)),
        ClassMetrics(name="Edema", threshold_logit=0.4, val_auc=0.70),  # no CI: point estimate
        ClassMetrics(name="Hernia", threshold_logit=0.5, val_auc=0.48),
        ClassMetrics(name="No Finding", threshold_logit=0.6, val_auc=None),
    ]
    card = LabellerCard(labeller_config=cfg, classes=classes)
    assert usable_thresholds(card, 0.5) == [0.1, None, None, 0.4, None, None]
    assert usable_thresholds(card, 0.75) == [None, None, None, None, None, None]


def test_label_file_mix_and_registry_ids(sources, tmp_path):
    (tmp_path / "mix.csv").write_text("label,weight\nEffusion,3\nNo Finding,1\n")
    pulled = []

    def puller(artifact_id, out_dir, kind):  # stands in for HubClient.pull
        pulled.append((artifact_id, kind))
        shutil.copytree(sources / ("gen" if kind == "generator" else "lab"), out_dir)
        return out_dir

    job = prepare_synthesis(
        _options(sources, tmp_path / "m", labels=str(tmp_path / "mix.csv"), num_images=40,
                 generator="a" * 64, labeller="b" * 64, pull_dir=tmp_path / "pulled"),
        puller,
    )  # fmt: skip
    assert pulled == [("a" * 64, "generator"), ("b" * 64, "labeller")]
    assert job.plan.target_weights == {"Effusion": 0.75, "No Finding": 0.25}
    targets = [p.target_class for p in job.plan.patients]
    assert abs(targets.count("Effusion") - 0.75 * len(targets)) <= 1
    # match-site follows the generator's training counts.
    site = prepare_synthesis(_options(sources, tmp_path / "s", labels="match-site"))
    counts = {n: 10 * (i + 1) for i, n in enumerate(NIH_LABELS) if n not in NOT_CALLABLE}
    assert site.plan.target_weights == pytest.approx(
        {n: c / sum(counts.values()) for n, c in counts.items()}
    )


def test_torn_journal_tail_is_dropped(sources, tmp_path):
    job = prepare_synthesis(_options(sources, tmp_path / "t"))
    writer = ArchiveWriter(tmp_path / "t", job.plan)
    writer.log_event(
        {"event": "gave_up", "patient_id": 1, "target_class": "Mass", "reason": "plateau"}
    )
    with open(tmp_path / "t" / JOURNAL_FILE, "ab") as handle:
        handle.write(b'{"event": "gave_up", "pat')
    state = writer.replay()
    assert state.failures == {1: 1}
    assert (tmp_path / "t" / JOURNAL_FILE).read_bytes().endswith(b'"plateau"}\n')


def test_command_logs_progress_lines_and_writes_the_archive(sources, caplog):
    """``radshare-hub synthesize`` off a terminal: progress as log lines, a complete archive."""
    import logging

    from typer.testing import CliRunner

    from hub.cli import app

    out = sources.parent / "cli-archive"
    argv = ["synthesize", "--generator", str(sources / "gen"), "--labeller", str(sources / "lab")]
    argv += ["--out", str(out), "--size", "60", "--labels", "balanced", "--seed", "3"]
    argv += ["--device", "cpu", "--batch-size", "16", "--max-steps", "80", "--plateau-steps", "25"]
    argv += ["--trust-local-export"]
    # A training export is no registered generator: the audit policy needs an override,
    # recorded in the hub's registry (hub.registry.audit_policy).
    from hub.registry.sqlite_registry import SqliteRegistry

    registry = SqliteRegistry(sources.parent / "cli-hub")
    argv += ["--hub-root", str(registry.root), "--override-audit", "synthesis CLI test export"]
    with caplog.at_level(logging.INFO, logger="radshare.hub.synthesis"):
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("synthesize:")]
    assert lines[0] == "synthesize: 0/60 images already written"
    assert lines[-1].startswith("synthesize: 100% (60 of 60 images), ")
    table = pd.read_csv(out / "Data_Entry.csv")
    assert len(table) == 60 and all((out / "images" / n).is_file() for n in table["Image Index"])


def test_archive_from_a_bundle_names_its_site_and_annotated_labels(sources, tmp_path):
    """Pooling needs no ``--archive SITE=DIR --labels``: the archive's manifest says both."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hub.pooling.archive import read_archive
    from site_node.publish import build_generator_bundle

    shutil.copytree(sources / "gen", tmp_path / "run" / "export")
    key = Ed25519PrivateKey.generate()
    bundle, _ = build_generator_bundle(
        tmp_path / "run", site_id="a", signing_key=key, override_audit="synthesis test, no audit"
    )
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keyring = ConsortiumKeyring({"a": pem}, source="consortium-keyring.json")
    out = tmp_path / "archive"
    manifest = synthesize(
        _options(
            sources, out, generator=str(bundle), num_images=20, unlabelled=True, trusted=keyring
        )
    )
    callable_ = set(manifest.callable_classes)
    assert manifest.site_id == "a"
    assert manifest.annotated_labels == [n for n in NIH_LABELS if n in callable_ | {"No Finding"}]
    source = read_archive(out)  # no site id or label list given
    assert source.site_id == "a"
    assert list(source.annotated_labels) == manifest.annotated_labels
    assert not set(NOT_CALLABLE) & set(source.annotated_labels)
