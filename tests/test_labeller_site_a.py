"""The labeller on real site-A radiographs (32 px, CPU): per-class test AUCs beat chance.

Also home of the session-wide real-data builders (cache, labeller, generator) that
``test_classopt_site_a.py`` reuses: each is built once per pytest session under the
session's base temp folder.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_cache import built_once
from scipy.stats import mannwhitneyu

from shared.artifacts.labeller import load_labeller_export
from shared.stats import bootstrap_ci, macro_roc_auc, youden_threshold
from site_node.data.cache import SiteCache
from site_node.data.ingest import IngestOptions, ingest
from site_node.labeller.data import CacheSplitDataset
from site_node.labeller.metrics import format_table
from site_node.labeller.train import LabellerTrainOptions, predict_logits, train_labeller

pytestmark = pytest.mark.realdata

RESOLUTION_PX = 32
MIN_TEST_POSITIVES = 10  # classes with fewer test positives are left out of the macro AUC


def site_cache(tmp_path_factory, site_dir: Path, site: str = "a") -> Path:
    """A sample site ingested at up to 32 px, split 60/20/20 by patient (once per session)."""
    with built_once(tmp_path_factory, f"site-{site}-cache-32") as out:
        if not (out / "manifest.json").is_file():
            options = IngestOptions(max_resolution_px=RESOLUTION_PX, site_id=f"site-{site}",
                                    split_fractions=(0.6, 0.2, 0.2), seed=0)  # fmt: skip
            ingest(site_dir / "labels.csv", site_dir / "images", out, options)
    return out


def site_a_cache(tmp_path_factory, site_a: Path) -> Path:
    """Site A's cache (:func:`site_cache`)."""
    return site_cache(tmp_path_factory, site_a, "a")


def trained_site_a_labeller(
    tmp_path_factory, site_a: Path, name: str, site: str = "a", **options
) -> Path:
    """A labeller trained on a site's cache at 32 px under ``name`` (once per session);
    site A's unless ``site`` (and ``site_a``, its folder) say otherwise."""
    cache = site_cache(tmp_path_factory, site_a, site)
    with built_once(tmp_path_factory, name) as run:
        if not (run / "export" / "labeller.json").is_file():
            torch.manual_seed(0)
            train_labeller(
                LabellerTrainOptions(
                    cache_dir=cache, out_dir=run, resolution_px=RESOLUTION_PX, batch_size=32,
                    progress_bar=False, accelerator="cpu", **options,
                )
            )  # fmt: skip
    return run


def site_a_labeller(tmp_path_factory, site_a: Path) -> Path:
    """A DenseNet-121 labeller trained on site A at 32 px; returns its run folder."""
    return trained_site_a_labeller(
        tmp_path_factory, site_a, "site-a-labeller-32",
        max_epochs=6, early_stop_patience_epochs=3, bootstrap_resamples=1000,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, site_a):
    run = site_a_labeller(tmp_path_factory, site_a)
    cache = SiteCache(site_a_cache(tmp_path_factory, site_a))
    labeller, card = load_labeller_export(run / "export", trust_local_export=True)
    names = list(card.labeller_config.class_names)
    logits = {}
    for split in ("val", "test"):
        logits[split] = predict_logits(
            labeller, CacheSplitDataset(cache, split, RESOLUTION_PX, names)
        )
    return run, card, logits


def test_per_class_test_aucs_match_an_independent_mann_whitney(trained):
    run, card, logits = trained
    test_logits, test_labels = logits["test"]
    print("\n" + (run / "evaluation.txt").read_text())
    for c, metrics in enumerate(card.classes):
        y = test_labels[:, c]
        if 0 < y.sum() < len(y):
            u = mannwhitneyu(test_logits[y == 1, c], test_logits[y == 0, c]).statistic
            assert metrics.test_auc == pytest.approx(u / (y.sum() * (len(y) - y.sum())), abs=1e-6)
            low, high = metrics.test_auc_ci95
            assert low <= metrics.test_auc <= high and high - low > 0
        else:
            assert metrics.test_auc is None and metrics.test_auc_ci95 is None


def test_thresholds_are_youden_on_validation(trained):
    _, card, logits = trained
    val_logits, val_labels = logits["val"]
    for c, metrics in enumerate(card.classes):
        y, s = val_labels[:, c], val_logits[:, c]
        if not 0 < y.sum() < len(y):
            assert metrics.threshold_logit is None
            continue
        # Brute force over every candidate cut-off.
        j = [(s[y == 1] >= t).mean() - (s[y == 0] >= t).mean() for t in np.unique(s)]
        t = metrics.threshold_logit
        assert (s[y == 1] >= t).mean() - (s[y == 0] >= t).mean() == pytest.approx(max(j), abs=1e-6)
        assert t == pytest.approx(youden_threshold(y, s), abs=1e-5)


def test_macro_auc_over_labels_with_enough_positives_is_clearly_above_chance(trained):
    _, card, logits = trained
    test_logits, test_labels = logits["test"]
    kept = [c for c in range(test_labels.shape[1]) if test_labels[:, c].sum() >= MIN_TEST_POSITIVES]
    assert len(kept) >= 4, f"only {len(kept)} classes with >= {MIN_TEST_POSITIVES} test positives"

    def macro(y, s):
        value = macro_roc_auc(y[:, kept], s[:, kept])
        if np.isnan(value):
            raise ValueError("no class with both outcomes in this resample")
        return value

    ci = bootstrap_ci(test_labels, test_logits, macro, num_resamples=1000, seed=0)
    names = [card.classes[c].name for c in kept]
    print(f"\nmacro test AUC over {names}: {ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
    assert ci.low > 0.5, f"95% CI of the macro AUC [{ci.low:.3f}, {ci.high:.3f}] reaches chance"
    assert 0.5 < ci.estimate <= 1.0


def test_format_table_lists_every_class(trained):
    run, card, _ = trained
    table = (run / "evaluation.txt").read_text()
    assert all(c.name in table for c in card.classes)
    assert format_table([]).startswith("class")
