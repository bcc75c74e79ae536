"""Phantom findings show up where a reader (or a simple measurement) would look for them.

Two kinds of check: populations (``render_phantom`` of one label vs No Finding,
as a classifier would see them) and controlled pairs (one patient and one
acquisition rendered with and without a finding, so only the finding differs).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from shared.labels import NIH_FINDINGS
from site_node.phantom import FINDING_RENDERERS, get_style, render_phantom
from site_node.phantom.anatomy import Anatomy, for_view, heart_shape, lung_point, sample_anatomy
from site_node.phantom.findings import Finding, adjust_anatomy
from site_node.phantom.render import Acquisition, render_study, sample_acquisition
from site_node.phantom.scene import Frame

R = 256
# PA only, no detector noise, no rotation: measurements see anatomy, not acquisition.
CLEAN = get_style("hospital-a").model_copy(
    update={"ap_fraction": 0.0, "noise_sigma": (0.0, 0.0), "rotation_max_deg": 0.0}
)
SEEDS = range(12)


def _population(label: str) -> list[np.ndarray]:
    return [
        render_phantom([label], np.random.default_rng(s), CLEAN, R).astype(float) for s in SEEDS
    ]


def _dark_mask(image: np.ndarray) -> np.ndarray:
    """Aerated lung: darker than halfway between the chest's 10th and 90th percentiles."""
    chest = image[int(0.2 * R) : int(0.7 * R)]
    return image < 0.5 * (np.percentile(chest, 10) + np.percentile(chest, 90))


def _central_run(bright_row: np.ndarray) -> int:
    """Length of the run of bright pixels through the middle column (0 if it is dark)."""
    centre = len(bright_row) // 2
    if not bright_row[centre]:
        return 0
    dark = np.flatnonzero(~bright_row)
    left = dark[dark < centre].max(initial=-1)
    right = dark[dark > centre].min(initial=len(bright_row))
    return int(right - left - 1)


