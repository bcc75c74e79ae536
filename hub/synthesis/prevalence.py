"""What an archive's labels say against its target: prevalence with CIs, and severities.

``prevalence.json`` (written with the archive, listed in its manifest) holds:

* per annotated label: the **target** prevalence (``match-site``: the site's own, from
  the generator's manifest; other modes: none), the **planned** one (the plan's target
  vectors, weighted by series size), the **achieved** one (the share of archive images
  whose ``Finding Labels`` carry it) and its 95% CI, a percentile bootstrap over
  *patients* (follow-ups of one patient share their findings, so patients are the
  independent units), and whether the target lies inside it. Where no image (or every
  image) carries a label the bootstrap collapses to a point, so the CI there is the
  exact Clopper–Pearson interval of 0 (or P) patients out of P;
* No Finding's exclusivity, checked on the achieved labels: images labelled No Finding
  together with a finding, and No Finding patients with a finding (both must be 0);
* patients whose achieved labels differ from their target vector, and abandoned ones;
* the severity jitter: the drawn ``|N(1, 1)|`` of every planned start, of the kept
  patients, and the achieved ``logit - Youden`` at their optimised centres, each as
  quantiles with the Kolmogorov–Smirnov statistic against ``|N(1, 1)|``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from shared.labels import NO_FINDING

__all__ = [
    "NUM_RESAMPLES",
    "PREVALENCE_FILE",
    "cluster_bootstrap_ci",
    "prevalence_rows",
    "severity_summary",
]

PREVALENCE_FILE = "prevalence.json"
NUM_RESAMPLES = 2000
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def cluster_bootstrap_ci(
    positives: np.ndarray,
    sizes: np.ndarray,
    num_resamples: int = NUM_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of ``Σ positives / Σ sizes`` resampling patients (rows) with replacement.

    ``positives [P, L]`` are each patient's images carrying each label, ``sizes [P]`` its
    images; returns ``low, high`` ``[L]``.
    """
    num_patients = len(sizes)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(num_patients, np.full(num_patients, 1.0 / num_patients),
                              size=num_resamples).astype(np.float64)  # fmt: skip
    resampled = (weights @ positives) / (weights @ sizes)[:, None]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail], axis=0)
    return low, high


def _image_labels(labels: str) -> set[str]:
    return set(labels.split("|")) if labels else {NO_FINDING}


def prevalence_rows(
    labels: Sequence[str],
    patients: Sequence[tuple[Sequence[str], Sequence[str]]],
    planned: Sequence[tuple[Sequence[str], int]],
    target: Mapping[str, float],
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per label: target, planned, achieved (image share) and its patient-bootstrap CI.

    ``patients``: per written patient, its target labels and every image's ``Finding
    Labels``; ``planned``: per planned patient, its target labels and its series size.
    """
    names = list(labels)
    sizes = np.array([len(images) for _, images in patients], dtype=np.float64)
    positives = np.array(
        [[sum(n in _image_labels(im) for im in images) for n in names] for _, images in patients],
        dtype=np.float64,
    ).reshape(len(patients), len(names))
    plan_sizes = np.array([k for _, k in planned], dtype=np.float64)
    plan_pos = np.array([[k * (n in t) for n in names] for t, k in planned], dtype=np.float64)
    plan_share = plan_pos.sum(0) / max(plan_sizes.sum(), 1.0)
    if len(patients) == 0:
        low = high = achieved = np.full(len(names), np.nan)
    else:
        achieved = positives.sum(0) / sizes.sum()
        low, high = cluster_bootstrap_ci(positives, sizes, seed=seed)
        for j in np.flatnonzero((achieved == 0) | (achieved == 1)):
            i, k = int(j), len(patients) if achieved[j] == 1 else 0
            ci = stats.binomtest(k, len(patients)).proportion_ci(0.95, method="exact")
            low[i], high[i] = ci.low, ci.high
    rows = []
    for i, name in enumerate(names):
        goal = target.get(name)
        rows.append({
            "label": name, "target": goal, "planned": float(plan_share[i]),
            "achieved": float(achieved[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
            "within_ci": None if goal is None else bool(low[i] <= goal <= high[i]),
        })  # fmt: skip
    return rows


def _describe(values: np.ndarray, reference: Any) -> dict[str, Any]:
    if len(values) == 0:
        return {"n": 0}
    ks = stats.kstest(values, reference.cdf)
    return {
        "n": len(values), "mean": float(values.mean()),
        "quantiles": dict(zip([str(q) for q in QUANTILES],
                              np.quantile(values, QUANTILES).round(4).tolist(), strict=True)),
        "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
    }  # fmt: skip


def severity_summary(
    drawn_all: Sequence[float],
    drawn_kept: Sequence[float],
    achieved_kept: Sequence[float],
    mean_logit: float = 1.0,
    std_logit: float = 1.0,
) -> dict[str, Any]:
    """Drawn and achieved severities (logits above Youden) against ``|N(mean, std)|``."""
    reference = stats.foldnorm(c=mean_logit / std_logit, scale=std_logit)
    expected = dict(zip([str(q) for q in QUANTILES],
                        reference.ppf(QUANTILES).round(4).tolist(), strict=True))  # fmt: skip
    return {
        "reference": f"|N({mean_logit}, {std_logit}^2)|", "reference_quantiles": expected,
        "drawn_all_starts": _describe(np.asarray(drawn_all, dtype=np.float64), reference),
        "drawn_kept": _describe(np.asarray(drawn_kept, dtype=np.float64), reference),
        "achieved_minus_youden_kept": _describe(
            np.asarray(achieved_kept, dtype=np.float64), reference
        ),
    }  # fmt: skip
