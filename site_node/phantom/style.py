"""Hospital styles for phantom sites: look of the acquisition, burned-in text, labels, patients.

A :class:`HospitalStyle` is what makes two phantom sites differ the way two real
hospitals do: tone curve and exposure, detector noise and blur, black frames and
collimation, burned-in "PORTABLE" / view blocks, the laterality marker corner,
per-label prevalence, patient ages and sexes, and the AP / PA mix. Two named
presets, ``hospital-a`` (outpatient, mostly PA, NIH-like prevalence) and
``hospital-b`` (ICU-heavy, mostly portable AP, more fluid and infection), are in
:data:`STYLE_PRESETS`, with ``demo-a`` / ``demo-b`` (the same acquisitions, only the
demo's three clearly visible findings, :data:`DEMO_FINDINGS`); :func:`get_style`
resolves a name or passes a style through.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import ConfigError
from shared.labels import NIH_FINDINGS

__all__ = ["DEMO_FINDINGS", "STYLE_PRESETS", "HospitalStyle", "get_style"]

Range = tuple[float, float]


class HospitalStyle(BaseModel):
    """How one phantom hospital acquires, annotates and labels its chest radiographs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    # Tone curve: pixel = clip(offset + gain * exposure * density, 0, 1) ** gamma.
    contrast_gain: float = Field(default=1.0, gt=0)
    brightness_offset: float = 0.0
    gamma: float = Field(default=1.0, gt=0)
    exposure_jitter: float = Field(default=0.04, ge=0, le=0.5, description="relative sd per image")
    noise_sigma: Range = Field(
        default=(0.008, 0.02), description="detector noise sd, fraction of white"
    )
    blur_sigma_px256: Range = Field(default=(0.3, 0.8), description="detector blur sd at 256 px")
    rotation_max_deg: float = Field(default=3.0, ge=0, le=20)
    shift_max_fraction: float = Field(default=0.03, ge=0, le=0.2)
    # Frame and burned-in text.
    border_fraction: Range = Field(
        default=(0.0, 0.0), description="black frame width, fraction of side"
    )
    collimation_probability: float = Field(default=0.0, ge=0, le=1)
    portable_marker_probability: float = Field(default=0.0, ge=0, le=1, description="on AP images")
    view_marker_probability: float = Field(default=0.0, ge=0, le=1, description="'AP'/'PA' block")
    laterality_corner: Literal["top-left", "top-right"] = "top-right"
    # Labels and patients.
    label_prevalence: dict[str, float]
    label_stickiness: float = Field(
        default=0.35, gt=0, le=1, description="Markov rate across follow-ups"
    )
    severity_range: Range = Field(
        default=(0.35, 1.0), description="severity of a new finding, drawn uniformly, in [0, 1]"
    )
    severity_floor: float = Field(
        default=0.2, ge=0, le=1, description="lowest severity a finding drifts to in follow-ups"
    )
    age_range_years: tuple[int, int] = (18, 90)
    female_fraction: float = Field(default=0.5, ge=0, le=1)
    ap_fraction: float = Field(default=0.3, ge=0, le=1)
    images_per_patient_weights: tuple[float, float, float, float] = (0.4, 0.3, 0.2, 0.1)
    patient_id_offset: int = Field(default=1, ge=1, le=90_000_000)

    @field_validator("label_prevalence")
    @classmethod
    def _known_findings(cls, prevalence: dict[str, float]) -> dict[str, float]:
        for label, probability in prevalence.items():
            if label not in NIH_FINDINGS:
                hint = difflib.get_close_matches(label, NIH_FINDINGS, n=1)
                raise ValueError(f"unknown finding {label!r} (did you mean {hint}?)")
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"prevalence of {label!r} is {probability}, not in [0, 1]")
        return prevalence

    @model_validator(mode="after")
    def _ordered_ranges(self) -> HospitalStyle:
        for field in ("noise_sigma", "blur_sigma_px256", "border_fraction", "age_range_years"):
            low, high = getattr(self, field)
            if not 0 <= low <= high:
                raise ValueError(f"{field} must be 0 <= low <= high, got ({low}, {high})")
        low, high = self.severity_range
        if not 0 <= low <= high <= 1:
            raise ValueError(f"severity_range must be 0 <= low <= high <= 1, got ({low}, {high})")
        if sum(self.images_per_patient_weights) <= 0:
            raise ValueError("images_per_patient_weights must not all be zero")
        return self

    def prevalence_of(self, label: str) -> float:
        """Probability that an image carries ``label`` (0 for labels the style omits)."""
        return self.label_prevalence.get(label, 0.0)


