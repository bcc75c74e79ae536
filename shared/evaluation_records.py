"""What the hub asks of a site in ``evaluate.classifier`` and what the site answers.

The request (``EvaluationRequest``) travels as JSON in a ConfigRecord. A published
classifier is named by its registry id and the sha256 of its weights file
(``classifier_id``, ``weights_sha256``): the site pulls and verifies the bundle
itself and never evaluates weights that are not registered. Only the validation
round of federated labeller training sends weights inline (an ArrayRecord), and a
site answers it only when it takes part in that training (``site_node.flower``).
Optional synthetic enrichment images (hub → site only) travel in another ArrayRecord.
The reply (``SiteEvaluation``) travels as typed records that
hold **aggregates only** — per-class counts, ROC AUC, sensitivity and specificity at
a Youden threshold, their bootstrap CIs, a ROC curve sampled on a fixed grid of false
positive rates — and no per-image value: :func:`evaluation_to_records` writes only
these fields, and :func:`evaluation_from_records` refuses anything else.

Shared by ``site_node.flower.evaluate_task`` and ``hub.flower.evaluate_server``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from flwr.app import ConfigRecord, MetricRecord, RecordDict
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import FederationError
from shared.networks.labeller import LabellerConfig

__all__ = [
    "CLASSIFIER_RECORD",
    "ENRICH_RECORD",
    "REQUEST_RECORD",
    "ClassResult",
    "EvaluationRequest",
    "RareClassSetting",
    "SiteEvaluation",
    "TrainRecipe",
    "evaluation_from_records",
    "evaluation_to_records",
]

REQUEST_RECORD = "evaluate.request"
CLASSIFIER_RECORD = "evaluate.classifier"
ENRICH_RECORD = "evaluate.enrich"
_META, _COUNTS, _METRICS, _ROC = (
    "evaluation.meta",
    "evaluation.counts",
    "evaluation.metrics",
    "evaluation.roc",
)
_METRIC_NAMES = (
    "auc",
    "auc_low",
    "auc_high",
    "threshold_logit",
    "sensitivity",
    "sensitivity_low",
    "sensitivity_high",
    "specificity",
    "specificity_low",
    "specificity_high",
)


class TrainRecipe(BaseModel):
    """How a site trains its real-only baseline (the hub's classifier settings)."""

    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    augment: bool = True
    seed: int = 0


class RareClassSetting(BaseModel):
    """Han et al. Fig. 4B: keep a fraction of one class's positives in the real train split."""

    model_config = ConfigDict(extra="forbid")

    label: str
    keep_fraction: float = Field(default=0.05, gt=0, le=1)
    strategy: Literal["none", "oversample", "synthetic"] = "none"
    seed: int = 0
    unit: Literal["images", "patients"] = Field(
        default="images",
        description="keep_fraction of the positive images, or of the positive patients "
        "(all positive images of a kept patient stay, those of the others go)",
    )


class EvaluationRequest(BaseModel):
    """``evaluate.classifier``: evaluate the classifier sent, or train one on real data first."""

    model_config = ConfigDict(extra="forbid")

    tag: str = Field(description="the hub's name for this classifier, e.g. 'pooled'")
    mode: Literal["evaluate", "train-real"] = "evaluate"
    classifier_id: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="registry id of the classifier"
    )
    weights_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the bundle's classifier.safetensors (with classifier_id)",
    )
    split: Literal["val", "test"] = "test"
    labeller_config: LabellerConfig
    fallback_thresholds_logit: dict[str, float | None] = Field(default_factory=dict)
    num_resamples: int = Field(default=10_000, ge=1)
    seed: int = 0
    min_count: int = Field(
        default=5, ge=1, description="metrics withheld below this many pos or neg"
    )
    roc_points: int = Field(default=21, ge=2)
    recipe: TrainRecipe = Field(default_factory=lambda: TrainRecipe())
    rare_class: RareClassSetting | None = None
    sites: list[str] | None = Field(default=None, description="None: every site answers")


