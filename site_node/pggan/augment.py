"""Critic augmentation for small sites: ADA (Karras et al. 2020) and DiffAugment (Zhao et al. 2020).

With a few hundred radiographs the critic memorises the training set within a few kimg and
its gradients stop telling G anything useful. Both methods show the critic only augmented
images: reals *and* fakes, in the critic step (the WGAN-GP penalty interpolates between
the augmented real and the augmented fake, so it constrains the critic on exactly the
distribution it scores) and in the generator step (``-D(augment(G(z)))``, so G gets
gradients through the augmentation: every op here is a torch op, ``grid_sample`` for the
geometry). The augmentations do not leak into G as long as each one is applied with
probability ``p < 1`` and is invertible in distribution (Karras et al. 2020, section 2.2):

* ``ada``: every op of :data:`ADA_OPS`, each independently per image with probability
  ``p``; ``p`` starts at 0 and follows the critic's overfitting heuristic ``r_t`` every
  ``interval_steps`` steps (:class:`AdaptiveP`), capped at ``p_max = 0.8`` (above it
  Karras et al.'s figure 3 shows the geometric ops start to leak).
* ``diffaugment``: the ops of :data:`DIFFAUGMENT_OPS` (Zhao et al.'s
  "translation, cutout, colour" less saturation) on every image (``p = 1``), fixed.

Only ops that keep a chest radiograph a plausible chest radiograph are here:

* small integer translation (``max_translate_frac`` of the side, 1/16: 2 px at 32 px),
  small isotropic scale (``2**N(0, 0.05²)``, about ±7 % at 2σ), small rotation
  (``U(-5°, 5°)``: patient positioning varies by a few degrees), brightness and contrast
  jitter (exposure varies between acquisitions), cutout (a quarter of the side, filled
  with mid-grey 0; occlusion by lead markers and tubes).
* **No horizontal flip**: the heart lies on the patient's left; a flipped film shows
  situs inversus / dextrocardia, a real and rare finding, so a flip is not a neutral
  transform (and ``TrainOptions.horizontal_flip`` stays off for the same reason).
* **No 90° rotations and no large rotations**: radiographs are acquired upright; a
  rotated chest is not in the data distribution and would leak into G at high ``p``.
* **No colour ops** (hue, saturation, luma flip): the images are single-channel grey
  and an inverted radiograph (luma flip) is a different modality convention.

Tensor contract: ``[N, 1, H, W]`` float32 in ``[-1, 1]`` (values may leave the range
after brightness/contrast, as in Karras et al.'s pipeline). Every random draw comes from
the ``torch.Generator`` passed in (CPU), so a run is reproducible and resumable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

__all__ = [
    "ADA_OPS",
    "AUGMENT_MODES",
    "DIFFAUGMENT_OPS",
    "AdaptiveP",
    "AugmentMode",
    "AugmentSpec",
    "ada_adjustment",
    "augment",
    "overfitting_signs",
]

AugmentMode = Literal["ada", "diffaugment", "none"]
AUGMENT_MODES: tuple[str, ...] = ("ada", "diffaugment", "none")

#: Ops of ``ada`` and of ``diffaugment`` (names of :func:`augment`'s steps).
ADA_OPS: tuple[str, ...] = ("translate", "scale", "rotate", "brightness", "contrast", "cutout")
DIFFAUGMENT_OPS: tuple[str, ...] = ("translate", "brightness", "contrast", "cutout")
_GEOMETRIC = ("translate", "scale", "rotate")


@dataclass(frozen=True)
class AugmentSpec:
    """Strengths of the chest-radiograph ops (see the module docstring for the why)."""

    max_translate_frac: float = 1 / 16  # integer px, up to this fraction of the side
    scale_log2_std: float = 0.05  # isotropic scale 2**N(0, std²)
    max_rotate_deg: float = 5.0  # U(-max, max)
    brightness_std: float = 0.1  # additive, in [-1, 1] units
    contrast_log2_std: float = 0.2  # about the image mean, 2**N(0, std²)
    cutout_frac: float = 0.25  # square side as a fraction of the image side


@dataclass(frozen=True)
class _Draws:
    """Random draws for a whole batch, of which this process keeps ``rows`` (DDP: its slice).

    Every rank draws the full batch's parameters and keeps its own, so a DDP run augments
    image ``i`` exactly as a one-device run does.
    """

    generator: torch.Generator
    full_size: int
    rows: slice

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(self.full_size, *shape, generator=self.generator)[self.rows]

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.full_size, *shape, generator=self.generator)[self.rows]

    def gate(self, p: float) -> torch.Tensor:
        """``[n]`` bool: which images get an op (each independently with probability ``p``)."""
        return self.rand() < p


def _geometry(
    images: torch.Tensor, p: float, ops: Sequence[str], spec: AugmentSpec, draws: _Draws
) -> torch.Tensor:
    """Translation (whole pixels), isotropic scale and rotation as one bilinear ``grid_sample``."""
    n, _, h, w = images.shape
    shift_px = torch.zeros(n, 2)
    if "translate" in ops:
        max_px = torch.tensor([spec.max_translate_frac * w, spec.max_translate_frac * h])
        raw = (draws.rand(2) * 2 - 1) * max_px
        shift_px = torch.where(draws.gate(p)[:, None], raw.round(), shift_px)
    log2_scale = torch.zeros(n)
    if "scale" in ops:
        raw = draws.randn() * spec.scale_log2_std
        log2_scale = torch.where(draws.gate(p), raw, log2_scale)
    angle = torch.zeros(n)
    if "rotate" in ops:
        raw = (draws.rand() * 2 - 1) * math.radians(spec.max_rotate_deg)
        angle = torch.where(draws.gate(p), raw, angle)
    moved = (shift_px != 0).any(dim=1) | (log2_scale != 0) | (angle != 0)
    if not bool(moved.any()):
        return images
    # affine_grid maps output coordinates (normalised to [-1, 1]) to input coordinates:
    # input = R(angle) / scale @ output - shift; a positive scale and a small angle never flip.
    inv_scale = torch.exp2(-log2_scale)
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, -2 * shift_px[:, 0] / w], dim=1),
            torch.stack([sin, cos, -2 * shift_px[:, 1] / h], dim=1),
        ],
        dim=1,
    ).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return torch.where(moved.to(images.device)[:, None, None, None], warped, images)


def _intensity(
    images: torch.Tensor, p: float, ops: Sequence[str], spec: AugmentSpec, draws: _Draws
) -> torch.Tensor:
    """Brightness (additive) and contrast (about each image's mean)."""
    n = images.shape[0]
    if "brightness" in ops:
        shift = draws.randn() * spec.brightness_std
        shift = torch.where(draws.gate(p), shift, torch.zeros(n))
        images = images + shift.to(images)[:, None, None, None]
    if "contrast" in ops:
        gain = torch.exp2(draws.randn() * spec.contrast_log2_std)
        gain = torch.where(draws.gate(p), gain, torch.ones(n)).to(images)[:, None, None, None]
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * gain + mean
    return images


def _cutout(images: torch.Tensor, p: float, spec: AugmentSpec, draws: _Draws) -> torch.Tensor:
    """Set one square (``cutout_frac`` of the side, centre uniform) to mid-grey 0."""
    _, _, h, w = images.shape
    centre = draws.rand(2)
    active = draws.gate(p)
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(w) + 0.5) / w
    inside_y = (ys[None, :] - centre[:, 1:2]).abs() < spec.cutout_frac / 2
    inside_x = (xs[None, :] - centre[:, 0:1]).abs() < spec.cutout_frac / 2
    hole = inside_y[:, :, None] & inside_x[:, None, :] & active[:, None, None]
    keep = (~hole).to(images)[:, None]
    return images * keep


