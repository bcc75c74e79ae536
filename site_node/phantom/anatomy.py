"""One patient's chest as a handful of numbers, and the curves derived from them.

Everything is in the canonical units of :mod:`site_node.phantom.scene` (``u``
across, ``v`` down, ``[-1, 1]``). ``side`` is ``-1`` for the patient's right
lung (image left) and ``+1`` for the left lung (image right). The curves are
closed-form so that findings can place themselves in a lung zone without
looking at pixels, and so that follow-ups of one patient share one anatomy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Anatomy",
    "HeartShape",
    "cage_half_width",
    "diaphragm_v",
    "follow_up_anatomy",
    "for_view",
    "heart_shape",
    "lung_point",
    "mediastinum_half_width",
    "sample_anatomy",
]


@dataclass(frozen=True)
class Anatomy:
    """Shape parameters of one chest (canonical units unless a name says otherwise)."""

    sex: str
    body_half_width: float
    neck_half_width: float
    thorax_half_width: float
    apex_v: float
    dome_v: float
    dome_depth: float
    left_dome_drop: float
    mediastinum_half_width: float
    cardiothoracic_ratio: float
    heart_half_height: float
    air_depth: float
    rib_top_v: float
    rib_spacing: float
    clavicle_v: float
    clavicle_rise: float
    gastric_bubble: bool
    seed: int


def sample_anatomy(rng: np.random.Generator, sex: str, age_years: int) -> Anatomy:
    """Draw a plausible adult chest; men a little wider, older chests a little larger hearts."""
    male = 1.0 if sex == "M" else 0.0
    age_factor = np.clip((age_years - 20) / 70, 0, 1)
    return Anatomy(
        sex=sex,
        body_half_width=float(rng.uniform(0.88, 0.94) + 0.02 * male),
        neck_half_width=float(rng.uniform(0.17, 0.22)),
        thorax_half_width=float(rng.uniform(0.74, 0.8) + 0.02 * male),
        apex_v=float(rng.uniform(-0.8, -0.72)),
        dome_v=float(rng.uniform(0.26, 0.38)),
        dome_depth=float(rng.uniform(0.13, 0.19)),
        left_dome_drop=float(rng.uniform(0.02, 0.06)),
        mediastinum_half_width=float(rng.uniform(0.085, 0.11)),
        cardiothoracic_ratio=float(rng.uniform(0.38, 0.44) + 0.03 * age_factor),
        heart_half_height=float(rng.uniform(0.25, 0.3)),
        air_depth=float(rng.uniform(0.48, 0.56)),
        rib_top_v=float(rng.uniform(-0.9, -0.84)),
        rib_spacing=float(rng.uniform(0.115, 0.13)),
        clavicle_v=float(rng.uniform(-0.58, -0.5)),
        clavicle_rise=float(rng.uniform(0.16, 0.24)),
        gastric_bubble=bool(rng.random() < 0.7),
        seed=int(rng.integers(2**31)),
    )


def follow_up_anatomy(anatomy: Anatomy, rng: np.random.Generator) -> Anatomy:
    """The same patient on another day: breathing depth and heart size move a little."""
    return dataclasses.replace(
        anatomy,
        dome_v=anatomy.dome_v + float(rng.normal(0, 0.02)),
        cardiothoracic_ratio=anatomy.cardiothoracic_ratio + float(rng.normal(0, 0.008)),
        air_depth=anatomy.air_depth * float(rng.uniform(0.96, 1.04)),
        gastric_bubble=anatomy.gastric_bubble if rng.random() < 0.8 else not anatomy.gastric_bubble,
    )


def for_view(anatomy: Anatomy, view: str) -> Anatomy:
    """AP (supine, portable): magnified heart, higher clavicles and diaphragm, shallower breath."""
    if view != "AP":
        return anatomy
    return dataclasses.replace(
        anatomy,
        cardiothoracic_ratio=anatomy.cardiothoracic_ratio * 1.12,
        heart_half_height=anatomy.heart_half_height * 1.06,
        clavicle_v=anatomy.clavicle_v - 0.1,
        clavicle_rise=anatomy.clavicle_rise * 0.5,
        dome_v=anatomy.dome_v - 0.05,
        air_depth=anatomy.air_depth * 0.92,
    )


def cage_half_width(anatomy: Anatomy, v: np.ndarray) -> np.ndarray:
    """Inner half-width of the rib cage at height ``v`` (an ellipse widest below the dome)."""
    centre_v = anatomy.dome_v + 0.12
    half_height = centre_v - anatomy.apex_v + 0.06
    t = np.clip((v - centre_v) / half_height, -1, 1)
    return anatomy.thorax_half_width * np.sqrt(1 - t * t)


def diaphragm_v(anatomy: Anatomy, side: np.ndarray | float, a: np.ndarray) -> np.ndarray:
    """Height of the hemidiaphragm at distance ``a`` from the midline (a dome, lowest laterally)."""
    dome = anatomy.dome_v + np.where(np.asarray(side) > 0, anatomy.left_dome_drop, 0.0)
    peak_a = 0.45 * anatomy.thorax_half_width
    reach = anatomy.thorax_half_width - peak_a
    return dome + anatomy.dome_depth * ((a - peak_a) / reach) ** 2


def mediastinum_half_width(anatomy: Anatomy, side: np.ndarray | float, v: np.ndarray) -> np.ndarray:
    """Distance of the mediastinal border from the midline; the aortic knob bulges on the left."""
    t = np.clip((v - anatomy.apex_v) / (anatomy.dome_v - anatomy.apex_v), 0, 1)
    knob_v = anatomy.apex_v + 0.4
    left = np.asarray(side) > 0
    knob = np.where(left, 0.07 * np.exp(-(((v - knob_v) / 0.08) ** 2)), 0.0)
    return anatomy.mediastinum_half_width + np.where(left, 0.07, 0.03) * t + knob


@dataclass(frozen=True)
class HeartShape:
    """A sheared ellipse: ((u - centre_u - shear (v - centre_v)) / half_u)² + (…/half_v)² ≤ 1."""

    centre_u: float
    centre_v: float
    half_u: float
    half_v: float
    shear: float

    @property
    def width(self) -> float:
        """Full horizontal extent of the silhouette."""
        return 2 * math.hypot(self.half_u, self.shear * self.half_v)


def heart_shape(anatomy: Anatomy) -> HeartShape:
    """The cardiac silhouette: width = CTR x thoracic width, a third right of the midline."""
    width = anatomy.cardiothoracic_ratio * 2 * anatomy.thorax_half_width
    half_v = anatomy.heart_half_height * math.sqrt(anatomy.cardiothoracic_ratio / 0.42)
    shear = 0.3
    half_u = math.sqrt(max((width / 2) ** 2 - (shear * half_v) ** 2, 1e-4))
    bottom_v = anatomy.dome_v + anatomy.left_dome_drop + 0.07
    return HeartShape(0.18 * width, bottom_v - 0.9 * half_v, half_u, half_v, shear)


def lung_point(
    anatomy: Anatomy, side: int, v_fraction: float, a_fraction: float
) -> tuple[float, float]:
    """Canonical (u, v) inside a lung: ``v_fraction`` apex→base, ``a_fraction`` medial→lateral."""
    v = anatomy.apex_v + 0.12 + v_fraction * (anatomy.dome_v - anatomy.apex_v - 0.1)
    inner = float(mediastinum_half_width(anatomy, side, np.asarray(v))) + 0.04
    heart = heart_shape(anatomy)
    if side > 0 and v > heart.centre_v - heart.half_v:
        inner = max(inner, heart.centre_u + heart.width / 2 - 0.05)
    outer = float(cage_half_width(anatomy, np.asarray(v))) - 0.06
    a = inner + a_fraction * max(outer - inner, 0.02)
    return side * a, v