class ClassResult(BaseModel):
    """One class at one site: counts, and metrics unless withheld (too few cases)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    n_pos: int
    n_neg: int
    threshold_source: str = Field(description="site-val | classifier | none | withheld")
    auc: float | None = None
    auc_low: float | None = None
    auc_high: float | None = None
    threshold_logit: float | None = None
    sensitivity: float | None = None
    sensitivity_low: float | None = None
    sensitivity_high: float | None = None
    specificity: float | None = None
    specificity_low: float | None = None
    specificity_high: float | None = None
    roc_tpr: list[float] | None = Field(default=None, description="TPR at roc_fpr_grid")


class SiteEvaluation(BaseModel):
    """A site's answer: aggregates per class on one split of its real data."""

    model_config = ConfigDict(extra="forbid")

    site_id: str
    tag: str
    split: str
    n_images: int
    num_resamples: int
    roc_fpr_grid: list[float]
    classes: list[ClassResult]
    training: dict[str, int] = Field(default_factory=dict, description="counts only")

    def result(self, name: str) -> ClassResult | None:
        """The result of class ``name`` (None if the classifier has no such class)."""
        return next((c for c in self.classes if c.name == name), None)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def evaluation_to_records(evaluation: SiteEvaluation) -> RecordDict:
    """The reply records: meta (names), counts, metrics (NaN = withheld or undefined), ROC."""
    classes = evaluation.classes
    meta = ConfigRecord(
        {
            "site_id": evaluation.site_id,
            "tag": evaluation.tag,
            "split": evaluation.split,
            "classes": [c.name for c in classes],
            "threshold_source": [c.threshold_source for c in classes],
            "training_keys": sorted(evaluation.training),
        }
    )
    counts = MetricRecord(
        {
            "n_images": evaluation.n_images,
            "num_resamples": evaluation.num_resamples,
            "n_pos": [c.n_pos for c in classes],
            "n_neg": [c.n_neg for c in classes],
            "training": [int(evaluation.training[k]) for k in sorted(evaluation.training)],
        }
    )
    metrics = MetricRecord(
        {name: [_nan(getattr(c, name)) for c in classes] for name in _METRIC_NAMES}
    )
    roc = MetricRecord({"fpr_grid": [float(x) for x in evaluation.roc_fpr_grid]})
    for i, c in enumerate(classes):
        roc[f"tpr/{i}"] = [float(x) for x in (c.roc_tpr or [])]
    return RecordDict({_META: meta, _COUNTS: counts, _METRICS: metrics, _ROC: roc})


def _class(i: int, name: str, meta: Any, counts: Any, metrics: Any, roc: Any) -> ClassResult:
    """Class ``i`` from the reply's records (typed ``Any``: record values are unions)."""
    values = {k: _none(metrics[k][i]) for k in _METRIC_NAMES}
    tpr = [float(x) for x in roc.get(f"tpr/{i}", [])]
    return ClassResult(
        name=name,
        n_pos=int(counts["n_pos"][i]),
        n_neg=int(counts["n_neg"][i]),
        threshold_source=str(meta["threshold_source"][i]),
        roc_tpr=tpr or None,
        **values,
    )


def evaluation_from_records(content: RecordDict) -> SiteEvaluation:
    """Parse a site's reply; FederationError for anything but the four expected records."""
    expected = {_META, _COUNTS, _METRICS, _ROC}
    if set(content.keys()) != expected:
        raise FederationError(
            f"evaluation reply: records {sorted(content.keys())}, expected {sorted(expected)}"
        )
    meta: Any = content.config_records[_META]
    counts: Any = content.metric_records[_COUNTS]
    metrics: Any = content.metric_records[_METRICS]
    roc: Any = content.metric_records[_ROC]
    names = [str(n) for n in meta["classes"]]
    training = dict(zip(meta["training_keys"], counts["training"], strict=True))
    return SiteEvaluation(
        site_id=str(meta["site_id"]),
        tag=str(meta["tag"]),
        split=str(meta["split"]),
        n_images=int(counts["n_images"]),
        num_resamples=int(counts["num_resamples"]),
        roc_fpr_grid=[float(x) for x in roc["fpr_grid"]],
        classes=[_class(i, n, meta, counts, metrics, roc) for i, n in enumerate(names)],
        training={str(k): int(v) for k, v in training.items()},
    )
