"""Labeller training mechanics on small synthetic data: loss, weights, augmentation, run folder."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from shared.artifacts.labeller import (
    ClassMetrics,
    LabellerCard,
    load_labeller_export,
    save_labeller_export,
)
from shared.classifier_recipe import augment_batch
from shared.errors import ArtifactError, ConfigError
from shared.labels import NIH_LABELS
from shared.networks.labeller import Labeller, LabellerConfig
from site_node.data.cache import write_cache
from site_node.labeller.data import class_weights
from site_node.labeller.metrics import evaluate_classes
from site_node.labeller.module import weighted_bce_with_logits
from site_node.labeller.train import LabellerTrainOptions, train_labeller


def test_class_weights_follow_guendel():
    labels = np.array([[1, 0], [1, 0], [0, 0], [1, 1]], dtype=np.float32)
    w_pos, w_neg = class_weights(labels)
    # Class 0: N_p = 3, N_n = 1; class 1: N_p = 1, N_n = 3.
    torch.testing.assert_close(w_pos, torch.tensor([4 / 3, 4 / 1]))
    torch.testing.assert_close(w_neg, torch.tensor([4 / 1, 4 / 3]))


def test_weighted_bce_matches_the_formula_elementwise():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 3), torch.randint(0, 2, (6, 3)).float()
    w_pos, w_neg = torch.tensor([2.0, 3.0, 5.0]), torch.tensor([1.5, 1.2, 1.1])
    p = torch.sigmoid(logits.double())
    manual = -(w_pos * y * torch.log(p) + w_neg * (1 - y) * torch.log(1 - p)).mean()
    torch.testing.assert_close(
        weighted_bce_with_logits(logits, y, w_pos, w_neg).double(), manual, rtol=1e-5, atol=1e-6
    )


def test_augmentation_identity_flip_and_jitter_range():
    torch.manual_seed(1)
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    plain = dict(max_rotation_deg=0.0, brightness=0.0, contrast=0.0)
    torch.testing.assert_close(augment_batch(x, flip_p=0.0, **plain), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(augment_batch(x, flip_p=1.0, **plain), x.flip(-1), atol=1e-5, rtol=0)
    # Brightness alone scales the [0, 1] image by a factor within [0.9, 1.1].
    x01 = torch.rand(64, 1, 16, 16) * 0.8 + 0.1
    out01 = (augment_batch(x01 * 2 - 1, flip_p=0.0, max_rotation_deg=0.0, contrast=0.0) + 1) / 2
    factor = (out01 / x01).mean(dim=(1, 2, 3))
    assert factor.min() >= 0.9 - 1e-4 and factor.max() <= 1.1 + 1e-4
    assert factor.std() > 0.02  # it does vary from image to image
    # A 10° rotation keeps the centre pixel and stays in range.
    rotated = augment_batch(x, flip_p=0.0, brightness=0.0, contrast=0.0)
    assert rotated.min() >= -1 and rotated.max() <= 1
    assert not torch.allclose(rotated, x, atol=1e-3)


def test_evaluate_classes_thresholds_from_val_and_none_for_absent_classes():
    rng = np.random.default_rng(0)
    val_y = np.stack([rng.integers(0, 2, 80), np.zeros(80)], 1)
    test_y = np.stack([rng.integers(0, 2, 60), rng.integers(0, 2, 60)], 1)
    val_s, test_s = rng.normal(size=(80, 2)) + val_y, rng.normal(size=(60, 2)) + test_y
    rows = evaluate_classes(["Mass", "Nodule"], val_s, val_y, test_s, test_y, num_resamples=200)
    assert rows[1].threshold_logit is None and rows[1].val_auc is None
    assert rows[1].val_auc_ci95 is None
    assert rows[1].test_auc is not None and rows[1].test_auc_ci95 is not None
    # The validation CI: a percentile bootstrap over images, against scikit-learn's AUC.
    resampled = []
    rng = np.random.default_rng(0)
    for _ in range(200):
        pick = rng.integers(0, 80, 80)
        if 0 < val_y[pick, 0].sum() < 80:
            resampled.append(roc_auc_score(val_y[pick, 0], val_s[pick, 0]))
    assert rows[0].val_auc == pytest.approx(roc_auc_score(val_y[:, 0], val_s[:, 0]))
    assert rows[0].val_auc_ci95 == pytest.approx(tuple(np.quantile(resampled, [0.025, 0.975])))

    def j(t):
        return (val_s[val_y[:, 0] == 1, 0] >= t).mean() - (val_s[val_y[:, 0] == 0, 0] >= t).mean()

    assert j(rows[0].threshold_logit) == pytest.approx(max(j(t) for t in val_s[:, 0]))


def test_export_round_trip_and_refusals(tmp_path):
    cfg = LabellerConfig(resolution_px=32, class_names=("Mass", "No Finding"))
    labeller = Labeller(cfg).eval()
    card = LabellerCard(
        labeller_config=cfg,
        classes=[ClassMetrics(name="Mass", threshold_logit=0.3), ClassMetrics(name="No Finding")],
    )
    save_labeller_export(tmp_path / "export", labeller, card)
    loaded, loaded_card = load_labeller_export(tmp_path / "export", trust_local_export=True)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x), labeller(x))
    assert loaded_card.thresholds_logit == {"Mass": 0.3, "No Finding": None}
    assert loaded.embed(x).shape == (2, loaded.num_features)
    with pytest.raises(ValueError, match="expects"):
        loaded(torch.zeros(1, 1, 64, 64))
    # A card whose config does not fit the weights is refused on load.
    raw = json.loads((tmp_path / "export" / "labeller.json").read_text())
    raw["labeller_config"]["class_names"] = ["Mass", "Nodule", "No Finding"]
    raw["classes"].insert(1, {"name": "Nodule"})
    (tmp_path / "export" / "labeller.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="do not fit"):
        load_labeller_export(tmp_path / "export", trust_local_export=True)
    with pytest.raises(ValueError, match="unknown class names"):
        LabellerConfig(class_names=("Mass", "Tumour"))
    with pytest.raises(ValueError, match="power of two >= 32"):
        LabellerConfig(resolution_px=16)


def _synthetic_cache(path, num_images=48):
    """Bright squares = Mass, everything else No Finding; 16 patients of 3 images."""
    rng = np.random.default_rng(0)
    mass = rng.integers(0, 2, num_images)
    images = rng.integers(0, 60, (num_images, 32, 32)).astype(np.uint8)
    images[mass == 1, 10:20, 10:20] = 230
    table = pd.DataFrame(
        {
            "image_index": [f"{i:08d}_000.png" for i in range(num_images)],
            "patient_id": [str(i // 3) for i in range(num_images)],
            "split": np.array(["train", "train", "val", "test"])[(np.arange(num_images) // 3) % 4],
        }
    )
    for name in NIH_LABELS:
        table[name] = 0
    table["Mass"], table["No Finding"] = mass, 1 - mass
    write_cache(path, {32: images}, table, NIH_LABELS)
    return path


def test_train_labeller_end_to_end_and_run_folder_rules(tmp_path):
    cache = _synthetic_cache(tmp_path / "cache")
    options = LabellerTrainOptions(
        cache_dir=cache,
        out_dir=tmp_path / "run",
        resolution_px=32,
        class_names=["Mass", "No Finding"],
        max_epochs=2,
        batch_size=8,
        bootstrap_resamples=50,
        progress_bar=False,
    )
    result = train_labeller(options)
    for name in ("options.json", "checkpoints/last.ckpt", "export/labeller.safetensors", "logs"):
        assert (tmp_path / "run" / name).exists(), name
    assert [c.name for c in result.card.classes] == ["Mass", "No Finding"]
    assert result.card.classes[0].train_positives == int(
        pd.read_csv(cache / "table.csv").query("split == 'train'")["Mass"].sum()
    )
    assert result.card.data.images_per_split == {"train": 24, "val": 12, "test": 12}
    with pytest.raises(ConfigError, match="finished"):
        train_labeller(options)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "stray.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a labeller run"):
        train_labeller(options.model_copy(update={"out_dir": tmp_path / "other"}))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "options.json").write_text(json.dumps({"max_epochs": 99}))
    with pytest.raises(ConfigError, match="other options"):
        train_labeller(options.model_copy(update={"out_dir": tmp_path / "half"}))
    with pytest.raises(ConfigError, match="not in the label space"):
        train_labeller(
            options.model_copy(
                update={"out_dir": tmp_path / "x", "class_names": ["Mass", "Tumour"]}
            )
        )
