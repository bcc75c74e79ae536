"""Render one phantom chest radiograph: anatomy + findings + acquisition → uint8 image.

:func:`render_study` is the one linear procedure (shape, draw, expose, burn in);
:func:`render_phantom` draws a fresh patient and acquisition for a label set.
The tone curve is film-like, ``tanh(k · exposure · density) / tanh(k)``, so the
lungs keep their contrast while mediastinum and abdomen saturate gently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.errors import ConfigError, LabelError
from shared.labels import NO_FINDING, validate_labels
from site_node.phantom.anatomy import Anatomy, for_view, sample_anatomy
from site_node.phantom.chest import draw_chest, smooth
from site_node.phantom.findings import Finding, adjust_anatomy, paint_findings
from site_node.phantom.overlay import burn_border, burn_corner_text
from site_node.phantom.scene import F32, Frame, Scene, new_scene
from site_node.phantom.style import HospitalStyle, get_style

__all__ = [
    "MIN_RESOLUTION_PX",
    "Acquisition",
    "render_phantom",
    "render_study",
    "sample_acquisition",
]

TONE_K = 1.1
MIN_RESOLUTION_PX = 32


@dataclass(frozen=True)
class Acquisition:
    """How one image was taken: view, pose, exposure, detector and burned-in marks."""

    view: str
    rotation_deg: float
    shift_uv: tuple[float, float]
    scale: float
    exposure: float
    noise_sigma: float
    blur_sigma_px256: float
    border_fractions: tuple[float, float, float, float]
    portable_marker: bool
    view_marker: bool
    marker_offset_fraction: tuple[float, float]


def sample_acquisition(rng: np.random.Generator, style: HospitalStyle, view: str) -> Acquisition:
    """Draw one acquisition of ``view`` ("PA" or "AP") in the manner of ``style``."""
    shift = rng.uniform(-1, 1, 2) * style.shift_max_fraction * 2
    return Acquisition(
        view=view,
        rotation_deg=float(rng.uniform(-1, 1) * style.rotation_max_deg),
        shift_uv=(float(shift[0]), float(shift[1])),
        scale=float(rng.uniform(0.94, 1.04)),
        exposure=float(np.clip(1 + rng.normal(0, style.exposure_jitter), 0.6, 1.4)),
        noise_sigma=float(rng.uniform(*style.noise_sigma)),
        blur_sigma_px256=float(rng.uniform(*style.blur_sigma_px256)),
        border_fractions=_sample_border(rng, style),
        portable_marker=view == "AP" and bool(rng.random() < style.portable_marker_probability),
        view_marker=bool(rng.random() < style.view_marker_probability),
        marker_offset_fraction=(float(rng.uniform(0.02, 0.05)), float(rng.uniform(0.02, 0.06))),
    )


def _sample_border(
    rng: np.random.Generator, style: HospitalStyle
) -> tuple[float, float, float, float]:
    """Collimated: four independent margins; otherwise one even black frame (maybe none)."""
    if rng.random() < style.collimation_probability:
        top, bottom, left, right = (float(x) for x in rng.uniform(*style.border_fraction, 4))
        return top, bottom, left, right
    width = float(rng.uniform(*style.border_fraction))
    return width, width, width, width


def render_study(
    anatomy: Anatomy,
    findings: Sequence[Finding],
    acquisition: Acquisition,
    style: HospitalStyle,
    resolution_px: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render one radiograph as uint8 [R, R] (0 = no attenuation, black)."""
    # Shape the chest: disease first, then what the projection does to it.
    shaped = for_view(adjust_anatomy(anatomy, findings), acquisition.view)
    # Draw the normal chest in its pose, then the findings on it.
    frame = Frame(resolution_px, acquisition.rotation_deg, acquisition.shift_uv, acquisition.scale)
    scene = new_scene(frame)
    draw_chest(scene, shaped, acquisition.view, rng)
    paint_findings(scene, shaped, findings)
    # Expose the detector: blur, tone curve, quantum noise.
    image = _expose(_compose(scene), acquisition, style, rng)
    # Burn in the frame and the markers.
    _burn_marks(image, acquisition, style)
    return np.rint(image * 255).astype(np.uint8)