def augment(
    images: torch.Tensor,
    p: float,
    generator: torch.Generator,
    ops: Sequence[str] = ADA_OPS,
    spec: AugmentSpec = AugmentSpec(),
    *,
    batch_rows: slice | None = None,
    full_batch_size: int | None = None,
) -> torch.Tensor:
    """``images`` with each op of ``ops`` applied per image with probability ``p``.

    Differentiable in ``images`` (G's gradients flow through). ``p <= 0`` returns
    ``images`` itself. Under DDP, ``images`` are rows ``batch_rows`` of a batch of
    ``full_batch_size``: the draws are the whole batch's, sliced. Raises ValueError for
    an unknown op name.
    """
    unknown = sorted(set(ops) - set(ADA_OPS))
    if unknown:
        raise ValueError(f"unknown augmentation ops {unknown}; valid: {', '.join(ADA_OPS)}")
    if p <= 0 or not ops:
        return images
    n = images.shape[0]
    draws = _Draws(generator, full_batch_size or n, batch_rows or slice(0, n))
    if any(op in ops for op in _GEOMETRIC):
        images = _geometry(images, p, ops, spec, draws)
    images = _intensity(images, p, ops, spec, draws)
    if "cutout" in ops:
        images = _cutout(images, p, spec, draws)
    return images


