"""The auditor's check of a generator's DP claim: recompute ε from the signed manifest alone.

A DP-trained generator's manifest carries, in ``privacy.dp``, the noise multiplier,
the clipping norm, δ, the accountant and the DP-SGD steps per training phase with
their Poisson sample rates (:class:`~shared.artifacts.manifest.DPSegment`). That is
enough to recompute ε with Opacus's accountant, independently of the site's code:

* **epsilon** — the recomputed ε is not above the claimed one (``+ tolerance``, for
  the PRV accountant's numerical error across versions);
* **target** — the claimed ε does not exceed the budget asked for (if one was);
* **delta** — δ is below ``1 / num_images`` (a larger δ allows leaking a record outright);
* **sampling** — each segment's ``sample_rate × num_images`` is its phase's batch size
  (the expected Poisson batch), in the manifest's phase order;
* **steps** — the segments' steps add up to the manifest's training steps.

:func:`audit_dp` is the pure check; :func:`audit_dp_bundle` verifies the bundle's
signature and hashes first (``shared.artifacts.bundle.read_bundle``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from opacus.accountants import create_accountant
from pydantic import BaseModel, ConfigDict, Field

from shared.artifacts.bundle import read_bundle
from shared.artifacts.generator import GeneratorManifest
from shared.artifacts.keyring import TrustedKey
from shared.artifacts.manifest import DPParameters
from shared.errors import ArtifactError

__all__ = ["DPAuditResult", "audit_dp", "audit_dp_bundle", "recompute_epsilon"]

log = logging.getLogger("radshare.hub.privacy")

#: Accountants the hub can recompute with.
ACCOUNTANTS = ("prv", "rdp")


class DPAuditResult(BaseModel):
    """The recomputed ε and every check of :mod:`hub.privacy_audit`, with reasons for failures."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accountant: str
    delta: float
    claimed_epsilon: float
    recomputed_epsilon: float
    target_epsilon: float | None
    num_steps: int
    checks: dict[str, bool | None] = Field(description="None: not checkable from this manifest")
    problems: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every check that could be made holds."""
        return all(value is not False for value in self.checks.values())


def recompute_epsilon(dp: DPParameters) -> float:
    """ε of ``dp.segments`` composed in order with the named Opacus accountant, at ``dp.delta``.

    Raises:
        ArtifactError: no segments, or an accountant the hub does not know.
    """
    if dp.accountant not in ACCOUNTANTS:
        raise ArtifactError(
            f"privacy.dp.accountant {dp.accountant!r} unknown; valid: {ACCOUNTANTS}"
        )
    history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in dp.segments if s.steps > 0]
    if not history:
        raise ArtifactError("privacy.dp.segments: no DP steps recorded; ε cannot be recomputed")
    accountant = create_accountant(mechanism=dp.accountant)
    accountant.history = history
    return float(accountant.get_epsilon(delta=dp.delta))


def _sampling_matches(manifest: GeneratorManifest, dp: DPParameters) -> bool | None:
    """Each segment's ``q · N`` equals its phase's batch size (None: phases not recorded)."""
    phases = manifest.training.phases
    if len(phases) != len(dp.segments) or any(p.batch_size is None for p in phases):
        return None
    num_images = manifest.data.num_images
    return all(
        abs(s.sample_rate * num_images - p.batch_size) <= 1e-6 * num_images  # type: ignore[operator]
        for s, p in zip(dp.segments, phases, strict=True)
    )


def audit_dp(manifest: GeneratorManifest, *, tolerance: float = 0.01) -> DPAuditResult:
    """Recompute ε from ``manifest.privacy.dp`` and run every check (see the module docstring).

    Raises:
        ArtifactError: the manifest has no DP section, or ε cannot be recomputed from it.
    """
    dp = manifest.privacy.dp
    if dp is None:
        raise ArtifactError(
            "manifest has no privacy.dp section: the generator was not trained with DP"
        )
    recomputed = recompute_epsilon(dp)
    num_steps = sum(s.steps for s in dp.segments)
    num_images = manifest.data.num_images
    checks: dict[str, bool | None] = {
        "epsilon": recomputed <= dp.epsilon + tolerance,
        "target": None if dp.target_epsilon is None else dp.epsilon <= dp.target_epsilon,
        "delta": None if num_images == 0 else dp.delta < 1.0 / num_images,
        "sampling": _sampling_matches(manifest, dp),
        "steps": None if manifest.training.steps is None else num_steps == manifest.training.steps,
    }
    problems = {
        "epsilon": f"recomputed ε {recomputed:.4f} exceeds the claimed {dp.epsilon:.4f}",
        "target": f"claimed ε {dp.epsilon:.4f} exceeds the target {dp.target_epsilon}",
        "delta": f"δ {dp.delta:g} is not below 1/N = {1.0 / max(num_images, 1):g}",
        "sampling": "sample rates × num_images differ from the phases' batch sizes",
        "steps": f"segments hold {num_steps} steps, training.steps is {manifest.training.steps}",
    }
    result = DPAuditResult(
        accountant=dp.accountant, delta=dp.delta, claimed_epsilon=dp.epsilon,
        recomputed_epsilon=recomputed, target_epsilon=dp.target_epsilon, num_steps=num_steps,
        checks=checks, problems=[problems[name] for name, ok in checks.items() if ok is False],
    )  # fmt: skip
    log.info(
        "dp audit: claimed ε %.4f, recomputed %.4f, passed %s",
        dp.epsilon,
        recomputed,
        result.passed,
    )
    return result


def audit_dp_bundle(
    bundle_dir: Path, trusted: TrustedKey, *, tolerance: float = 0.01
) -> DPAuditResult:
    """Verify a generator bundle (signature against ``trusted``, hashes), then audit its ε."""
    signed = read_bundle(Path(bundle_dir), trusted)
    if not isinstance(signed.model, GeneratorManifest):
        raise ArtifactError(f"{bundle_dir}: kind {signed.model.kind.value!r} is not a generator")
    return audit_dp(signed.model, tolerance=tolerance)
