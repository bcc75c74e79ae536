"""Patient-level iterative stratified train/val/test split (after Sechidis et al. 2011).

Sechidis, Tsoumakas & Vlahavas, "On the Stratification of Multi-Label Data", ECML
PKDD 2011, Algorithm 1, applied to *patients*, so that no patient is in two splits.
A patient carries a count vector ``x``: per label, how many of its images have that
label (Segal et al.'s per-patient mean label vector times its image count), plus its
image count. Demands are in images, so the split preserves image-level label shares
and image fractions. With ``T_k`` the dataset total of column ``k`` and ``r_jk`` the
remaining demand of split ``j`` (initially ``fraction_j · T_k``):

1. Take the label with the fewest remaining images (ties at random).
2. Give each unassigned patient carrying it (most images of that label first, ties in
   a seeded random order) to the split maximising ``Σ_k x_k (2 r_jk − x_k) / T_k²``,
   the drop of ``Σ_k (r_jk / T_k)²`` (ties at random), and subtract ``x`` from
   ``r_j``. For a one-image, one-label patient this is Sechidis' rule "the split that
   most wants this label"; for a patient with many images it also weighs every other
   label and the split's size, which the plain rule does not (on site A, one patient
   holds 21 of the 30 Edema images and would otherwise land in val or test by the
   demand of a rare label it has once).
3. Repeat until no label remains; unlabelled patients go by the same rule.
4. Refine: move single patients between splits while the move lowers
   ``Σ_j [Σ_l (p_jl − p_l)² / p_l + L · ((n_j − fraction_j · N) / N)²]`` (``p_jl``:
   share of split ``j``'s ``n_j`` images carrying label ``l``, ``p_l`` over all images;
   ``L`` labels), at most 20 passes. Dividing by ``p_l`` (a Pearson χ²-like weight)
   makes a rare label missing from a split cost what it should: on site A it lowers
   both the worst absolute share deviation and the number of labels absent from a split.

Patients are sorted by id before the seeded shuffle, so the split depends only on
the data and the seed, not on row order. Splits with fraction 0 receive nobody.

Identical image bytes under two ids (a re-export, a copy filed under another patient)
would put the same image in train and test. :func:`split_groups` joins every patient
sharing an image's sha256 into one group, and ingest splits groups, so the copies
land in one split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.errors import ConfigError, SplitError

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLIT_NAMES",
    "iterative_stratified_split",
    "parse_fractions",
    "split_groups",
    "split_summary",
]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)


def parse_fractions(text: str | Sequence[float]) -> tuple[float, float, float]:
    """Parse ``"0.7,0.1,0.2"``; ConfigError unless three fractions >= 0 summing to 1."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        fractions = tuple(float(part) for part in parts)
    except ValueError as error:
        raise ConfigError(f"--split: {text!r} is not three numbers: {error}") from error
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"--split: {text!r} must be three fractions >= 0 (train,val,test) summing to 1"
        )
    return (fractions[0], fractions[1], fractions[2])


