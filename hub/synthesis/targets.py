"""What the archive holds: class targets per synthetic patient, and series sizes.

``--labels`` chooses the mix of target classes:

* ``match-site``: the site's own prevalence, label by label, co-occurring findings
  included: each patient gets a whole target label vector from the max-entropy joint
  law of the site's marginal counts (``hub.synthesis.joint_labels``; the generator's
  ``data.counts_per_label`` over its training images, else the labeller's training
  positives). Only when neither states a number of images: one class per patient,
  proportional to the counts (below), as Segal et al. §4.5;
* ``balanced``: the same share for every class;
* a file: a CSV with columns ``label,weight`` (or a JSON object ``{label: weight}``).

Only classes the labeller can call (a Youden threshold exists and its validation AUC
is above chance) can be targets.
Patients are allocated to classes by largest remainder, then shuffled with the seed;
every series has 3 to 6 images and the sizes add up to the requested total.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from shared.errors import ConfigError, LabelError
from shared.labels import NIH_LABELS

__all__ = [
    "MAX_SERIES_IMAGES",
    "MIN_SERIES_IMAGES",
    "allocate_targets",
    "plan_series_sizes",
    "read_label_file",
    "target_weights",
]

MIN_SERIES_IMAGES, MAX_SERIES_IMAGES = 3, 6
LABEL_MODES = ("match-site", "balanced")


def _hint(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_label(label: str, where: str, judgeable: Sequence[str]) -> None:
    if label not in NIH_LABELS:
        raise LabelError(
            f"{where}: unknown label {label!r}{_hint(label, NIH_LABELS)}; "
            f"valid labels: {', '.join(NIH_LABELS)}"
        )
    if label not in judgeable:
        raise LabelError(
            f"{where}: label {label!r} cannot be a target: the labeller has no usable threshold "
            f"for it (no validation positives, or a validation AUC at or below chance); "
            f"targets: {', '.join(judgeable)}"
        )


def _weight(text: object, where: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LabelError(f"{where}: weight {text!r} is not a number") from None
    if not np.isfinite(value) or value < 0:
        raise LabelError(f"{where}: weight {text!r} must be a finite number >= 0")
    return value


def _rows(path: Path) -> list[tuple[str, str, object]]:
    """``(where, label, weight)`` per entry of a CSV or JSON label file."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise LabelError(f"{path}: not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise LabelError(f"{path}: expected a JSON object {{label: weight}}")
        return [(f"{path}: key {k!r}", str(k), v) for k, v in data.items()]
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or {"label", "weight"} - set(reader.fieldnames):
            raise LabelError(f"{path}: needs a header with columns 'label' and 'weight'")
        return [
            (f"{path}: line {i}", (row["label"] or "").strip(), row["weight"])
            for i, row in enumerate(reader, start=2)
        ]


def read_label_file(path: Path | str, judgeable: Sequence[str]) -> dict[str, float]:
    """Target weights from a label file; LabelError naming file, line and value."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--labels: {path} is neither a file nor one of {', '.join(LABEL_MODES)}")
    weights: dict[str, float] = {}
    for where, label, weight in _rows(path):
        _check_label(label, where, judgeable)
        if label in weights:
            raise LabelError(f"{where}: label {label!r} appears twice")
        weights[label] = _weight(weight, where)
    if not weights or sum(weights.values()) <= 0:
        raise LabelError(f"{path}: no label with a positive weight")
    return weights


def target_weights(
    labels: str,
    judgeable: Sequence[str],
    site_counts: Mapping[str, int] | None,
    labeller_counts: Mapping[str, int],
) -> dict[str, float]:
    """Normalised target weights (sum 1) for ``--labels`` over the judgeable classes."""
    if not judgeable:
        raise LabelError("the labeller has no class with a threshold: nothing can be targeted")
    if labels == "balanced":
        raw = {name: 1.0 for name in judgeable}
    elif labels == "match-site":
        counts = {n: float((site_counts or {}).get(n, 0)) for n in judgeable}
        if sum(counts.values()) <= 0:
            counts = {n: float(labeller_counts.get(n, 0)) for n in judgeable}
        if sum(counts.values()) <= 0:
            raise ConfigError("--labels match-site: neither generator nor labeller states counts")
        raw = counts
    else:
        raw = read_label_file(labels, judgeable)
    total = sum(raw.values())
    return {name: w / total for name, w in raw.items() if w > 0}


def allocate_targets(num_patients: int, weights: Mapping[str, float], seed: int) -> list[str]:
    """One target class per patient: largest-remainder shares of ``weights``, shuffled."""
    names = list(weights)
    share = np.array([weights[n] for n in names], dtype=np.float64) * num_patients
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: num_patients - counts.sum()]:
        counts[i] += 1
    targets = [name for name, k in zip(names, counts, strict=True) for _ in range(k)]
    rng = np.random.default_rng([seed, 2])
    return [targets[i] for i in rng.permutation(len(targets))]


def plan_series_sizes(num_images: int, seed: int) -> list[int]:
    """Series sizes, each uniform in 3..6, adjusted at the end to add up to ``num_images``."""
    if num_images < MIN_SERIES_IMAGES:
        raise ConfigError(f"--size: {num_images} < {MIN_SERIES_IMAGES}, the smallest series")
    rng = np.random.default_rng([seed, 3])
    sizes: list[int] = []
    remaining = num_images
    while remaining > 2 * MAX_SERIES_IMAGES:
        sizes.append(int(rng.integers(MIN_SERIES_IMAGES, MAX_SERIES_IMAGES + 1)))
        remaining -= sizes[-1]
    # 3..12 left (7..12 once the loop ran): one series if it fits, else two near-equal ones.
    if remaining <= MAX_SERIES_IMAGES:
        return [*sizes, remaining]
    return [*sizes, remaining // 2, remaining - remaining // 2]
