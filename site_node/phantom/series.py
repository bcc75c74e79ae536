"""Plan a phantom site: patients, their follow-up series, and what each image shows.

Planning is separate from rendering: :func:`plan_site` decides every image's
patient, age, view, acquisition and findings from one seed, cheaply, and each
:class:`StudyPlan` carries its own ``render_seed``, so an image can be rendered
alone (or in parallel) and still come out the same.

Findings evolve along a series as a two-state Markov chain per label: a finding
present stays with probability ``1 - r (1 - p)``, an absent one appears with
probability ``r p`` (``p`` the style's prevalence, ``r`` its stickiness, a third
of it for chronic labels). That chain's stationary distribution is ``p``, so every
follow-up keeps the style's prevalence while series stay coherent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from shared.labels import NIH_FINDINGS, NO_FINDING
from site_node.phantom.anatomy import Anatomy, follow_up_anatomy, sample_anatomy
from site_node.phantom.findings import Finding
from site_node.phantom.render import Acquisition, sample_acquisition
from site_node.phantom.style import HospitalStyle

__all__ = ["CHRONIC_FINDINGS", "StudyPlan", "plan_patient", "plan_site"]

#: Findings that rarely resolve between visits (slower Markov rate).
CHRONIC_FINDINGS = frozenset(
    {"Cardiomegaly", "Emphysema", "Fibrosis", "Hernia", "Mass", "Nodule", "Pleural_Thickening"}
)


@dataclass(frozen=True)
class StudyPlan:
    """Everything needed to render and describe one image of one patient."""

    patient_id: int
    follow_up: int
    age_years: int
    sex: str
    anatomy: Anatomy
    acquisition: Acquisition
    findings: tuple[Finding, ...]
    field_of_view_mm: float
    render_seed: int

    @property
    def image_index(self) -> str:
        """NIH file name: ``<8-digit patient>_<3-digit follow-up>.png``."""
        return f"{self.patient_id:08d}_{self.follow_up:03d}.png"

    @property
    def finding_labels(self) -> str:
        """NIH ``Finding Labels`` cell: findings joined by ``|`` in label order, or No Finding."""
        return "|".join(f.label for f in self.findings) or NO_FINDING


def _rate(style: HospitalStyle, label: str) -> float:
    return style.label_stickiness * (1 / 3 if label in CHRONIC_FINDINGS else 1.0)


def _next_findings(
    rng: np.random.Generator,
    style: HospitalStyle,
    current: dict[str, Finding] | None,
    seeds: dict[str, int],
) -> dict[str, Finding]:
    """One Markov step per label (``current=None``: draw from the prevalence itself)."""
    out: dict[str, Finding] = {}
    for label in NIH_FINDINGS:
        prevalence, rate, draw = style.prevalence_of(label), _rate(style, label), rng.random()
        if current is None:
            present = draw < prevalence
        elif label in current:
            present = draw < 1 - rate * (1 - prevalence)
        else:
            present = draw < rate * prevalence
        if present and current is not None and label in current:
            drift = current[label].severity + rng.normal(0, 0.12)
            severity = float(np.clip(drift, style.severity_floor, 1.0))
            out[label] = dataclasses.replace(current[label], severity=severity)
        elif present:
            low, high = style.severity_range
            out[label] = Finding(label, seeds[label], float(rng.uniform(low, high)))
    return out


def _next_view(rng: np.random.Generator, style: HospitalStyle, previous: str | None) -> str:
    """A patient's view mostly stays (ward, mobility); 30 % of follow-ups draw it afresh."""
    if previous is not None and rng.random() >= 0.3:
        return previous
    return "AP" if rng.random() < style.ap_fraction else "PA"


def plan_patient(
    rng: np.random.Generator, style: HospitalStyle, patient_id: int, num_images: int
) -> list[StudyPlan]:
    """A series of ``num_images`` studies of one new patient (same anatomy, evolving findings)."""
    sex = "F" if rng.random() < style.female_fraction else "M"
    age_years = int(rng.integers(style.age_range_years[0], style.age_range_years[1] + 1))
    base = sample_anatomy(rng, sex, age_years)
    seeds = {label: int(rng.integers(2**31)) for label in NIH_FINDINGS}
    field_of_view_mm = float(rng.uniform(360.0, 430.0))
    findings, view, plans = None, None, []
    for follow_up in range(num_images):
        findings = _next_findings(rng, style, findings, seeds)
        age_years += int(follow_up > 0 and rng.random() < 0.3)
        view = _next_view(rng, style, view)
        plans.append(
            StudyPlan(
                patient_id=patient_id,
                follow_up=follow_up,
                age_years=age_years,
                sex=sex,
                anatomy=base if follow_up == 0 else follow_up_anatomy(base, rng),
                acquisition=sample_acquisition(rng, style, view),
                findings=tuple(findings[label] for label in sorted(findings)),
                field_of_view_mm=field_of_view_mm,
                render_seed=int(rng.integers(2**63)),
            )
        )
    return plans


def plan_site(num_images: int, style: HospitalStyle, seed: int) -> list[StudyPlan]:
    """Plan exactly ``num_images`` studies: patients of 1-4 images, ids from the style's offset."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(style.images_per_patient_weights, dtype=np.float64)
    plans: list[StudyPlan] = []
    patient_id = style.patient_id_offset
    while len(plans) < num_images:
        series_length = min(
            int(rng.choice(4, p=weights / weights.sum())) + 1, num_images - len(plans)
        )
        plans += plan_patient(rng, style, patient_id, series_length)
        patient_id += 1
    return plans
