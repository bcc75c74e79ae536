"""Local sampling: a synthetic patient series around one optimised latent, and its labels.

Segal et al. (§4.3, §4.5) treat an optimised ``z*`` as a patient and draw 3 to 6
follow-ups ``z* + N(0, 0.2²)`` around it: the same findings with small changes of
position, exposure or severity. A follow-up is kept only if the labeller still scores
the target class at or above the start's threshold ``T_c`` (for a label-vector target:
every target finding at its ``T_c`` and every other callable finding uncalled, so the
follow-up's labels are the target's); rejected draws are counted and replaced, up to
``max_draws_per_image`` draws per image.

Labels of a kept image (:func:`finding_labels`): every finding whose logit reaches its
Youden threshold, joined with "|" in label-space order, or "No Finding" when none does
(NIH's ``Finding Labels`` convention). Classes without a usable threshold (None) are
never assigned.
So an image optimised for "No Finding" is labelled with whatever findings the labeller
still calls on it: labels are the labeller's calls, the target only steered the search
(the archive manifest counts, per class, the images whose labels carry their target).
Images are scored after rounding to 8 bits, so the labels describe the PNG as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shared.labels import NO_FINDING

__all__ = [
    "LocalSamplingSettings",
    "PatientRequest",
    "PatientSeries",
    "acceptance_mask",
    "finding_labels",
    "quantise",
    "sample_patients",
    "to_uint8",
]


@dataclass(frozen=True)
class LocalSamplingSettings:
    """Neighbourhood width and how hard to try before giving a centre up."""

    sigma: float = 0.2
    #: Draws are forward passes only, far cheaper than optimising a new centre; a
    #: label-vector target (match-site) rejects most neighbours of a weak labeller's
    #: centre (site A, 32 px: 97%; 4 draws wrote 0 of 9 patients, 50 wrote 6).
    max_draws_per_image: int = 50
    batch_size: int = 64


@dataclass(frozen=True)
class PatientRequest:
    """One series to draw: its centre, how many images, and what each must still show."""

    task: int
    z_centre: torch.Tensor  # [z_dim]
    num_images: int
    seed: int
    target: int | None = None  # None: unlabelled sampling, every draw is kept
    threshold_logit: float | None = None
    also: tuple[tuple[int, float], ...] = ()  # more findings each follow-up must reach
    below: tuple[tuple[int, float], ...] = ()  # findings it must not show: (class, Youden)


@dataclass
class PatientSeries:
    """The kept follow-ups of one request (fewer than asked when ``complete`` is False)."""

    request: PatientRequest
    images: list[np.ndarray]  # uint8 [R, R] each
    logits: list[np.ndarray]  # float32 [C] each
    num_drawn: int = 0
    num_rejected: int = 0

    @property
    def complete(self) -> bool:
        """Whether every requested follow-up was kept."""
        return len(self.images) >= self.request.num_images


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Round ``[-1, 1]`` images to the 256 grey levels of an 8-bit PNG (still in [-1, 1])."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 1, R, R]`` in [-1, 1] → uint8 ``[N, R, R]`` (inverse of ``x / 127.5 - 1``)."""
    x = ((images[:, 0].float() + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).cpu().numpy()


def finding_labels(
    logits: np.ndarray, class_names: Sequence[str], youden_logit: Sequence[float | None]
) -> str:
    """NIH ``Finding Labels`` of one image: findings at/above threshold, or "No Finding"."""
    found = [
        name
        for name, value, threshold in zip(class_names, logits, youden_logit, strict=True)
        if name != NO_FINDING and threshold is not None and value >= threshold
    ]
    return "|".join(found) if found else NO_FINDING


def acceptance_mask(
    logits: torch.Tensor,
    target: int | None,
    threshold_logit: float | None,
    also: Sequence[tuple[int, float]] = (),
    below: Sequence[tuple[int, float]] = (),
) -> torch.Tensor:
    """Which rows of ``logits [N, C]`` still show the target (all rows when target is None).

    A row shows it when the target and every ``also`` class reach their thresholds and
    every ``below`` class stays under its Youden threshold (the labeller does not call it).
    """
    keep = torch.ones(logits.shape[0], dtype=torch.bool)
    if target is None or threshold_logit is None:
        return keep
    for c, threshold in ((target, threshold_logit), *also):
        keep &= logits[:, c] >= threshold
    for c, ceiling in below:
        keep &= logits[:, c] < ceiling
    return keep


@torch.no_grad()
def _generate(
    G: nn.Module, labeller: nn.Module, z: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[np.ndarray, torch.Tensor]:
    images, logits = [], []
    for chunk in z.split(batch_size):
        x = quantise(G(chunk.to(device)))  # score exactly what the PNG will hold
        logits.append(labeller(x).float().cpu())
        images.append(to_uint8(x))
    return np.concatenate(images), torch.cat(logits)


def sample_patients(
    G: nn.Module,
    labeller: nn.Module,
    requests: Sequence[PatientRequest],
    settings: LocalSamplingSettings | None = None,
    device: torch.device | str = "cpu",
) -> list[PatientSeries]:
    """Draw every request's follow-ups in rounds, all requests batched together.

    Each round draws, for every unfinished series, as many neighbours as it still
    lacks; series stop at their count or after ``max_draws_per_image * num_images`` draws.
    """
    cfg = settings or LocalSamplingSettings()
    device = torch.device(device)
    series = [PatientSeries(r, [], []) for r in requests]
    streams = [torch.Generator().manual_seed(r.seed) for r in requests]
    while True:
        todo = [
            i
            for i, s in enumerate(series)
            if not s.complete and s.num_drawn < cfg.max_draws_per_image * s.request.num_images
        ]
        if not todo:
            return series
        draws, owners = [], []
        for i in todo:
            request = series[i].request
            need = request.num_images - len(series[i].images)
            noise = torch.randn(need, request.z_centre.numel(), generator=streams[i])
            draws.append(request.z_centre[None] + cfg.sigma * noise)
            owners += [i] * need
        images, logits = _generate(G, labeller, torch.cat(draws), cfg.batch_size, device)
        _keep_accepted(series, owners, images, logits)


def _keep_accepted(series, owners, images, logits) -> None:
    owners_arr = np.asarray(owners)
    for i in np.unique(owners_arr):
        rows = np.flatnonzero(owners_arr == i)
        s = series[i]
        r = s.request
        keep = acceptance_mask(logits[rows], r.target, r.threshold_logit, r.also, r.below)
        s.num_drawn += len(rows)
        s.num_rejected += int((~keep).sum())
        for row in rows[keep.numpy()]:
            s.images.append(images[row])
            s.logits.append(logits[row].numpy())
