"""Pool synthetic archives of several sites: union label space, per-site masks, selection.

Label harmonisation (Han et al., "Breaking medical data sharing boundaries", 2020: the
NIH and Stanford GANs shared only 7 of 14 findings):

* the pooled label space is the union of every site's annotated labels, in NIH order;
* every site gets a 0/1 mask over that space: 1 where it annotated the label. An image
  is negative for a label only if its site annotated that label; elsewhere the label is
  unknown, and the pooled classifier's loss skips it (:mod:`shared.masked_loss`);
* counts per site and label: positives, negatives (annotated, absent) and unknown.

Selection (``PoolOptions.strategy``):

``all``
    every image of every archive;
``match-prevalence``
    resample images (with replacement) so that each label's pooled prevalence, over the
    images that annotate it, matches ``target_prevalence`` (default: the prevalence
    the archives themselves have overall, i.e. each label's positives over annotated
    images across all sites). Row weights come from raking (iterative proportional
    fitting of the label marginals, Deming & Stephan 1940), starting from equal weight
    per *archive*, so that a large archive does not dictate the mix;
``balance``
    class-balanced sampling: every label gets ``images_per_label`` positives (default:
    the smallest label's count), rarest label first, drawing without replacement;

then ``enrich`` adds, for each chosen label, N further images positive for it, drawn
without replacement from images not yet selected (Han et al. Fig. 4B).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.pooling.archive import ArchiveSource
from shared.errors import ConfigError
from shared.labels import NIH_LABELS, validate_labels

__all__ = [
    "PoolOptions",
    "PoolPlan",
    "PoolStrategy",
    "counts_by_site",
    "describe",
    "label_counts",
    "plan_labels",
    "plan_pool",
    "rake_weights",
    "site_masks",
    "table_of",
    "union_label_space",
]

log = logging.getLogger("radshare.hub.pooling")


class PoolStrategy(StrEnum):
    """How images are selected from the archives."""

    ALL = "all"
    MATCH_PREVALENCE = "match-prevalence"
    BALANCE = "balance"


class PoolOptions(BaseModel):
    """What to pool and how; written into the pooled archive's manifest."""

    model_config = ConfigDict(extra="forbid")

    strategy: PoolStrategy = PoolStrategy.ALL
    num_images: int | None = Field(
        default=None, ge=1, description="match-prevalence: images to draw"
    )
    target_prevalence: dict[str, float] | None = Field(
        None, description="match-prevalence: label -> prevalence; default: the archives' overall"
    )
    images_per_label: int | None = Field(
        default=None, ge=1, description="balance: positives per label"
    )
    enrich: dict[str, int] = Field(default_factory=dict, description="label -> extra images")
    seed: int = 0

    @field_validator("target_prevalence")
    @classmethod
    def _prevalences(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        validate_labels(value, where="target_prevalence")
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"target_prevalence values must be in [0, 1], got {bad}")
        return value

    @field_validator("enrich")
    @classmethod
    def _enrich(cls, value: dict[str, int]) -> dict[str, int]:
        validate_labels(value, where="enrich")
        bad = {k: v for k, v in value.items() if v < 0}
        if bad:
            raise ValueError(f"enrich counts must be >= 0, got {bad}")
        return value


@dataclass(frozen=True)
class PoolPlan:
    """The selected rows: source index and row per image, the label space and site masks."""

    label_space: tuple[str, ...]
    site_ids: tuple[str, ...]
    masks: dict[str, np.ndarray]  # site -> float32 [C], 1 where annotated
    source_index: np.ndarray  # int [M]: which source each selected image comes from
    row_index: np.ndarray  # int [M]: its row in that source
    reason: np.ndarray  # str [M]: "selected" or "enrich:<label>"

    def __len__(self) -> int:
        return len(self.row_index)


def union_label_space(sources: Sequence[ArchiveSource]) -> tuple[str, ...]:
    """Every label some site annotated, in NIH_LABELS order."""
    annotated = {name for source in sources for name in source.annotated_labels}
    return tuple(name for name in NIH_LABELS if name in annotated)


def site_masks(
    sources: Sequence[ArchiveSource], label_space: Sequence[str]
) -> dict[str, np.ndarray]:
    """Site -> float32 ``[C]`` mask over ``label_space`` (1 where the site annotated it).

    Raises:
        ConfigError: two archives of one site that disagree about what was annotated.
    """
    masks: dict[str, np.ndarray] = {}
    for source in sources:
        mask = np.array([name in source.annotated_labels for name in label_space], np.float32)
        previous = masks.setdefault(source.site_id, mask)
        if not np.array_equal(previous, mask):
            raise ConfigError(
                f"site {source.site_id!r}: archives disagree on annotated labels "
                f"({source.archive_name}: {list(source.annotated_labels)})"
            )
    return masks


