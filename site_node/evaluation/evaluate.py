"""Evaluate a classifier on the site's real split, returning aggregates only.

For each class of the classifier that the site annotated: counts of positives and
negatives in the split; ROC AUC; sensitivity and specificity at a Youden threshold,
each with a percentile bootstrap CI (:mod:`site_node.evaluation.metrics`); and the ROC
curve's TPR on a fixed grid of FPRs. The threshold is Youden's on the site's real
*validation* split when it has both classes (``site-val``), so test numbers are not
tuned on the test set; otherwise the classifier's own threshold (``classifier``,
from its synthetic validation); otherwise none. A class with fewer than
``min_count`` positives or negatives gets counts only (``withheld``).

Nothing per image leaves this module: logits and labels stay in local variables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from shared.evaluation_records import ClassResult, EvaluationRequest, SiteEvaluation
from shared.networks.labeller import Labeller
from shared.stats import youden_threshold
from site_node.data.cache import SiteCache
from site_node.evaluation.metrics import bootstrap_auc_sens_spec, roc_tpr_at

__all__ = ["annotated_labels", "evaluate_classifier", "images_at", "predict_split", "split_labels"]

log = logging.getLogger("radshare.site.evaluation")


def annotated_labels(cache: SiteCache, explicit: Sequence[str] | None = None) -> list[str]:
    """Labels the site annotated: ``explicit``, else those with a positive anywhere in the cache."""
    if explicit:
        return [name for name in cache.label_space if name in set(explicit)]
    counts = cache.labels().sum(axis=0)
    return [name for name, n in zip(cache.label_space, counts, strict=True) if n > 0]


def images_at(cache: SiteCache, resolution_px: int) -> np.ndarray:
    """uint8 ``[N, R, R]`` at ``resolution_px``: cached, or box-averaged from a multiple."""
    if resolution_px in cache.manifest.resolutions_px:
        return cache.images(resolution_px)
    larger = [
        r for r in cache.manifest.resolutions_px if r > resolution_px and r % resolution_px == 0
    ]
    if not larger:
        return cache.images(resolution_px)  # raises CacheError naming what is cached
    source, f = cache.images(min(larger)), min(larger) // resolution_px
    blocks = np.asarray(source, dtype=np.float32).reshape(
        len(source), resolution_px, f, resolution_px, f
    )
    return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)


def split_labels(cache: SiteCache, split: str, class_names: Sequence[str]) -> np.ndarray:
    """0/1 ``[n, C]`` of ``split`` over ``class_names`` (0 for a class the cache lacks)."""
    labels = cache.labels(split)
    out = np.zeros((len(labels), len(class_names)), np.float32)
    for c, name in enumerate(class_names):
        if name in cache.label_space:
            out[:, c] = labels[:, cache.label_space.index(name)]
    return out


@torch.no_grad()
def predict_split(
    classifier: Labeller, images: np.ndarray, rows: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Logits ``[len(rows), C]`` of the images at ``rows`` (eval mode, no augmentation)."""
    classifier.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        batch = torch.from_numpy(np.asarray(images[rows[start : start + batch_size]], np.uint8))
        out.append(classifier(batch[:, None].float() / 127.5 - 1.0).float())
    return torch.cat(out).numpy() if out else np.zeros((0, len(classifier.cfg.class_names)))


def _threshold(
    name: str, y_val: np.ndarray, s_val: np.ndarray, fallback: dict[str, float | None]
) -> tuple[float | None, str]:
    if 0 < y_val.sum() < len(y_val):
        return youden_threshold(y_val, s_val), "site-val"
    if fallback.get(name) is not None:
        return fallback[name], "classifier"
    return None, "none"


def _class_result(
    name: str,
    y: np.ndarray,
    s: np.ndarray,
    threshold: tuple[float | None, str],
    request: EvaluationRequest,
) -> ClassResult:
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if min(n_pos, n_neg) < request.min_count:
        return ClassResult(name=name, n_pos=n_pos, n_neg=n_neg, threshold_source="withheld")
    t, source = threshold
    boot = bootstrap_auc_sens_spec(y, s, t, num_resamples=request.num_resamples, seed=request.seed)
    grid = np.linspace(0.0, 1.0, request.roc_points)
    defined = t is not None
    return ClassResult(
        name=name,
        n_pos=n_pos,
        n_neg=n_neg,
        threshold_source=source,
        auc=boot.auc,
        auc_low=boot.auc_ci[0],
        auc_high=boot.auc_ci[1],
        threshold_logit=t,
        sensitivity=boot.sensitivity if defined else None,
        sensitivity_low=boot.sensitivity_ci[0] if defined else None,
        sensitivity_high=boot.sensitivity_ci[1] if defined else None,
        specificity=boot.specificity if defined else None,
        specificity_low=boot.specificity_ci[0] if defined else None,
        specificity_high=boot.specificity_ci[1] if defined else None,
        roc_tpr=roc_tpr_at(y, s, grid),
    )


def evaluate_classifier(
    classifier: Labeller,
    cache: SiteCache,
    request: EvaluationRequest,
    *,
    site_id: str,
    site_labels: Sequence[str] | None = None,
    training: dict[str, int] | None = None,
) -> SiteEvaluation:
    """Aggregates of ``classifier`` on ``request.split`` of the site's cache.

    Classes the site did not annotate get ``threshold_source="not-annotated"`` and zero counts.
    """
    names = list(classifier.cfg.class_names)
    annotated = set(annotated_labels(cache, site_labels))
    images = images_at(cache, classifier.cfg.resolution_px)
    rows, val_rows = cache.indices(request.split), cache.indices("val")
    scores, labels = (
        predict_split(classifier, images, rows),
        split_labels(cache, request.split, names),
    )
    val_scores, val_labels = (
        predict_split(classifier, images, val_rows),
        split_labels(cache, "val", names),
    )
    classes = []
    for c, name in enumerate(names):
        if name not in annotated:
            classes.append(
                ClassResult(name=name, n_pos=0, n_neg=0, threshold_source="not-annotated")
            )
            continue
        threshold = _threshold(
            name, val_labels[:, c], val_scores[:, c], request.fallback_thresholds_logit
        )
        classes.append(_class_result(name, labels[:, c], scores[:, c], threshold, request))
    log.info(
        "evaluated %r on %s split: %d images, %d classes",
        request.tag,
        request.split,
        len(rows),
        len(names),
    )
    return SiteEvaluation(
        site_id=site_id,
        tag=request.tag,
        split=request.split,
        n_images=len(rows),
        num_resamples=request.num_resamples,
        roc_fpr_grid=[float(x) for x in np.linspace(0.0, 1.0, request.roc_points)],
        classes=classes,
        training=dict(training or {}),
    )