def overfitting_signs(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Per-real ``sign(D(real) - mean D(fake))``: ADA's ``sign(D(real))`` for a WGAN critic.

    Karras et al.'s ``r_t = E[sign(D(real))]`` assumes the logistic loss, whose decision
    threshold is 0. A WGAN-GP critic's scores are defined up to a shift (and the drift
    term pulls ``E[D(real)]`` to 0), so the threshold here is the batch's mean fake score:
    ``r_t`` is 0 when the critic cannot tell training reals from fakes and 1 when every
    real scores above the fakes' mean.
    """
    return torch.sign(real_scores.detach().float() - fake_scores.detach().float().mean())


def ada_adjustment(r_t: float, target: float, batch_size: int, interval_steps: int,
                   speed_kimg: float) -> float:  # fmt: skip
    """Karras et al.'s step: ``sign(r_t - target) * batch * interval / (speed_kimg * 1000)``."""
    return math.copysign(1.0, r_t - target) * batch_size * interval_steps / (speed_kimg * 1000)


@dataclass
class AdaptiveP:
    """ADA's controller: accumulate signs, and every ``interval_steps`` steps move ``p``.

    ``p`` moves by :func:`ada_adjustment` (so it can go from 0 to 1 in ``speed_kimg``
    kimg) and stays in ``[0, p_max]``. ``r_t`` is the mean sign since the last update.
    """

    target: float = 0.6
    interval_steps: int = 4
    speed_kimg: float = 100.0
    p_max: float = 0.8
    p: float = 0.0
    r_t: float = 0.0
    _sign_sum: float = field(default=0.0, repr=False)
    _sign_count: int = field(default=0, repr=False)
    _steps: int = field(default=0, repr=False)

    def observe(self, sign_sum: float, sign_count: int, batch_size: int) -> None:
        """Add one step's signs; at the end of an interval update ``p`` and reset."""
        self._sign_sum += sign_sum
        self._sign_count += sign_count
        self._steps += 1
        if self._steps < self.interval_steps:
            return
        if self._sign_count:
            self.r_t = self._sign_sum / self._sign_count
            step = ada_adjustment(
                self.r_t, self.target, batch_size, self.interval_steps, self.speed_kimg
            )
            self.p = min(max(self.p + step, 0.0), self.p_max)
        self._sign_sum, self._sign_count, self._steps = 0.0, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "p": self.p,
            "r_t": self.r_t,
            "sign_sum": self._sign_sum,
            "sign_count": self._sign_count,
            "steps": self._steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.r_t = float(state["p"]), float(state["r_t"])
        self._sign_sum, self._sign_count = float(state["sign_sum"]), int(state["sign_count"])
        self._steps = int(state["steps"])
