"""Segal et al. (2021)'s Fréchet-distance analyses: zero measure, class distances, MDS, dendrogram.

All functions take features ``[N, D]`` (from any extractor in
``shared.metrics.features``) plus labels and patient ids, so the same code runs
on Inception, labeller or random-conv features::

    zero_measure          FD between two patient-disjoint, label-stratified halves of
                          the real data (their "Stratified 0.53"): the floor of the metric
    class_distance_matrix FD between the images carrying label i and those carrying j
                          (multi-label sets overlap, as in the paper); row "No Finding"
                          is their Table 1, the matrix their Fig. 5
    classical_mds         2-D positions from the matrix (Torgerson scaling of the FD values)
    dendrogram plot       average-linkage hierarchical clustering of the matrix
"""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import dendrogram, linkage
from scipy.spatial.distance import squareform

from shared.errors import DataError
from shared.metrics.frechet import (
    feature_statistics,
    frechet_distance_from_features,
    frechet_distance_matrix,
)

__all__ = [
    "ClassDistances",
    "class_distance_matrix",
    "classical_mds",
    "patient_stratified_halves",
    "plot_dendrogram",
    "plot_mds",
    "sex_distance",
    "zero_measure",
]


def patient_stratified_halves(
    labels: np.ndarray, patient_ids: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Image rows of two halves: no patient in both, labels iteratively stratified per patient.

    Each patient's label vector is the union (max) of its images' labels; the
    patients are split by Sechidis et al.'s iterative stratification (2-fold).
    """
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    if len(patients) < 2:
        raise DataError(f"zero measure needs at least 2 patients, got {len(patients)}")
    per_patient = np.zeros((len(patients), labels.shape[1]))
    np.maximum.at(per_patient, inverse, np.asarray(labels))
    folds = MultilabelStratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    patients_a, _ = next(folds.split(np.zeros(len(patients)), per_patient))
    in_a = np.isin(inverse, patients_a)
    return np.flatnonzero(in_a), np.flatnonzero(~in_a)


def zero_measure(
    features: np.ndarray, labels: np.ndarray, patient_ids: np.ndarray, seeds: tuple[int, ...] = (0,)
) -> list[float]:
    """FD between the two halves of :func:`patient_stratified_halves`, one value per seed."""
    values = []
    for seed in seeds:
        rows_a, rows_b = patient_stratified_halves(labels, patient_ids, seed)
        values.append(frechet_distance_from_features(features[rows_a], features[rows_b]))
    return values


def sex_distance(features: np.ndarray, sex: np.ndarray) -> float:
    """FD between the images of male and female patients (Table 1's "Sex" row)."""
    sex = np.asarray(sex).astype(str)
    return frechet_distance_from_features(features[sex == "M"], features[sex == "F"])


class ClassDistances:
    """Pairwise FD between label sets: ``names``, ``counts`` (images per label), ``matrix``."""

    def __init__(self, names: list[str], counts: list[int], matrix: np.ndarray):
        self.names, self.counts, self.matrix = names, counts, matrix

    def to_baseline(self, baseline: str = "No Finding") -> dict[str, float]:
        """Distance of every class to ``baseline`` (Segal et al.'s Table 1)."""
        if baseline not in self.names:
            raise DataError(f"baseline {baseline!r} has too few images; classes: {self.names}")
        row = self.matrix[self.names.index(baseline)]
        return {name: float(value) for name, value in zip(self.names, row, strict=True)}


def class_distance_matrix(
    features: np.ndarray,
    labels: np.ndarray,
    label_space: tuple[str, ...] | list[str],
    min_images: int = 5,
) -> ClassDistances:
    """FD between the images of every pair of labels with at least ``min_images`` images."""
    names, counts, stats = [], [], []
    for column, name in enumerate(label_space):
        rows = np.flatnonzero(np.asarray(labels)[:, column] > 0.5)
        if len(rows) >= max(min_images, 2):
            names.append(name)
            counts.append(len(rows))
            stats.append(feature_statistics(features[rows]))
    if len(names) < 2:
        raise DataError(f"class distances need two labels with >= {min_images} images, got {names}")
    return ClassDistances(names, counts, frechet_distance_matrix(stats))


def classical_mds(distances: np.ndarray, dims: int = 2) -> np.ndarray:
    """Torgerson's classical scaling: coordinates ``[K, dims]`` whose distances fit the input."""
    d = np.asarray(distances, dtype=np.float64)
    centre = np.eye(len(d)) - 1.0 / len(d)
    gram = -0.5 * centre @ (d**2) @ centre
    values, vectors = np.linalg.eigh(gram)
    top = np.argsort(values)[::-1][:dims]
    return vectors[:, top] * np.sqrt(np.clip(values[top], 0.0, None))


def plot_mds(result: ClassDistances, title: str = "Classes by MDS of the FD matrix") -> Figure:
    """Scatter of the classes at their 2-D MDS positions (Segal et al.'s Fig. 5, left)."""
    coords = classical_mds(result.matrix)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    ax.scatter(coords[:, 0], coords[:, 1], c="tab:blue")
    for (x, y), name in zip(coords, result.names, strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(title=title, xlabel="MDS 1", ylabel="MDS 2")
    fig.tight_layout()
    return fig


def plot_dendrogram(
    result: ClassDistances, title: str = "Average-linkage clustering of the FD matrix"
) -> Figure:
    """Hierarchical clustering dendrogram of the classes (Segal et al.'s Fig. 5, right)."""
    tree = linkage(squareform(result.matrix, checks=False), method="average")
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    dendrogram(tree, labels=result.names, orientation="right", ax=ax, color_threshold=0)
    ax.set(title=title, xlabel="Fréchet distance")
    fig.tight_layout()
    return fig