def _patient_counts(
    patient_ids: Sequence[str], labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted patients, each image's patient index, per-patient label and image counts."""
    patients, image_patient = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    label_counts = np.zeros((len(patients), labels.shape[1]), np.float64)
    np.add.at(label_counts, image_patient, labels.astype(np.float64))
    image_counts = np.bincount(image_patient, minlength=len(patients)).astype(np.float64)
    return patients, image_patient, label_counts, image_counts


def _choose_split(
    patient_counts: np.ndarray,
    demand: np.ndarray,
    totals: np.ndarray,
    active: np.ndarray,
    rng: np.random.Generator,
) -> int:
    """The split whose remaining demands best absorb the patient (ties at random)."""
    candidates = np.flatnonzero(active)
    residual = 2 * demand[candidates] - patient_counts
    gains = (patient_counts * residual / totals**2).sum(axis=1)
    return int(rng.choice(candidates[gains == gains.max()]))


def _stratify(
    label_counts: np.ndarray, image_counts: np.ndarray, fractions: np.ndarray, seed: int
) -> np.ndarray:
    """Split index (0, 1, 2) per patient by the constructive pass (module docstring, 1-3)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(image_counts))
    counts = np.column_stack([label_counts, image_counts])  # last column: images
    totals = np.maximum(counts.sum(axis=0), 1.0)
    demand = fractions[:, None] * counts.sum(axis=0)[None, :]
    active = fractions > 0
    assigned = np.full(len(image_counts), -1)
    remaining_per_label = label_counts.sum(axis=0)
    while (remaining_per_label > 0).any():
        candidates = np.flatnonzero(remaining_per_label > 0)
        fewest = remaining_per_label[candidates].min()
        label = int(rng.choice(candidates[remaining_per_label[candidates] == fewest]))
        carriers = order[(assigned[order] < 0) & (label_counts[order, label] > 0)]
        carriers = carriers[np.argsort(-label_counts[carriers, label], kind="stable")]
        for patient in carriers:
            split = _choose_split(counts[patient], demand, totals, active, rng)
            assigned[patient] = split
            demand[split] -= counts[patient]
            remaining_per_label -= label_counts[patient]
    for patient in order[assigned[order] < 0]:
        split = _choose_split(counts[patient], demand, totals, active, rng)
        assigned[patient] = split
        demand[split] -= counts[patient]
    return assigned


class _Objective:
    """Sum over splits of squared label-share deviations plus the size deviation (step 4)."""

    def __init__(self, label_counts: np.ndarray, image_counts: np.ndarray, fractions: np.ndarray):
        total_images = image_counts.sum()
        present = label_counts.sum(axis=0) > 0
        self.label_counts = label_counts[:, present]
        self.prevalence = self.label_counts.sum(axis=0) / total_images
        self.size_weight = label_counts.shape[1] / total_images**2
        self.targets = fractions * total_images

    def split_cost(self, split: int, counts: np.ndarray, images: float) -> float:
        if images <= 0:
            return float("inf")  # an emptied split is never better
        share_error = ((counts / images - self.prevalence) ** 2 / self.prevalence).sum()
        return float(share_error + self.size_weight * (images - self.targets[split]) ** 2)


def _refine(
    assigned: np.ndarray,
    label_counts: np.ndarray,
    image_counts: np.ndarray,
    fractions: np.ndarray,
    rng: np.random.Generator,
    max_passes: int = 20,
) -> np.ndarray:
    """Move single patients between splits while that lowers the objective (step 4)."""
    objective = _Objective(label_counts, image_counts, fractions)
    label_counts = objective.label_counts  # labels nobody carries play no part
    splits = np.flatnonzero(fractions > 0)
    counts = np.stack([label_counts[assigned == j].sum(axis=0) for j in range(3)])
    images = np.array([image_counts[assigned == j].sum() for j in range(3)])
    for _ in range(max_passes):
        moved = 0
        for patient in rng.permutation(len(assigned)):
            x, n, source = label_counts[patient], image_counts[patient], assigned[patient]
            stay = objective.split_cost(source, counts[source], images[source])
            leave = objective.split_cost(source, counts[source] - x, images[source] - n)
            for target in splits[splits != source]:
                before = stay + objective.split_cost(target, counts[target], images[target])
                after = leave + objective.split_cost(target, counts[target] + x, images[target] + n)
                if after < before - 1e-12:
                    counts[source] -= x
                    images[source] -= n
                    counts[target] += x
                    images[target] += n
                    assigned[patient] = target
                    moved += 1
                    break
        if moved == 0:
            break
    return assigned


def split_groups(patient_ids: Sequence[str], image_sha256: Sequence[str]) -> list[str]:
    """Per image, the id of its group: patients joined when they share identical image bytes.

    A group is named by its smallest patient id (union-find over the patients of each
    sha256), so patients without shared bytes keep their own id.
    """
    if len(patient_ids) != len(image_sha256):
        raise SplitError(f"{len(patient_ids)} patient ids for {len(image_sha256)} image hashes")
    parent = {str(p): str(p) for p in patient_ids}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    first_of: dict[str, str] = {}
    for patient, digest in zip(patient_ids, image_sha256, strict=True):
        a, b = find(str(patient)), find(first_of.setdefault(digest, str(patient)))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(str(p)) for p in patient_ids]


def iterative_stratified_split(
    patient_ids: Sequence[str],
    labels: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> np.ndarray:
    """Split name (``train``/``val``/``test``) for every image, patient-wise and stratified.

    ``patient_ids`` has one entry per image; ``labels`` is its 0/1 matrix ``[N, L]``.
    Raises SplitError when there are fewer patients than non-empty splits, or when a
    split with a positive fraction ends up empty.
    """
    fractions_arr = np.asarray(parse_fractions(fractions), np.float64)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != len(patient_ids):
        raise SplitError(f"labels of shape {labels.shape} do not match {len(patient_ids)} images")
    patients, image_patient, label_counts, image_counts = _patient_counts(patient_ids, labels)
    needed = int((fractions_arr > 0).sum())
    if len(patients) < needed:
        raise SplitError(
            f"{len(patients)} patient(s) cannot fill {needed} splits with fractions "
            f"{tuple(fractions_arr)}; need at least {needed} patients"
        )
    assigned = _stratify(label_counts, image_counts, fractions_arr, seed)
    refine_rng = np.random.default_rng([seed, 1])
    assigned = _refine(assigned, label_counts, image_counts, fractions_arr, refine_rng)
    empty = [SPLIT_NAMES[j] for j in np.flatnonzero(fractions_arr > 0) if not (assigned == j).any()]
    if empty:
        raise SplitError(
            f"split(s) {empty} got no patient out of {len(patients)}; use more patients "
            "or other --split fractions"
        )
    return np.asarray(SPLIT_NAMES, dtype=object)[assigned[image_patient]]


def split_summary(
    patient_ids: Sequence[str],
    labels: np.ndarray,
    splits: np.ndarray,
    label_space: Sequence[str],
) -> dict[str, Any]:
    """Patients and images per split; per label, count and share of images in each split.

    ``labels[label]["max_abs_deviation"]`` is ``max_split |p_split - p_all|`` over the
    non-empty splits.
    """
    patient_arr, splits = np.asarray(patient_ids, dtype=str), np.asarray(splits)
    labels = np.asarray(labels, np.float64)
    masks = {"all": np.ones(len(splits), bool)} | {name: splits == name for name in SPLIT_NAMES}
    per_label: dict[str, dict[str, Any]] = {}
    for column, label in enumerate(label_space):
        entry: dict[str, Any] = {}
        for name, mask in masks.items():
            count = int(labels[mask, column].sum())
            entry[name] = {"count": count, "fraction": count / max(int(mask.sum()), 1)}
        deviations = [
            abs(entry[name]["fraction"] - entry["all"]["fraction"])
            for name in SPLIT_NAMES
            if masks[name].any()
        ]
        entry["max_abs_deviation"] = max(deviations)
        per_label[label] = entry
    return {
        "patients": {name: len(set(patient_arr[masks[name]])) for name in SPLIT_NAMES},
        "images": {name: int(masks[name].sum()) for name in SPLIT_NAMES},
        "labels": per_label,
    }
