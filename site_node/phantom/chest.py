"""Draw a normal chest into a :class:`~site_node.phantom.scene.Scene`.

Soft tissue and bone add density; lung air (the only air a finding can fill)
subtracts it; gas outside the lungs (trachea, stomach) is negative ``extra``;
vessels and interstitium go into the marking layer that only shows inside
aerated lung. In these density units the mediastinum is about 0.8 and an
aerated lung about 0.2, before the tone curve.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from site_node.phantom.anatomy import (
    Anatomy,
    cage_half_width,
    diaphragm_v,
    heart_shape,
    mediastinum_half_width,
)
from site_node.phantom.scene import F32, Scene, band_outline

__all__ = ["draw_chest", "heart_mask", "smooth"]

SIDES = (-1, 1)


def smooth(image: np.ndarray, sigma_px256: float, resolution_px: int) -> np.ndarray:
    """Gaussian blur with a sigma given in pixels of a 256 px image."""
    return gaussian_filter(image, sigma_px256 * resolution_px / 256, mode="nearest")


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def draw_chest(scene: Scene, anatomy: Anatomy, view: str, rng: np.random.Generator) -> None:
    """Draw body, lungs, airways, heart, bones and lung markings of ``anatomy``."""
    _draw_body(scene, anatomy)
    _draw_lungs(scene, anatomy)
    _draw_airways(scene, anatomy)
    _draw_spine(scene, anatomy)
    _draw_ribs(scene, anatomy)
    _draw_shoulders(scene, anatomy, view)
    _draw_hila(scene, anatomy)
    _draw_markings(scene, anatomy, rng)
    if anatomy.sex == "F":
        _draw_breasts(scene, anatomy)
    if anatomy.gastric_bubble:
        _draw_gastric_bubble(scene, anatomy)


def _draw_body(scene: Scene, anatomy: Anatomy) -> None:
    """Soft tissue thickest at the midline; neck on top; the abdomen below the domes."""
    ramp = _smoothstep((scene.v + 1.12) / 0.3)
    half_width = (
        anatomy.neck_half_width + (anatomy.body_half_width - anatomy.neck_half_width) * ramp
    )
    chord = np.clip(1 - (scene.u / half_width) ** 2, 0, 1)
    abdomen = _smoothstep((scene.v - anatomy.dome_v) / 0.25)
    thickness = 0.72 * (0.6 + 0.4 * ramp)
    scene.tissue += thickness * chord**0.5 + F32(0.08) * abdomen * (chord > 0)


def heart_mask(scene: Scene, anatomy: Anatomy) -> np.ndarray:
    """Boolean mask of the cardiac silhouette."""
    heart = heart_shape(anatomy)
    dv = (scene.v - F32(heart.centre_v)) / F32(heart.half_v)
    du = (scene.u - F32(heart.centre_u) - F32(heart.shear) * (scene.v - F32(heart.centre_v))) / F32(
        heart.half_u
    )
    return du * du + dv * dv <= 1


def _lung_mask(scene: Scene, anatomy: Anatomy) -> np.ndarray:
    """Boolean mask of both lungs: inside the cage, above the domes, beside the mediastinum."""
    side, a, v = np.where(scene.u > 0, 1, -1), np.abs(scene.u), scene.v
    apex_a = 0.3 * anatomy.thorax_half_width
    inside = a < cage_half_width(anatomy, v)
    inside &= v < diaphragm_v(anatomy, side, a)
    inside &= v > anatomy.apex_v + 1.1 * (a - apex_a) ** 2
    inside &= a > mediastinum_half_width(anatomy, side, v)
    return inside & ~heart_mask(scene, anatomy)


def _draw_lungs(scene: Scene, anatomy: Anatomy) -> None:
    """Lung air, deeper (darker) towards the bases; sharp borders plus a soft falloff."""
    mask = _lung_mask(scene, anatomy).astype(F32)
    resolution_px = scene.frame.resolution_px
    scene.lung_soft = smooth(mask, 1.0, resolution_px)
    depth = 0.8 + 0.25 * np.clip(
        (scene.v - anatomy.apex_v) / (anatomy.dome_v - anatomy.apex_v), 0, 1
    )
    scene.lung_broad = smooth(mask, 5.0, resolution_px)
    scene.air += F32(anatomy.air_depth) * depth * (0.55 * scene.lung_soft + 0.45 * scene.lung_broad)


def _draw_airways(scene: Scene, anatomy: Anatomy) -> None:
    """Trachea down to the carina, and the two main bronchi."""
    carina_v = anatomy.apex_v + 0.36
    outlines = [band_outline(_resample((0.0, -1.1), (0.0, carina_v), 6), 0.032)]
    for side in SIDES:
        bronchus = _resample((0.0, carina_v - 0.01), (side * 0.15, carina_v + 0.13), 6)
        outlines.append(band_outline(bronchus, 0.018))
    scene.extra -= F32(0.12) * scene.polygon_mask(outlines)


def _resample(start: tuple[float, float], end: tuple[float, float], count: int) -> np.ndarray:
    """``count`` points evenly along a segment (a polyline a band can follow)."""
    t = np.linspace(0, 1, count)[:, None]
    return np.asarray(start) + t * (np.asarray(end) - np.asarray(start))


def _draw_spine(scene: Scene, anatomy: Anatomy) -> None:
    """Vertebral column: bright bodies and pedicles separated by darker discs."""
    column = np.clip((0.062 - np.abs(scene.u)) / 0.012, 0, 1)
    phase = (scene.v - anatomy.rib_top_v) / F32(anatomy.rib_spacing)
    bodies = 0.75 + 0.25 * (np.cos(2 * np.pi * phase) > -0.6)
    pedicles = np.exp(-(((np.abs(scene.u) - 0.045) / 0.012) ** 2)) * (
        np.cos(2 * np.pi * phase) > 0.3
    )
    scene.tissue += F32(0.07) * column * bodies + F32(0.03) * pedicles


def _draw_ribs(scene: Scene, anatomy: Anatomy) -> None:
    """Ten posterior ribs per side (arches) and five fainter anterior ribs, washed out off-lung."""
    t = np.linspace(0, 1, 14)
    posterior, anterior = [], []
    for side in SIDES:
        for index in range(10):
            top_v = anatomy.rib_top_v + index * anatomy.rib_spacing * (1 + 0.025 * index)
            lateral_v = top_v + 0.14
            lateral_a = float(cage_half_width(anatomy, np.asarray(lateral_v))) + 0.035
            a = 0.05 + t * (lateral_a - 0.05)
            v = top_v - 0.1 * np.sin(np.pi * t) + 0.14 * t**2
            posterior.append(band_outline(np.stack([side * a, v], 1), 0.021))
            if index < 5:
                a = lateral_a - t * (lateral_a - 0.3)
                v = lateral_v + 0.24 * t + 0.05 * np.sin(np.pi * t)
                anterior.append(band_outline(np.stack([side * a, v], 1), 0.019))
    bone = F32(0.085) * scene.polygon_mask(posterior) + F32(0.04) * scene.polygon_mask(anterior)
    scene.tissue += bone * (0.35 + 0.65 * scene.lung_broad)


def _draw_shoulders(scene: Scene, anatomy: Anatomy, view: str) -> None:
    """Clavicles, scapulae (over the lungs on AP) and humeral heads in the upper corners."""
    t = np.linspace(0, 1, 12)
    scapula_shift = 0.13 if view == "AP" else 0.0
    clavicles, scapulae = [], []
    for side in SIDES:
        a = 0.06 + 0.58 * t
        v = anatomy.clavicle_v - anatomy.clavicle_rise * t + 0.015 * np.sin(2 * np.pi * t)
        clavicles.append(band_outline(np.stack([side * a, v], 1), 0.03))
        scapula = np.array([[0.72, -0.8], [1.0, -0.82], [0.9, -0.15]]) - [scapula_shift, 0]
        scapulae.append(scapula * [side, 1])
        head_u, head_v = (
            side * (anatomy.body_half_width - 0.02),
            anatomy.clavicle_v - anatomy.clavicle_rise - 0.06,
        )
        win, deltoid = scene.blob(head_u, head_v + 0.1, 0.2, 0.35)
        scene.tissue[win] += F32(0.25) * deltoid
        win, head = scene.disc(head_u, head_v, 0.12, 0.03)
        scene.tissue[win] += F32(0.08) * head
    scene.tissue += F32(0.1) * scene.polygon_mask(clavicles) + F32(0.035) * scene.polygon_mask(
        scapulae
    )


def _draw_hila(scene: Scene, anatomy: Anatomy) -> None:
    """Hilar vessels: soft bright masses beside the mediastinum (left one higher)."""
    for side in SIDES:
        hilum_v = anatomy.apex_v + (0.62 if side < 0 else 0.58)
        win, blob = scene.blob(side * 0.2, hilum_v, 0.06, 0.1)
        scene.tissue[win] += F32(0.08) * blob


def _draw_markings(scene: Scene, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Lung markings: branching vessels from each hilum plus fine interstitial texture."""
    starts, ends, weights = _vessel_tree(anatomy)
    layer = rng.standard_normal(scene.shape, dtype=F32) * F32(0.06)
    scene.splat_segments(layer, starts, ends, weights)
    scene.markings += smooth(layer, 0.95, scene.frame.resolution_px)