def _columns(label_space: Sequence[str]) -> list[int]:
    return [NIH_LABELS.index(name) for name in label_space]


def _stacked(
    sources: Sequence[ArchiveSource], label_space: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels ``[N, C]``, masks ``[N, C]`` and source number ``[N]`` of every archive image."""
    columns = _columns(label_space)
    masks = site_masks(sources, label_space)
    labels = np.concatenate([s.labels[:, columns] for s in sources]).astype(np.float32)
    mask = np.concatenate([np.tile(masks[s.site_id], (len(s), 1)) for s in sources])
    source_of = np.concatenate([np.full(len(s), i) for i, s in enumerate(sources)])
    return labels * mask, mask.astype(np.float32), source_of


def label_counts(labels: np.ndarray, mask: np.ndarray, label_space: Sequence[str]) -> dict:
    """Label -> ``{"positives", "negatives", "unknown"}`` over rows of ``labels``/``mask``."""
    positives = (labels * mask).sum(axis=0)
    annotated = mask.sum(axis=0)
    return {
        name: {
            "positives": int(positives[c]),
            "negatives": int(annotated[c] - positives[c]),
            "unknown": int(len(mask) - annotated[c]),
        }
        for c, name in enumerate(label_space)
    }


def rake_weights(
    labels: np.ndarray,
    mask: np.ndarray,
    target: np.ndarray,
    initial: np.ndarray,
    *,
    iterations: int = 200,
    tolerance: float = 1e-6,
) -> np.ndarray:
    """Row weights whose weighted prevalence of each label (over annotated rows) is ``target``.

    Iterative proportional fitting: for each label in turn, positives are scaled by
    ``p / q`` and annotated negatives by ``(1 - p) / (1 - q)``, where ``q`` is the current
    weighted prevalence. Labels with NaN target are left free. Returns weights summing to 1.
    """
    weights = np.asarray(initial, dtype=np.float64).copy()
    for _ in range(iterations):
        worst = 0.0
        for c in np.flatnonzero(~np.isnan(target)):
            rows = mask[:, c] > 0
            pos = rows & (labels[:, c] > 0)
            total, positive = weights[rows].sum(), weights[pos].sum()
            if total <= 0 or positive <= 0 or positive >= total:
                continue
            q, p = positive / total, float(np.clip(target[c], 1e-6, 1 - 1e-6))
            weights[pos] *= p / q
            weights[rows & ~pos] *= (1 - p) / (1 - q)
            worst = max(worst, abs(p - q))
        if worst < tolerance:
            break
    return weights / weights.sum()


def _match_prevalence(
    labels: np.ndarray,
    mask: np.ndarray,
    source_of: np.ndarray,
    options: PoolOptions,
    label_space: Sequence[str],
    rng: np.random.Generator,
) -> np.ndarray:
    overall = (labels * mask).sum(0) / np.maximum(mask.sum(0), 1)
    target = overall.copy()
    for name, value in (options.target_prevalence or {}).items():
        if name not in label_space:
            raise ConfigError(f"target_prevalence: {name!r} is not in the pooled label space")
        target[list(label_space).index(name)] = value
    per_archive = np.bincount(source_of).astype(np.float64)
    initial = 1.0 / per_archive[source_of]
    weights = rake_weights(labels, mask, target, initial)
    num = options.num_images or len(labels)
    return rng.choice(len(labels), size=num, replace=True, p=weights)


def _balance(
    labels: np.ndarray, mask: np.ndarray, options: PoolOptions, rng: np.random.Generator
) -> np.ndarray:
    positives = (labels * mask).sum(axis=0)
    present = np.flatnonzero(positives > 0)
    quota = options.images_per_label or int(positives[present].min())
    chosen: set[int] = set()
    for c in present[np.argsort(positives[present], kind="stable")]:
        have = sum(1 for i in chosen if labels[i, c] > 0)
        pool = np.array([i for i in np.flatnonzero(labels[:, c] > 0) if i not in chosen])
        need = max(0, min(quota - have, len(pool)))
        if need:
            chosen.update(int(i) for i in rng.choice(pool, size=need, replace=False))
    return np.array(sorted(chosen), dtype=np.int64)


def _enrich(
    labels: np.ndarray,
    selected: np.ndarray,
    options: PoolOptions,
    label_space: Sequence[str],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[str]]:
    taken = set(selected.tolist())
    extra: list[int] = []
    reasons: list[str] = []
    for name, count in options.enrich.items():
        if name not in label_space:
            raise ConfigError(f"enrich: {name!r} is not in the pooled label space {label_space}")
        c = list(label_space).index(name)
        pool = np.array([i for i in np.flatnonzero(labels[:, c] > 0) if i not in taken])
        if len(pool) < count:
            raise ConfigError(
                f"enrich: {count} more {name!r} images asked for, only {len(pool)} unused "
                "in the archives; synthesize more of that class first"
            )
        draw = rng.choice(pool, size=count, replace=False) if count else np.array([], int)
        taken.update(int(i) for i in draw)
        extra.extend(int(i) for i in draw)
        reasons.extend([f"enrich:{name}"] * count)
    return np.array(extra, dtype=np.int64), reasons


def plan_pool(sources: Sequence[ArchiveSource], options: PoolOptions) -> PoolPlan:
    """Harmonise labels and select the pooled rows (no file is read or written).

    Raises:
        ConfigError: no archives, a label outside the pooled space, too few images to enrich.
    """
    if not sources:
        raise ConfigError("pool: no archives given")
    label_space = union_label_space(sources)
    labels, mask, source_of = _stacked(sources, label_space)
    rng = np.random.default_rng(options.seed)
    if options.strategy is PoolStrategy.ALL:
        selected = np.arange(len(labels))
    elif options.strategy is PoolStrategy.MATCH_PREVALENCE:
        selected = np.sort(_match_prevalence(labels, mask, source_of, options, label_space, rng))
    else:
        selected = _balance(labels, mask, options, rng)
    extra, extra_reasons = _enrich(labels, selected, options, label_space, rng)
    rows = np.concatenate([selected, extra]).astype(np.int64)
    offsets = np.cumsum([0] + [len(s) for s in sources])
    source_index = source_of[rows]
    reason = np.array(["selected"] * len(selected) + extra_reasons, dtype=object)
    plan = PoolPlan(
        label_space=label_space,
        site_ids=tuple(dict.fromkeys(s.site_id for s in sources)),
        masks=site_masks(sources, label_space),
        source_index=source_index,
        row_index=rows - offsets[source_index],
        reason=reason,
    )
    log.info(
        "pool plan: %d images from %d archives, %d labels, strategy %s",
        len(plan),
        len(sources),
        len(label_space),
        options.strategy.value,
    )
    return plan


def plan_labels(
    plan: PoolPlan, sources: Sequence[ArchiveSource]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels ``[M, C]``, masks ``[M, C]`` and site id per selected image of ``plan``."""
    columns = _columns(plan.label_space)
    labels = np.zeros((len(plan), len(columns)), np.float32)
    for i, (s, r) in enumerate(zip(plan.source_index, plan.row_index, strict=True)):
        labels[i] = sources[s].labels[r, columns]
    sites = [sources[s].site_id for s in plan.source_index]
    mask = np.stack([plan.masks[site] for site in sites]) if sites else np.zeros_like(labels)
    return labels * mask, mask, sites


def counts_by_site(
    plan: PoolPlan, sources: Sequence[ArchiveSource]
) -> dict[str, dict[str, dict[str, int]]]:
    """Site -> label -> positives / negatives / unknown among the selected images."""
    labels, mask, sites = plan_labels(plan, sources)
    sites_arr = np.array(sites, dtype=object)
    return {
        site: label_counts(labels[sites_arr == site], mask[sites_arr == site], plan.label_space)
        for site in plan.site_ids
    }


def table_of(plan: PoolPlan, sources: Sequence[ArchiveSource]) -> pd.DataFrame:
    """One row per selected image: site, archive, source row, image path, reason."""
    return pd.DataFrame(
        {
            "site": [sources[s].site_id for s in plan.source_index],
            "archive": [sources[s].archive_name for s in plan.source_index],
            "row": plan.row_index,
            "path": [
                sources[s].table["_path"].iloc[r]
                for s, r in zip(plan.source_index, plan.row_index, strict=True)
            ],
            "reason": plan.reason,
        }
    )


def describe(masks: Mapping[str, np.ndarray], label_space: Sequence[str]) -> dict[str, list[str]]:
    """Site -> annotated labels (the mask as names)."""
    return {
        site: [n for n, m in zip(label_space, mask, strict=True) if m]
        for site, mask in masks.items()
    }
