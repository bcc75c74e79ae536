"""Federated evaluation at a site: bootstrap CIs against shared.stats, aggregates-only replies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, MetricRecord
from helpers_cache import build_site_cache

from hub.flower.evaluate_server import request_content
from shared.evaluation_records import (
    EvaluationRequest,
    RareClassSetting,
    TrainRecipe,
    evaluation_from_records,
)
from shared.networks.labeller import Labeller, LabellerConfig
from shared.stats import bootstrap_ci, roc_auc
from site_node.evaluation.baseline import rare_class_rows
from site_node.evaluation.evaluate import predict_split, split_labels
from site_node.evaluation.metrics import bootstrap_auc_sens_spec, sens_spec
from site_node.flower.evaluate_task import evaluate_classifier_task

TINY = dict(resolution_px=32, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1))


@pytest.fixture(scope="module")
def cache_a(site_a, tmp_path_factory):
    return build_site_cache(site_a, tmp_path_factory.mktemp("cache-a"), resolutions_px=(32,))


def test_vectorised_bootstrap_matches_shared_stats():
    rng = np.random.default_rng(1)
    y = (rng.random(60) < 0.3).astype(int)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: ties
    threshold = 0.2
    got = bootstrap_auc_sens_spec(y, s, threshold, num_resamples=400, seed=7)
    auc_ref = bootstrap_ci(y, s, num_resamples=400, seed=7)
    sens_ref = bootstrap_ci(
        y, s, lambda a, b: sens_spec(a, b, threshold)[0], num_resamples=400, seed=7
    )
    spec_ref = bootstrap_ci(
        y, s, lambda a, b: sens_spec(a, b, threshold)[1], num_resamples=400, seed=7
    )
    assert got.auc == pytest.approx(auc_ref.estimate, abs=1e-12)
    np.testing.assert_allclose(got.auc_ci, (auc_ref.low, auc_ref.high), atol=1e-12)
    np.testing.assert_allclose(got.sensitivity_ci, (sens_ref.low, sens_ref.high), atol=1e-12)
    np.testing.assert_allclose(got.specificity_ci, (spec_ref.low, spec_ref.high), atol=1e-12)
    assert (got.sensitivity, got.specificity) == pytest.approx(sens_spec(y, s, threshold))
    assert got.num_resamples == auc_ref.num_resamples


def test_rare_class_keeps_five_percent_and_oversamples():
    labels = np.zeros((200, 2))
    labels[:60, 0] = 1
    kept, repeats = rare_class_rows(
        labels, 0, RareClassSetting(label="x", keep_fraction=0.05, strategy="oversample")
    )
    assert labels[kept, 0].sum() == 3 and len(kept) == 200 - 57
    assert len(repeats) == 3 * 19 and set(repeats) <= set(kept[labels[kept, 0] > 0])
    kept2, repeats2 = rare_class_rows(labels, 0, RareClassSetting(label="x", strategy="none"))
    np.testing.assert_array_equal(kept, kept2)
    assert len(repeats2) == 0


def _only_aggregates(content, num_classes: int, roc_points: int, n_images: int) -> None:
    """Every record is a known aggregate record; no list is as long as the image count."""
    assert set(content.keys()) == {
        "evaluation.meta",
        "evaluation.counts",
        "evaluation.metrics",
        "evaluation.roc",
    }
    assert not content.array_records
    for name, record in content.items():
        assert isinstance(record, ConfigRecord | MetricRecord), name
        for key, value in record.items():
            if isinstance(value, list):
                assert len(value) in (num_classes, roc_points, 0) or key in (
                    "training",
                    "training_keys",
                ), (name, key)
                assert len(value) < n_images, (name, key)
    meta = content.config_records["evaluation.meta"]
    assert set(meta.keys()) == {
        "site_id",
        "tag",
        "split",
        "classes",
        "threshold_source",
        "training_keys",
    }


def test_evaluate_reply_holds_aggregates_that_match_a_local_reference(cache_a):
    torch.manual_seed(0)
    cfg = LabellerConfig(
        class_names=("Effusion", "Infiltration", "Pneumonia", "No Finding"), **TINY
    )
    net = Labeller(cfg).eval()
    request = EvaluationRequest(tag="pooled", labeller_config=cfg, num_resamples=500)
    reply = evaluate_classifier_task(request_content(request, net), cache_a, site_id="a")
    n_test = len(cache_a.indices("test"))
    _only_aggregates(reply, 4, request.roc_points, n_test)
    evaluation = evaluation_from_records(reply)
    assert evaluation.site_id == "a" and evaluation.n_images == n_test
    # Independent reference: predict here and compute AUC with shared.stats.
    rows = cache_a.indices("test")
    logits = predict_split(net, cache_a.images(32), rows)
    labels = split_labels(cache_a, "test", cfg.class_names)
    for c, name in enumerate(cfg.class_names):
        result = evaluation.result(name)
        assert (result.n_pos, result.n_neg) == (
            int(labels[:, c].sum()),
            int(n_test - labels[:, c].sum()),
        )
        if min(result.n_pos, result.n_neg) >= request.min_count:
            assert result.auc == pytest.approx(roc_auc(labels[:, c], logits[:, c]), abs=1e-9)
            assert result.auc_low <= result.auc <= result.auc_high
            assert result.threshold_source in ("site-val", "classifier", "none")
        else:
            assert result.threshold_source == "withheld" and result.auc is None


def test_train_real_baseline_at_site_with_rare_class(cache_a):
    cfg = LabellerConfig(class_names=("Cardiomegaly", "Effusion", "No Finding"), **TINY)
    request = EvaluationRequest(
        tag="real-rare",
        mode="train-real",
        labeller_config=cfg,
        num_resamples=200,
        recipe=TrainRecipe(max_epochs=1, batch_size=64),
        rare_class=RareClassSetting(
            label="Cardiomegaly", keep_fraction=0.05, strategy="oversample"
        ),
    )
    reply = evaluate_classifier_task(request_content(request), cache_a, site_id="a")
    _only_aggregates(reply, 3, request.roc_points, len(cache_a.indices("test")))
    evaluation = evaluation_from_records(reply)
    train_labels = split_labels(cache_a, "train", cfg.class_names)
    before = int(train_labels[:, 0].sum())
    kept = max(1, round(0.05 * before))
    assert evaluation.training["rare_positives_before"] == before
    assert evaluation.training["rare_positives_kept"] == kept
    assert evaluation.training["oversampled_copies"] == before - kept


def test_rare_class_enriched_with_synthetic_images_sent_by_the_hub(cache_a):
    cfg = LabellerConfig(class_names=("Cardiomegaly", "Effusion", "No Finding"), **TINY)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32), dtype=np.uint8)
    labels = np.tile(np.array([1, 0, 0], np.float32), (12, 1))
    mask = np.ones_like(labels)
    request = EvaluationRequest(
        tag="rare:synthetic",
        mode="train-real",
        labeller_config=cfg,
        num_resamples=100,
        recipe=TrainRecipe(max_epochs=1, batch_size=64),
        rare_class=RareClassSetting(label="Cardiomegaly", strategy="synthetic"),
    )
    content = request_content(request, enrich=(images, labels, mask))
    evaluation = evaluation_from_records(evaluate_classifier_task(content, cache_a, site_id="a"))
    n_train = len(cache_a.indices("train"))
    before = evaluation.training["rare_positives_before"]
    kept = evaluation.training["rare_positives_kept"]
    assert evaluation.training["synthetic_images"] == 12
    assert evaluation.training["train_images"] == n_train - (before - kept) + 12
