"""Label-dependent findings: how each NIH label changes the chest and what it paints on it.

A :class:`Finding` is one label in one patient: a seed (so its side, place and
shape stay put across follow-ups) and a severity in ``[0, 1]`` that may evolve.
Each label has a :class:`FindingRenderer` in :data:`FINDING_RENDERERS` with an
optional ``adjust`` (geometry: heart size, diaphragm, lung volume) and an
optional ``paint`` (density layers of the scene). Both draw from a generator
seeded by the finding, the side first, so they agree with each other.

Opacities replace lung air through ``scene.fill`` (0 = aerated, 1 = airless),
so they are exactly as bright as soft tissue at full strength and invisible
outside the lungs; lines (pleural line, Kerley B, reticulation) and the hernia's
sac and gas go into ``scene.extra``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from site_node.phantom.anatomy import Anatomy, cage_half_width, diaphragm_v, lung_point
from site_node.phantom.chest import smooth
from site_node.phantom.scene import F32, Scene, band_outline

__all__ = ["FINDING_RENDERERS", "Finding", "FindingRenderer", "adjust_anatomy", "paint_findings"]


@dataclass(frozen=True)
class Finding:
    """One label in one patient: ``seed`` fixes where it is, ``severity`` in [0, 1] how much."""

    label: str
    seed: int
    severity: float


Adjust = Callable[[Anatomy, np.random.Generator, float], Anatomy]
Paint = Callable[[Scene, Anatomy, np.random.Generator, float], None]


@dataclass(frozen=True)
class FindingRenderer:
    """How one label changes the geometry (``adjust``) and the density layers (``paint``)."""

    adjust: Adjust | None = None
    paint: Paint | None = None


def _side(rng: np.random.Generator) -> int:
    """-1 (patient's right, image left) or +1; always the first draw of a finding."""
    return -1 if rng.random() < 0.5 else 1


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _ramp(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Smoothstep from 0 at ``low`` to 1 at ``high`` (exactly 0 below, 1 above)."""
    t = np.clip((x - low) / (high - low), 0, 1)
    return t * t * (3 - 2 * t)


def _on_side(scene: Scene, side: int | None) -> np.ndarray:
    """1 on the pixels of one half of the chest (both halves when ``side`` is None)."""
    if side is None:
        return np.ones(scene.shape, F32)
    return (np.sign(scene.u) == side).astype(F32)


def _add_fill(scene: Scene, amount: np.ndarray, win: tuple[slice, slice] | None = None) -> None:
    """Replace lung air: fill = 1 - (1 - fill)(1 - amount), so opacities combine, never exceed 1."""
    target = scene.fill if win is None else scene.fill[win]
    target += (1 - target) * np.clip(amount, 0, 1).astype(F32)


# --- Geometry ---------------------------------------------------------------


def _adjust_cardiomegaly(anatomy: Anatomy, rng: np.random.Generator, severity: float) -> Anatomy:
    """Cardiothoracic ratio 0.55 → 0.65 with severity (PA; AP magnifies further)."""
    ratio = max(anatomy.cardiothoracic_ratio, 0.55 + 0.1 * severity)
    return dataclasses.replace(anatomy, cardiothoracic_ratio=ratio)


def _adjust_emphysema(anatomy: Anatomy, rng: np.random.Generator, severity: float) -> Anatomy:
    """Hyperinflation: low flat domes, wider chest, darker lungs, narrow vertical heart."""
    return dataclasses.replace(
        anatomy,
        dome_v=anatomy.dome_v + 0.1 + 0.1 * severity,
        dome_depth=anatomy.dome_depth * (0.5 - 0.25 * severity),
        thorax_half_width=anatomy.thorax_half_width + 0.02 + 0.02 * severity,
        air_depth=anatomy.air_depth * (1.12 + 0.1 * severity),
        cardiothoracic_ratio=anatomy.cardiothoracic_ratio * 0.85,
    )


def _adjust_volume_loss(anatomy: Anatomy, rng: np.random.Generator, severity: float) -> Anatomy:
    """Atelectasis: the hemidiaphragm of the collapsed side rises."""
    lift = 0.03 + 0.06 * severity
    if _side(rng) > 0:
        return dataclasses.replace(anatomy, left_dome_drop=anatomy.left_dome_drop - lift)
    return dataclasses.replace(
        anatomy, dome_v=anatomy.dome_v - lift, left_dome_drop=anatomy.left_dome_drop + lift
    )


def _adjust_fibrosis(anatomy: Anatomy, rng: np.random.Generator, severity: float) -> Anatomy:
    """Fibrosis shrinks the lungs: higher domes, slightly narrower chest."""
    return dataclasses.replace(
        anatomy,
        dome_v=anatomy.dome_v - 0.03 * severity,
        thorax_half_width=anatomy.thorax_half_width - 0.02 * severity,
    )


# --- Fluid and pleura ---------------------------------------------------------


def _paint_effusion(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Dependent fluid at the base, its upper edge a meniscus climbing the lateral wall."""
    first = _side(rng)
    sides = (first, -first) if rng.random() < 0.35 else (first,)
    for side in sides:
        height = (0.06 + 0.28 * severity) * rng.uniform(0.7, 1.0)
        a = np.abs(scene.u)
        lateral = np.clip(a / cage_half_width(anatomy, scene.v).clip(0.05), 0, 1)
        level = diaphragm_v(anatomy, side, np.asarray(0.2)) - height - 0.1 * lateral**3
        _add_fill(scene, 0.95 * _sigmoid((scene.v - level) / 0.012) * _on_side(scene, side))


def _paint_pleural_thickening(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """An irregular pleural rim along the lateral chest wall, thicker at the apex (apical cap)."""
    first = _side(rng)
    sides = (first, -first) if rng.random() < 0.4 else (first,)
    for side in sides:
        phase, frequency = rng.uniform(0, 2 * np.pi), rng.uniform(8, 16)
        depth = cage_half_width(anatomy, scene.v) - np.abs(scene.u)
        apical = np.clip((anatomy.apex_v + 0.35 - scene.v) / 0.3, 0, 1)
        wobble = 1 + 0.5 * np.sin(frequency * scene.v + phase)
        thickness = (0.03 + 0.035 * severity) * wobble + 0.04 * severity * apical
        _add_fill(scene, 0.85 * _sigmoid((thickness - depth) / 0.006) * _on_side(scene, side))


def _paint_pneumothorax(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Air between chest wall and a thin visceral pleural line; no lung markings beyond it."""
    side = _side(rng)
    gap = 0.05 + 0.2 * severity
    edge_a = cage_half_width(anatomy, scene.v) - gap
    distance = np.abs(scene.u) - edge_a
    lung = scene.lung_soft * _on_side(scene, side)
    pleural_space = _sigmoid(distance / 0.004) * lung
    scene.visibility *= 1 - pleural_space
    scene.air += F32(0.1) * pleural_space
    scene.extra += F32(0.07) * np.exp(-((distance / 0.006) ** 2)) * lung
    _add_fill(scene, 0.15 * severity * (1 - pleural_space) * lung)


# --- Air-space and interstitial opacities ------------------------------------


def _bronchogram_layer(
    scene: Scene, rng: np.random.Generator, start: tuple[float, float], side: int
) -> np.ndarray:
    """Thin branching air-filled bronchi, to be cut out of a consolidation."""
    starts, ends = [], []
    for _ in range(3):
        angle, point = rng.uniform(-0.6, 0.9), np.array(start)
        for _ in range(4):
            step = np.array([side * np.cos(angle), np.sin(angle)]) * rng.uniform(0.04, 0.07)
            starts.append(point.copy())
            point = point + step
            ends.append(point.copy())
            angle += rng.normal(0, 0.3)
    layer = np.zeros(scene.shape, F32)
    scene.splat_segments(layer, np.array(starts), np.array(ends), np.full(len(starts), 1.0))
    return np.clip(smooth(layer, 0.6, scene.frame.resolution_px) * 2.5, 0, 1)


def _airspace(
    scene: Scene,
    anatomy: Anatomy,
    rng: np.random.Generator,
    side: int,
    spec: tuple[float, float, int, float],
) -> None:
    """Patchy air-space opacity: clustered blobs around a lung point, with air bronchograms."""
    v_fraction, spread, count, strength = spec
    centre = lung_point(anatomy, side, v_fraction, rng.uniform(0.3, 0.7))
    field = np.zeros(scene.shape, F32)
    for _ in range(count):
        u0, v0 = centre[0] + rng.normal(0, spread), centre[1] + rng.normal(0, spread * 0.8)
        win, blob = scene.blob(u0, v0, rng.uniform(0.06, 0.13), rng.uniform(0.06, 0.12))
        field[win] += blob
    field /= max(float(field.max()), 1e-6)
    patchy = field * (1 + 0.4 * _low_frequency_field(scene, rng, 5.0))
    opacity = smooth(_ramp(patchy, 0.1, 0.6), 1.5, scene.frame.resolution_px) * strength
    bronchi = _bronchogram_layer(scene, rng, (centre[0] - side * 0.08, centre[1] - 0.05), side)
    airway = 0.3 * bronchi * _ramp(opacity, 0.5 * strength, 0.9 * strength)
    _add_fill(scene, opacity * (1 - airway) * _on_side(scene, side))


def _paint_consolidation(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Dense lobar/segmental air-space opacity with air bronchograms, usually basal."""
    side, v_fraction = _side(rng), rng.choice([0.3, 0.65, 0.85], p=[0.2, 0.3, 0.5])
    _airspace(scene, anatomy, rng, side, (float(v_fraction), 0.08, 7, 0.6 + 0.35 * severity))


def _paint_pneumonia(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Patchier, less dense air-space opacity; sometimes a second focus in the other lung."""
    side = _side(rng)
    _airspace(scene, anatomy, rng, side, (rng.uniform(0.5, 0.9), 0.1, 9, 0.4 + 0.3 * severity))
    if rng.random() < 0.35:
        _airspace(
            scene, anatomy, rng, -side, (rng.uniform(0.5, 0.9), 0.08, 5, 0.35 + 0.2 * severity)
        )


def _low_frequency_field(scene: Scene, rng: np.random.Generator, sigma_px256: float) -> np.ndarray:
    """Smooth random field with unit standard deviation."""
    field = smooth(
        rng.standard_normal(scene.shape, dtype=F32), sigma_px256, scene.frame.resolution_px
    )
    return field / (field.std() + 1e-6)


def _paint_infiltration(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Ill-defined hazy opacity over the middle and lower zones of one or both lungs."""
    side = _side(rng) if rng.random() < 0.6 else None
    haze = np.clip(_low_frequency_field(scene, rng, 7.0) * 0.5 + 0.4, 0, 1)
    zone = np.clip((scene.v - anatomy.apex_v - 0.25) / 0.4, 0, 1)
    _add_fill(scene, (0.2 + 0.3 * severity) * haze * zone * _on_side(scene, side))


def _paint_edema(scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float) -> None:
    """Bilateral perihilar 'bat-wing' haze, upper-lobe vessel prominence, Kerley B lines."""
    for side in (-1, 1):
        hilum_v = anatomy.apex_v + 0.6
        win, blob = scene.blob(side * 0.22, hilum_v, 0.28 + 0.12 * severity, 0.34)
        _add_fill(scene, (0.5 + 0.35 * severity) * blob, win)
        _kerley_lines(scene, anatomy, rng, side, severity)
    upper = np.clip((anatomy.apex_v + 0.55 - scene.v) / 0.4, 0, 1)
    scene.visibility *= 1 + 0.8 * severity * upper


def _kerley_lines(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, side: int, severity: float
) -> None:
    """Short horizontal septal lines touching the lateral pleura at the base."""
    count = int(3 + 5 * severity)
    v = anatomy.dome_v - rng.uniform(0.02, 0.2, count)
    a = cage_half_width(anatomy, v) - 0.005
    starts = np.stack([side * a, v], 1)
    ends = np.stack([side * (a - rng.uniform(0.03, 0.06, count)), v], 1)
    layer = np.zeros(scene.shape, F32)
    scene.splat_segments(layer, starts, ends, np.full(count, 0.12))
    scene.extra += smooth(layer, 0.5, scene.frame.resolution_px) * scene.lung_soft


def _paint_fibrosis(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Reticular (net-like) interstitial lines, basal and peripheral, over a faint haze."""
    noise = rng.standard_normal(scene.shape, dtype=F32)
    band = smooth(noise, 2.0, scene.frame.resolution_px) - smooth(
        noise, 4.0, scene.frame.resolution_px
    )
    net = smooth(
        np.clip(1 - np.abs(band) / (0.3 * band.std() + 1e-6), 0, 1), 0.6, scene.frame.resolution_px
    )
    periphery = np.clip(np.abs(scene.u) / cage_half_width(anatomy, scene.v).clip(0.05) - 0.35, 0, 1)
    zone = np.clip((scene.v - anatomy.apex_v - 0.2) / 0.6, 0, 1) * (0.4 + periphery)
    scene.extra += F32(0.12 + 0.14 * severity) * net * zone * scene.lung_soft
    _add_fill(scene, 0.15 * severity * zone * scene.lung_soft)


# --- Focal lesions and hernia ------------------------------------------------


def _paint_nodule(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """One to three small (5-10 mm-like) round opacities with soft margins."""
    side = _side(rng)
    for index in range(int(rng.integers(1, 4))):
        lung = side if index == 0 else _side(rng)
        u0, v0 = lung_point(anatomy, lung, rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.85))
        win, disc = scene.disc(u0, v0, rng.uniform(0.022, 0.04), 0.018)
        _add_fill(scene, (0.45 + 0.3 * severity) * disc, win)


def _paint_mass(scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float) -> None:
    """One large lobulated opacity (over 3 cm-like) in a lung or at a hilum."""
    side = _side(rng)
    u0, v0 = lung_point(anatomy, side, rng.uniform(0.15, 0.8), rng.uniform(0.1, 0.7))
    radius = 0.07 + 0.07 * severity
    for _ in range(4):
        du, dv = rng.normal(0, radius * 0.35, 2)
        win, disc = scene.disc(u0 + du, v0 + dv, radius * rng.uniform(0.6, 0.9), 0.035)
        _add_fill(scene, (0.55 + 0.25 * severity) * disc, win)


def _paint_hernia(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Hiatal hernia: a round retrocardiac opacity above the diaphragm with a gas-fluid level."""
    radius = 0.07 + 0.06 * severity
    u0 = rng.uniform(0.02, 0.12)
    v0 = anatomy.dome_v + anatomy.left_dome_drop - radius * 0.9
    win, disc = scene.disc(u0, v0, radius, 0.03)
    scene.extra[win] += F32(0.06) * disc
    gas_level = v0 + rng.uniform(-0.3, 0.2) * radius
    gas = disc * _sigmoid((gas_level - scene.v[win]) / 0.006)
    scene.extra[win] -= F32(0.18 + 0.12 * severity) * gas
    _add_fill(scene, disc, win)


def _paint_atelectasis(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Plate-like (discoid) band in the lower zone with hazy subsegmental collapse around it."""
    side = _side(rng)
    start = lung_point(anatomy, side, rng.uniform(0.55, 0.75), 0.1)
    end = lung_point(anatomy, side, rng.uniform(0.65, 0.85), 0.9)
    points = np.linspace(start, end, 12)
    points[:, 1] += 0.015 * np.sin(np.linspace(0, np.pi, 12))
    band = scene.polygon_mask([band_outline(points, 0.01 + 0.012 * severity)])
    _add_fill(scene, (0.45 + 0.3 * severity) * smooth(band, 1.5, scene.frame.resolution_px))
    mid = points[6]
    win, blob = scene.blob(float(mid[0]), float(mid[1]) + 0.05, 0.2, 0.08)
    _add_fill(scene, 0.3 * severity * blob * _on_side(scene, side)[win], win)


def _paint_emphysema(
    scene: Scene, anatomy: Anatomy, rng: np.random.Generator, severity: float
) -> None:
    """Sparse peripheral markings and a few apical bullae (air without markings)."""
    periphery = (
        np.clip(np.abs(scene.u) / cage_half_width(anatomy, scene.v).clip(0.05) - 0.5, 0, 1) * 2
    )
    scene.visibility *= 1 - 0.7 * severity * np.clip(periphery, 0, 1)
    for _ in range(int(rng.integers(1, 4))):
        u0, v0 = lung_point(anatomy, _side(rng), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.9))
        win, disc = scene.disc(u0, v0, rng.uniform(0.04, 0.08), 0.01)
        scene.visibility[win] *= 1 - disc
        scene.air[win] += F32(0.06) * disc * scene.lung_soft[win]


#: Label → renderer, for every NIH finding (not "No Finding", which draws nothing).
FINDING_RENDERERS: dict[str, FindingRenderer] = {
    "Atelectasis": FindingRenderer(_adjust_volume_loss, _paint_atelectasis),
    "Cardiomegaly": FindingRenderer(_adjust_cardiomegaly, None),
    "Consolidation": FindingRenderer(None, _paint_consolidation),
    "Edema": FindingRenderer(None, _paint_edema),
    "Effusion": FindingRenderer(None, _paint_effusion),
    "Emphysema": FindingRenderer(_adjust_emphysema, _paint_emphysema),
    "Fibrosis": FindingRenderer(_adjust_fibrosis, _paint_fibrosis),
    "Hernia": FindingRenderer(None, _paint_hernia),
    "Infiltration": FindingRenderer(None, _paint_infiltration),
    "Mass": FindingRenderer(None, _paint_mass),
    "Nodule": FindingRenderer(None, _paint_nodule),
    "Pleural_Thickening": FindingRenderer(None, _paint_pleural_thickening),
    "Pneumonia": FindingRenderer(None, _paint_pneumonia),
    "Pneumothorax": FindingRenderer(None, _paint_pneumothorax),
}


def adjust_anatomy(anatomy: Anatomy, findings: Sequence[Finding]) -> Anatomy:
    """Apply every finding's geometry change, in label order (deterministic)."""
    for finding in sorted(findings, key=lambda f: f.label):
        adjust = FINDING_RENDERERS[finding.label].adjust
        if adjust is not None:
            anatomy = adjust(anatomy, np.random.default_rng(finding.seed), finding.severity)
    return anatomy


def paint_findings(scene: Scene, anatomy: Anatomy, findings: Sequence[Finding]) -> None:
    """Paint every finding onto ``scene``, in label order (deterministic)."""
    for finding in sorted(findings, key=lambda f: f.label):
        paint = FINDING_RENDERERS[finding.label].paint
        if paint is not None:
            paint(scene, anatomy, np.random.default_rng(finding.seed), finding.severity)