def silhouette_width_px(image: np.ndarray) -> int:
    """Widest bright central run over the rows 55-80 % down the lungs (the cardiac rows)."""
    dark = _dark_mask(image)
    quarter = R // 16
    both_lungs = (dark[:, R // 8 : R // 2 - quarter].sum(1) > 3) & (
        dark[:, R // 2 + quarter : 7 * R // 8].sum(1) > 3
    )
    rows = np.flatnonzero(both_lungs)
    top, height = rows[0], rows[-1] - rows[0]
    band = range(top + int(0.55 * height), top + int(0.8 * height))
    return max(_central_run(~dark[row]) for row in band)


def _patient(seed: int) -> tuple[Anatomy, Acquisition]:
    rng = np.random.default_rng(seed)
    return sample_anatomy(rng, "M", 50), sample_acquisition(rng, CLEAN, "PA")


def _render(seed: int, labels: list[str], render_seed: int = 7) -> np.ndarray:
    """The patient of ``seed`` in its PA acquisition, with ``labels`` at severity 0.8."""
    anatomy, acquisition = _patient(seed)
    findings = [Finding(label, seed, 0.8) for label in labels]
    rng = np.random.default_rng(render_seed)
    return render_study(anatomy, findings, acquisition, CLEAN, R, rng).astype(float)


def _controlled(label: str, seed: int) -> tuple[Anatomy, Acquisition, np.ndarray, np.ndarray]:
    """One patient, one PA acquisition: (anatomy, acquisition, without, with the finding)."""
    anatomy, acquisition = _patient(seed)
    return anatomy, acquisition, _render(seed, []), _render(seed, [label])


def _patch(
    image: np.ndarray, anatomy: Anatomy, acquisition: Acquisition, where: tuple[int, float, float]
) -> np.ndarray:
    """7x7 pixels around ``lung_point(anatomy, side, v_fraction, a_fraction)``."""
    frame = Frame(R, acquisition.rotation_deg, acquisition.shift_uv, acquisition.scale)
    u, v = lung_point(anatomy, *where)
    row, col = (round(float(x)) for x in frame.to_px(np.array(u), np.array(v)))
    return image[row - 3 : row + 4, col - 3 : col + 4]


def test_every_nih_finding_has_a_renderer() -> None:
    assert sorted(FINDING_RENDERERS) == sorted(NIH_FINDINGS)


@pytest.mark.parametrize("label", NIH_FINDINGS)
def test_each_finding_changes_the_image_of_the_same_patient(label: str) -> None:
    _, _, without, with_finding = _controlled(label, seed=3)
    changed = np.abs(with_finding - without) > 8
    assert changed.sum() >= 20, f"{label} changed {changed.sum()} pixels"


def test_cardiomegaly_silhouette_is_wider_than_normal() -> None:
    normal = [silhouette_width_px(x) for x in _population("No Finding")]
    enlarged = [silhouette_width_px(x) for x in _population("Cardiomegaly")]
    assert min(enlarged) > max(normal), (normal, enlarged)
    assert np.median(enlarged) > 1.2 * np.median(normal)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measured_silhouette_matches_the_drawn_heart(seed: int) -> None:
    for label in ("No Finding", "Cardiomegaly"):
        rng = np.random.default_rng(seed)
        anatomy, acquisition = sample_anatomy(rng, "F", 60), sample_acquisition(rng, CLEAN, "PA")
        findings = [] if label == "No Finding" else [Finding(label, seed, 1.0)]
        image = render_study(anatomy, findings, acquisition, CLEAN, R, rng).astype(float)
        drawn = for_view(adjust_anatomy(anatomy, findings), "PA")
        expected_px = heart_shape(drawn).width * R / 2 * acquisition.scale
        assert silhouette_width_px(image) == pytest.approx(expected_px, rel=0.08), label


def test_cardiothoracic_ratio_crosses_one_half_only_with_cardiomegaly() -> None:
    for seed in SEEDS:
        anatomy = sample_anatomy(np.random.default_rng(seed), "M", 90)
        enlarged = adjust_anatomy(anatomy, [Finding("Cardiomegaly", seed, 0.0)])
        assert anatomy.cardiothoracic_ratio < 0.5 < enlarged.cardiothoracic_ratio


def test_effusion_brightens_a_lung_base_and_leaves_the_apices() -> None:
    for seed in range(4):
        anatomy, acquisition, without, with_effusion = _controlled("Effusion", seed)
        basal = [
            _patch(with_effusion, anatomy, acquisition, (side, 0.95, 0.5)).mean()
            - _patch(without, anatomy, acquisition, (side, 0.95, 0.5)).mean()
            for side in (-1, 1)
        ]
        apical = [
            _patch(with_effusion, anatomy, acquisition, (side, 0.05, 0.5)).mean()
            - _patch(without, anatomy, acquisition, (side, 0.05, 0.5)).mean()
            for side in (-1, 1)
        ]
        assert max(basal) > 40, basal
        assert max(abs(d) for d in apical) < 2, apical


def test_effusion_population_has_brighter_lung_bases() -> None:
    def basal_brightness(image: np.ndarray) -> float:
        rows = slice(int(0.58 * R), int(0.68 * R))
        return max(
            image[rows, int(0.12 * R) : int(0.35 * R)].mean(),
            image[rows, int(0.65 * R) : int(0.88 * R)].mean(),
        )

    normal = [basal_brightness(x) for x in _population("No Finding")]
    effusion = [basal_brightness(x) for x in _population("Effusion")]
    assert np.median(effusion) > np.median(normal) + 15, (normal, effusion)


def test_emphysema_lungs_are_larger_and_darker() -> None:
    normal, emphysema = _population("No Finding"), _population("Emphysema")
    area = [[_dark_mask(x).mean() for x in group] for group in (normal, emphysema)]
    darkness = [[x[_dark_mask(x)].mean() for x in group] for group in (normal, emphysema)]
    assert np.median(area[1]) > 1.1 * np.median(area[0]), area
    assert min(area[1]) > np.median(area[0]), area
    assert np.median(darkness[1]) < np.median(darkness[0]) - 1, darkness


def _marking_texture(label: str, seed: int, where: tuple[int, float, float]) -> float:
    """Std of the difference of two renders that differ only in their parenchymal texture."""
    labels = [] if label == "No Finding" else [label]
    anatomy, acquisition = _patient(seed)
    difference = _render(seed, labels, render_seed=1) - _render(seed, labels, render_seed=2)
    return float(
        _patch(difference - gaussian_filter(difference, 4), anatomy, acquisition, where).std()
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pneumothorax_leaves_a_lateral_region_without_lung_texture(seed: int) -> None:
    textures = {
        side: [
            _marking_texture(label, seed, (side, 0.5, 0.97))
            for label in ("No Finding", "Pneumothorax")
        ]
        for side in (-1, 1)
    }
    normal_texture = min(textures[side][0] for side in (-1, 1))
    lost = min(textures[side][1] for side in (-1, 1))
    assert normal_texture > 1.0, textures
    assert lost < 0.15 * normal_texture, textures
