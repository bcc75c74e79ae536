"""Target label vectors for ``--labels match-site``: the site's prevalence, findings jointly.

A synthetic patient's target is a set of findings (co-occurring ones included) or
"No Finding", which carries none. A site states only marginal counts
(``data.counts_per_label``: images per label, and the number of images), never its
joint label patterns, so the joint law is the least-committal one the marginals allow:
the **maximum-entropy** distribution over finding vectors ``y ∈ {0, 1}^K`` (the K
findings the labeller can call) with

* ``P(y_k = 1) = m_k``, each finding's prevalence at the site, and
* ``P(y = 0) = p0``, the site's "No Finding" prevalence (an image with no finding is
  exactly a No Finding image: the two are mutually exclusive by construction).

Its form is ``p(y) ∝ exp(θ·y + θ0·[y = 0])``: for ``y ≠ 0``, independent Bernoulli(π_k)
conditioned on at least one finding, scaled to ``1 - p0``. Fitting reduces to one scalar
root (:func:`fit_joint_model`). Findings the labeller cannot call are not in ``y``; a
patient who has only such findings at the site is represented by a patient with some
callable finding, so every callable label's prevalence, and No Finding's, still equal the
site's. Where they cannot (the callable findings are too rare:
``Σ m_k < 1 - p0``), each non-No-Finding patient gets exactly one finding and No Finding
takes the rest (``1 - Σ m_k``, more than the site's): the model says so in ``note``.

:func:`plan_label_vectors` turns the law into one vector per patient by systematic
sampling over the enumerated patterns (every pattern gets ``floor`` or ``ceil`` of its
expected count), so an archive's prevalence departs from the target less than i.i.d.
draws would make it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from shared.errors import ConfigError
from shared.labels import NO_FINDING

__all__ = [
    "JointLabelModel",
    "fit_joint_model",
    "plan_label_vectors",
    "site_prevalence",
]

MAX_FINDINGS = 16  # 2^16 patterns are enumerated exactly
_BISECTION_STEPS = 200


@dataclass(frozen=True)
class JointLabelModel:
    """The joint target law over ``findings``: pattern probabilities, enumerated exactly."""

    findings: tuple[str, ...]
    p_no_finding: float
    finding_probs: tuple[float, ...]  # π_k of the conditioned Bernoulli part
    exclusive: bool  # True: at most one finding per patient (the infeasible fallback)
    note: str = ""

    def patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """Every finding vector ``[P, K]`` (0/1) and its probability ``[P]`` (sum 1)."""
        k = len(self.findings)
        if self.exclusive:
            vectors = np.vstack([np.zeros((1, k), dtype=np.int8), np.eye(k, dtype=np.int8)])
            probs = np.array([self.p_no_finding, *self.finding_probs])
            return vectors, probs
        vectors = np.array(list(product((0, 1), repeat=k)), dtype=np.int8).reshape(-1, k)
        pi = np.asarray(self.finding_probs)
        weight = np.prod(np.where(vectors == 1, pi, 1.0 - pi), axis=1)
        weight[0] = 0.0  # the all-zero row is No Finding, weighted separately
        total = weight.sum()
        probs = (1.0 - self.p_no_finding) * (weight / total if total > 0 else weight)
        probs[0] = self.p_no_finding
        return vectors, probs

    def marginals(self) -> dict[str, float]:
        """Each finding's prevalence and No Finding's, under the model."""
        vectors, probs = self.patterns()
        out = {name: float(probs @ vectors[:, i]) for i, name in enumerate(self.findings)}
        out[NO_FINDING] = float(probs[0])
        return out


def site_prevalence(counts: Mapping[str, int], num_images: int) -> dict[str, float]:
    """Images per label / images, per label (ConfigError on an impossible count)."""
    if num_images <= 0:
        raise ConfigError(f"site prevalence: number of images must be > 0, got {num_images}")
    out = {}
    for name, count in counts.items():
        if not 0 <= count <= num_images:
            raise ConfigError(f"site prevalence: {name!r} count {count} not in 0..{num_images}")
        out[name] = count / num_images
    return out


def _fit_pi(m: np.ndarray, p0: float) -> np.ndarray:
    """π with ``(1 - p0) π_k / (1 - Π(1 - π_j)) = m_k``: bisection on ``s = 1 / c``, π = s m.

    ``h(s) = 1 - Π(1 - s m_k) - (1 - p0) s`` is positive near 0 (as ``Σ m > 1 - p0``) and
    ``≤ 0`` at ``s = 1 / max m`` (as ``max m ≤ 1 - p0``); its root gives the law.
    """

    def h(s: float) -> float:
        return float(1.0 - np.prod(1.0 - s * m) - (1.0 - p0) * s)

    lo, hi = 0.0, 1.0 / float(m.max())
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if h(mid) > 0 else (lo, mid)
    return np.clip(0.5 * (lo + hi) * m, 0.0, 1.0)


def fit_joint_model(prevalence: Mapping[str, float], findings: Sequence[str]) -> JointLabelModel:
    """The max-entropy law of the module docstring for ``findings`` (callable, in order).

    ``prevalence`` holds each finding's site prevalence and No Finding's (missing: 0).
    Raises ConfigError when no finding is given or a finding outnumbers all findings.
    """
    findings = tuple(f for f in findings if f != NO_FINDING)
    if not findings or len(findings) > MAX_FINDINGS:
        raise ConfigError(f"joint targets need 1..{MAX_FINDINGS} callable findings, got {findings}")
    m = np.array([float(prevalence.get(f, 0.0)) for f in findings])
    p0 = float(prevalence.get(NO_FINDING, 0.0))
    if m.max() > 1.0 - p0 + 1e-12:
        worst = findings[int(m.argmax())]
        raise ConfigError(
            f"site prevalence: {worst!r} at {m.max():.3f} exceeds 1 - No Finding ({1 - p0:.3f})"
        )
    if m.sum() <= 1.0 - p0 + 1e-9:
        note = (
            f"the callable findings add up to {m.sum():.3f} < 1 - No Finding ({1 - p0:.3f}): "
            f"one finding per patient, No Finding at {1 - m.sum():.3f} (the rest of the site's "
            "findings cannot be called by the labeller)"
        )
        return JointLabelModel(findings, float(1.0 - m.sum()), tuple(m.tolist()), True, note)
    return JointLabelModel(findings, p0, tuple(_fit_pi(m, p0).tolist()), False)


def plan_label_vectors(
    num_patients: int, model: JointLabelModel, seed: int
) -> list[tuple[str, ...]]:
    """One target per patient: its findings, or ``("No Finding",)``; systematic, shuffled."""
    vectors, probs = model.patterns()
    rng = np.random.default_rng([seed, 4])
    points = (rng.random() + np.arange(num_patients)) / num_patients
    rows = np.searchsorted(np.cumsum(probs), points, side="right").clip(0, len(probs) - 1)
    targets = [
        tuple(n for n, bit in zip(model.findings, vectors[r], strict=True) if bit) or (NO_FINDING,)
        for r in rows
    ]
    return [targets[i] for i in rng.permutation(num_patients)]