def _compose(scene: Scene) -> np.ndarray:
    """Total density: tissue, minus air not filled, plus visible markings and extra density."""
    aerated = 1 - scene.fill
    markings = scene.markings * scene.visibility * scene.lung_soft
    return scene.tissue - aerated * (scene.air - markings) + scene.extra


def _expose(
    density: np.ndarray, acquisition: Acquisition, style: HospitalStyle, rng: np.random.Generator
) -> np.ndarray:
    """Detector blur, the film-like tone curve, the style's contrast, gamma, and noise."""
    blurred = smooth(density, acquisition.blur_sigma_px256, density.shape[0])
    film = np.tanh(F32(TONE_K * acquisition.exposure) * np.maximum(blurred, 0)) / F32(
        np.tanh(TONE_K)
    )
    toned = np.clip(style.brightness_offset + style.contrast_gain * film, 0, 1) ** F32(style.gamma)
    noise = rng.standard_normal(density.shape, dtype=F32) * F32(acquisition.noise_sigma)
    return np.clip(toned + noise, 0, 1).astype(F32)


def _burn_marks(image: np.ndarray, acquisition: Acquisition, style: HospitalStyle) -> None:
    """Black frame or collimation, the laterality glyph, and the PORTABLE / view blocks."""
    size = image.shape[0]
    top, bottom, left, right = (round(f * size) for f in acquisition.border_fractions)
    if top or bottom or left or right:
        burn_border(image, (top, bottom, left, right), soft_px=0.004 * size)
    row = top + round(acquisition.marker_offset_fraction[0] * size)
    inset = round(acquisition.marker_offset_fraction[1] * size)
    marker_right = style.laterality_corner == "top-right"  # "L" on the patient's left
    marker = ["L" if marker_right else "R"]
    near, far = (right, left) if marker_right else (left, right)
    glyph_px, block_px = max(7, round(size * 0.045)), max(7, round(size * 0.03))
    burn_corner_text(
        image, marker, row, near + inset, from_right=marker_right, height_px=glyph_px, boxed=False
    )
    blocks = ["PORTABLE"] * acquisition.portable_marker + [
        acquisition.view
    ] * acquisition.view_marker
    burn_corner_text(
        image, blocks, row, far + inset, from_right=not marker_right, height_px=block_px, boxed=True
    )


def _check_request(labels: Sequence[str], resolution_px: int) -> list[str]:
    """Validated finding labels ("No Finding" → none); raises on unknown labels or bad sizes."""
    names = validate_labels(labels, where="render_phantom labels")
    if NO_FINDING in names and len(names) > 1:
        raise LabelError(f"render_phantom labels: {NO_FINDING!r} cannot be combined with {names}")
    if resolution_px < MIN_RESOLUTION_PX:
        raise ConfigError(f"resolution_px: {resolution_px} is below {MIN_RESOLUTION_PX}")
    return sorted({name for name in names if name != NO_FINDING})


def render_phantom(
    labels: Sequence[str],
    rng: np.random.Generator,
    style: str | HospitalStyle = "hospital-a",
    resolution_px: int = 256,
) -> np.ndarray:
    """Render a new patient carrying ``labels`` (NIH names; [] or ["No Finding"] for none).

    Sex, age, anatomy, view, pose, exposure and each finding's place and severity
    are drawn from ``rng``, in the manner of ``style``. Returns uint8 [R, R].

    Raises:
        LabelError: an unknown label, or "No Finding" together with a finding.
        ConfigError: an unknown style name, or ``resolution_px`` below 32.
    """
    finding_labels, resolved = _check_request(labels, resolution_px), get_style(style)
    sex = "F" if rng.random() < resolved.female_fraction else "M"
    age_years = int(rng.integers(resolved.age_range_years[0], resolved.age_range_years[1] + 1))
    anatomy = sample_anatomy(rng, sex, age_years)
    findings = [
        Finding(name, int(rng.integers(2**31)), float(rng.uniform(0.5, 1.0)))
        for name in finding_labels
    ]
    view = "AP" if rng.random() < resolved.ap_fraction else "PA"
    acquisition = sample_acquisition(rng, resolved, view)
    return render_study(anatomy, findings, acquisition, resolved, resolution_px, rng)
