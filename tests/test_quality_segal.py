"""Segal et al.'s analyses: patient-disjoint halves, class distances, MDS; site A's zero measure."""

from __future__ import annotations

import numpy as np
import pytest

from hub.quality import segal
from hub.quality.imageset import load_nih_folder
from shared.labels import NIH_LABELS
from shared.metrics.features import RandomConvExtractor, extract_features
from shared.metrics.frechet import frechet_distance, frechet_distance_from_features


def test_halves_are_patient_disjoint_and_label_stratified():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(300), rng.integers(1, 4, 300))
    per_patient = (rng.random((300, 4)) < [0.5, 0.2, 0.1, 0.05]).astype(float)
    labels = per_patient[patients]
    rows_a, rows_b = segal.patient_stratified_halves(labels, patients, seed=0)
    assert set(patients[rows_a]).isdisjoint(patients[rows_b])
    assert sorted(np.r_[rows_a, rows_b]) == list(range(len(patients)))
    prevalence_a = per_patient[np.unique(patients[rows_a])].mean(0)
    prevalence_b = per_patient[np.unique(patients[rows_b])].mean(0)
    np.testing.assert_allclose(prevalence_a, prevalence_b, atol=0.02)


def test_classical_mds_recovers_euclidean_distances():
    points = np.random.default_rng(1).normal(size=(7, 2))
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    coords = segal.classical_mds(distances)
    recovered = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.testing.assert_allclose(recovered, distances, atol=1e-9)


def test_class_distance_matrix_matches_pairwise_fd_and_closed_form():
    rng = np.random.default_rng(2)
    n = 4000
    labels = np.zeros((3 * n, len(NIH_LABELS)))
    features = np.concatenate([rng.normal(m, s, (n, 3)) for m, s in ((0, 1), (1, 1), (0, 2))])
    for k, column in enumerate(
        (NIH_LABELS.index("Edema"), NIH_LABELS.index("Mass"), NIH_LABELS.index("No Finding"))
    ):
        labels[k * n : (k + 1) * n, column] = 1
    result = segal.class_distance_matrix(features, labels, NIH_LABELS)
    assert result.names == ["Edema", "Mass", "No Finding"] and result.counts == [n, n, n]
    np.testing.assert_allclose(result.matrix, result.matrix.T)
    edema, mass = features[:n], features[n : 2 * n]
    assert result.matrix[0, 1] == pytest.approx(
        frechet_distance_from_features(edema, mass), rel=1e-7
    )
    # Population closed forms: |dmu|^2 = 3 for Edema-Mass; 3 (1 - 2)^2 = 3 for Edema-No Finding.
    assert result.to_baseline()["Edema"] == pytest.approx(3.0, rel=0.05)
    assert result.matrix[0, 1] == pytest.approx(3.0, rel=0.05)
    assert frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), 4 * np.eye(3)) == pytest.approx(
        3.0
    )


def test_plots_are_figures_with_every_class():
    rng = np.random.default_rng(3)
    labels = (rng.random((400, len(NIH_LABELS))) < 0.3).astype(float)
    result = segal.class_distance_matrix(rng.normal(size=(400, 4)), labels, NIH_LABELS)
    for fig in (segal.plot_mds(result), segal.plot_dendrogram(result)):
        texts = {t.get_text() for ax in fig.axes for t in ax.texts + ax.get_yticklabels()}
        assert set(result.names) <= texts


@pytest.fixture(scope="module")
def site_a_set(site_a):
    return load_nih_folder(site_a, 64, name="site-a")


@pytest.mark.realdata
def test_site_a_zero_measure_is_far_below_real_versus_phantom(site_a_set, tmp_path):
    phantom = pytest.importorskip("site_node.phantom")
    if not hasattr(phantom, "make_phantom_site"):
        pytest.skip("site_node.phantom.make_phantom_site is not there yet")
    phantom.make_phantom_site(
        tmp_path / "phantom", num_images=200, style="hospital-a", resolution_px=64, seed=0
    )
    phantom_set = load_nih_folder(tmp_path / "phantom", 64)
    extractor = RandomConvExtractor(seed=0)
    real = extract_features(extractor, site_a_set.images_u8)
    zero = segal.zero_measure(real, site_a_set.labels, site_a_set.patient_ids, seeds=(0, 1, 2))
    versus_phantom = frechet_distance_from_features(
        real, extract_features(extractor, phantom_set.images_u8)
    )
    assert 0 < max(zero) < versus_phantom / 5


@pytest.mark.realdata
def test_site_a_class_matrix_is_finite_and_separates_classes(site_a_set):
    features = extract_features(RandomConvExtractor(seed=0), site_a_set.images_u8)
    result = segal.class_distance_matrix(
        features, site_a_set.labels, site_a_set.label_space, min_images=20
    )
    assert "No Finding" in result.names and "Effusion" in result.names
    assert (
        np.isfinite(result.matrix).all()
        and (result.matrix[~np.eye(len(result.names), dtype=bool)] > 0).all()
    )
    zero = segal.zero_measure(features, site_a_set.labels, site_a_set.patient_ids, seeds=(0,))[0]
    # Halves of ~420 images are closer than the No Finding vs Effusion sets (398 vs 159 images).
    assert zero < result.to_baseline()["Effusion"]