def _vessel_tree(anatomy: Anatomy, levels: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments (starts [S, 2], ends [S, 2], weights [S]) of both pulmonary vessel trees.

    Eight trunks leave each hilum in a fan (angle 0 = lateral, positive = down);
    every segment forks in two, each child turned 0.25-0.6 rad, 60-80 % as long.
    The patient's seed fixes the trees, so follow-ups share them.
    """
    rng = np.random.default_rng(anatomy.seed)
    side = np.repeat([-1.0, 1.0], 8)
    hilum_v = anatomy.apex_v + np.where(side < 0, 0.62, 0.58)
    start = np.stack([side * 0.2 + rng.normal(0, 0.03, 16), hilum_v + rng.normal(0, 0.04, 16)], 1)
    angle = np.tile(np.linspace(-1.7, 1.4, 8), 2) + rng.normal(0, 0.12, 16)
    length, weight = np.full(16, 0.17), np.full(16, 0.32)
    starts, ends, weights = [], [], []
    for _ in range(levels):
        end = start + np.stack([side * np.cos(angle), np.sin(angle)], 1) * length[:, None]
        starts.append(start)
        ends.append(end)
        weights.append(weight)
        turn = rng.uniform(0.25, 0.6, (2, len(angle))) * np.array([[-1.0], [1.0]])
        start, side = np.concatenate([end, end]), np.concatenate([side, side])
        angle = np.concatenate([angle + turn[0], angle + turn[1]])
        length = np.concatenate([length, length]) * rng.uniform(0.6, 0.8, len(angle))
        weight = np.concatenate([weight, weight]) * 0.62
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(weights)


def _draw_breasts(scene: Scene, anatomy: Anatomy) -> None:
    """Breast shadows over the lower zones, densest at the inframammary fold."""
    for side in SIDES:
        centre_v = anatomy.dome_v - 0.1
        win, disc = scene.disc(side * 0.5, centre_v, 0.3, 0.04)
        ramp = np.clip((scene.v[win] - (centre_v - 0.3)) / 0.6, 0, 1)
        scene.tissue[win] += F32(0.09) * disc * ramp


def _draw_gastric_bubble(scene: Scene, anatomy: Anatomy) -> None:
    """Gas in the stomach fundus under the left hemidiaphragm, with a flat fluid level."""
    centre_v = anatomy.dome_v + anatomy.left_dome_drop + 0.13
    win, disc = scene.disc(0.36, centre_v, 0.07, 0.025)
    scene.extra[win] -= F32(0.14) * disc * (scene.v[win] < centre_v + 0.02)