#: Outpatient clinic: mostly PA, NIH ChestX-ray14-like prevalence, plain tone, no frame.
HOSPITAL_A = HospitalStyle(
    name="hospital-a",
    label_prevalence={
        "Atelectasis": 0.09,
        "Cardiomegaly": 0.09,
        "Consolidation": 0.045,
        "Edema": 0.035,
        "Effusion": 0.19,
        "Emphysema": 0.035,
        "Fibrosis": 0.03,
        "Hernia": 0.01,
        "Infiltration": 0.17,
        "Mass": 0.04,
        "Nodule": 0.04,
        "Pleural_Thickening": 0.03,
        "Pneumonia": 0.012,
        "Pneumothorax": 0.046,
    },
    view_marker_probability=0.1,
    portable_marker_probability=0.3,
)

#: ICU-heavy hospital: mostly portable AP, darker low-contrast tone, black frames, fluid, infection.
HOSPITAL_B = HospitalStyle(
    name="hospital-b",
    contrast_gain=0.85,
    brightness_offset=0.05,
    gamma=1.3,
    exposure_jitter=0.08,
    noise_sigma=(0.015, 0.035),
    blur_sigma_px256=(0.5, 1.2),
    rotation_max_deg=6.0,
    shift_max_fraction=0.05,
    border_fraction=(0.02, 0.06),
    collimation_probability=0.7,
    portable_marker_probability=0.9,
    view_marker_probability=0.8,
    laterality_corner="top-left",
    label_prevalence={
        "Atelectasis": 0.2,
        "Cardiomegaly": 0.15,
        "Consolidation": 0.12,
        "Edema": 0.15,
        "Effusion": 0.3,
        "Emphysema": 0.02,
        "Fibrosis": 0.01,
        "Hernia": 0.005,
        "Infiltration": 0.1,
        "Mass": 0.02,
        "Nodule": 0.02,
        "Pleural_Thickening": 0.02,
        "Pneumonia": 0.2,
        "Pneumothorax": 0.08,
    },
    age_range_years=(40, 95),
    female_fraction=0.42,
    ap_fraction=0.8,
    images_per_patient_weights=(0.2, 0.3, 0.3, 0.2),
    patient_id_offset=50_000_001,
)

#: The demo's label set: three findings a small labeller and a 32 px generator can learn from
#: a few hundred images (a wide heart, white fluid at a base, a dark rim of pleural air: each
#: changes many pixels at 32 px), plus No Finding. Measured on 400 hospital-a-like images at
#: 32 px with the small labeller (20 epochs): test AUC Effusion 0.98, Pneumothorax 0.92,
#: Cardiomegaly 0.77, against Consolidation 0.69 and Mass 0.51 (a few-pixel blob anywhere).
#: The demo styles keep hospital a's and b's acquisition and differ in prevalence; findings
#: start at severity 0.6, so none is invisible at 32 px.
DEMO_FINDINGS = ("Cardiomegaly", "Effusion", "Pneumothorax")

#: Demo site a: hospital a's acquisition, only the demo findings, each common.
DEMO_A = HOSPITAL_A.model_copy(
    update={
        "name": "demo-a",
        "label_prevalence": {"Cardiomegaly": 0.25, "Effusion": 0.25, "Pneumothorax": 0.2},
        "severity_range": (0.6, 1.0),
        "severity_floor": 0.5,
    }
)

#: Demo site b: hospital b's acquisition (portable AP, frames, noise), more hearts and fluid.
DEMO_B = HOSPITAL_B.model_copy(
    update={
        "name": "demo-b",
        "label_prevalence": {"Cardiomegaly": 0.3, "Effusion": 0.35, "Pneumothorax": 0.15},
        "severity_range": (0.6, 1.0),
        "severity_floor": 0.5,
    }
)

#: Named presets, selectable on the command line.
STYLE_PRESETS: dict[str, HospitalStyle] = {
    s.name: s for s in (HOSPITAL_A, HOSPITAL_B, DEMO_A, DEMO_B)
}


def get_style(style: str | HospitalStyle) -> HospitalStyle:
    """Resolve a preset name to its style; a :class:`HospitalStyle` passes through.

    Raises:
        ConfigError: ``style`` names no preset (the message lists the valid names).
    """
    if isinstance(style, HospitalStyle):
        return style
    if style not in STYLE_PRESETS:
        hint = difflib.get_close_matches(style, list(STYLE_PRESETS), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"style: unknown phantom style {style!r}{suggestion}; "
            f"valid styles: {', '.join(sorted(STYLE_PRESETS))}"
        )
    return STYLE_PRESETS[style]
