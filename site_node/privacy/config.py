"""``DPOptions``: what a site asks of DP-SGD training (the ``dp`` section of the training options).

Either a target ε (the noise multiplier is then calibrated so that the whole planned
schedule spends at most that budget) or a noise multiplier (then ε is whatever the
schedule spends; with a target ε too, training stops before the step that would exceed
it). δ should stay well below ``1 / num_train_images``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ACCOUNTANTS", "DPOptions"]

#: Opacus accountants that compose Poisson-subsampled Gaussian steps.
ACCOUNTANTS = ("prv", "rdp")


class DPOptions(BaseModel):
    """DP-SGD settings: budget or noise, clipping norm, δ and the accountant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_epsilon: float | None = Field(None, gt=0, description="ε never to exceed")
    noise_multiplier: float | None = Field(
        None, gt=0, description="σ (noise std / clipping norm); None: calibrated to target ε"
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="δ of (ε, δ)-DP")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample clipping norm C")
    accountant: Literal["prv", "rdp"] = "prv"
    epsilon_every_steps: int = Field(
        100, ge=1, description="how often the progress bar's ε-so-far is recomputed"
    )

    @model_validator(mode="after")
    def _budget_or_noise(self) -> DPOptions:
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("dp needs target_epsilon or noise_multiplier (or both)")
        return self
