"""The drawing surface of a phantom: a rotated, shifted canonical frame and its density layers.

Anatomy is described in **canonical units**: ``u`` runs left → right across the
image and ``v`` top → bottom, both in ``[-1, 1]`` for an untransformed image.
Patient's right is image left (``u < 0``), as on a PA chest radiograph. A
:class:`Frame` maps canonical units to pixels through the acquisition's rotation,
shift and magnification, so every shape is drawn once, directly in its final
pose, with no resampling. A :class:`Scene` holds the layers that the renderer
combines into one density map::

    density = tissue - air * (1 - fill) + markings * visibility * lung_soft * (1 - fill) + extra
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["Frame", "Scene", "band_outline", "new_scene"]

F32 = np.float32


@functools.lru_cache(maxsize=8)
def _screen_grid(resolution_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre screen coordinates in [-1, 1] as (x, y) arrays [R, R]; read-only."""
    axis = ((np.arange(resolution_px, dtype=F32) + 0.5) / resolution_px * 2 - 1).astype(F32)
    x, y = np.meshgrid(axis, axis)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@dataclass(frozen=True)
class Frame:
    """Canonical units → pixels: screen = scale · Rot(rotation) · (u, v) + shift."""

    resolution_px: int
    rotation_deg: float = 0.0
    shift_uv: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0

    @property
    def px_per_unit(self) -> float:
        """Pixels per canonical unit (a unit is half the image side at scale 1)."""
        return self.resolution_px / 2 * self.scale

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Canonical (u, v) of every pixel centre, float32 arrays [R, R]."""
        x, y = _screen_grid(self.resolution_px)
        cos, sin = (
            math.cos(math.radians(self.rotation_deg)),
            math.sin(math.radians(self.rotation_deg)),
        )
        xs = (x - F32(self.shift_uv[0])) / F32(self.scale)
        ys = (y - F32(self.shift_uv[1])) / F32(self.scale)
        return F32(cos) * xs + F32(sin) * ys, F32(-sin) * xs + F32(cos) * ys

    def to_px(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (row, col) coordinates, as floats, of canonical points (u, v)."""
        cos, sin = (
            math.cos(math.radians(self.rotation_deg)),
            math.sin(math.radians(self.rotation_deg)),
        )
        xs = self.scale * (cos * u - sin * v) + self.shift_uv[0]
        ys = self.scale * (sin * u + cos * v) + self.shift_uv[1]
        half = self.resolution_px / 2
        return (ys + 1) * half - 0.5, (xs + 1) * half - 0.5


@dataclass
class Scene:
    """Density layers of one radiograph under construction (all float32 [R, R]).

    ``tissue``: soft tissue and bone; ``air``: lung air only (what findings fill);
    ``fill``: 0 aerated … 1 airless; ``extra``: any other density, negative for gas
    outside the lungs; ``markings``: vessels and interstitium, shown as
    ``markings * visibility * lung_soft``; ``lung_soft`` / ``lung_broad``: the lung
    mask blurred by 1 px and 5 px (at 256 px).
    """

    frame: Frame
    u: np.ndarray
    v: np.ndarray
    tissue: np.ndarray
    air: np.ndarray
    fill: np.ndarray
    extra: np.ndarray
    markings: np.ndarray
    visibility: np.ndarray
    lung_soft: np.ndarray = field(default_factory=lambda: np.zeros(0, F32))
    lung_broad: np.ndarray = field(default_factory=lambda: np.zeros(0, F32))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of every layer."""
        return (self.frame.resolution_px, self.frame.resolution_px)

    def window(self, u0: float, v0: float, radius: float) -> tuple[slice, slice]:
        """Pixel slices of the square around canonical (u0, v0) that holds a disc of ``radius``."""
        row, col = self.frame.to_px(np.array(u0), np.array(v0))
        reach = radius * self.frame.px_per_unit * 1.5 + 2
        limit = self.frame.resolution_px
        rows = slice(int(np.clip(row - reach, 0, limit)), int(np.clip(row + reach + 1, 0, limit)))
        cols = slice(int(np.clip(col - reach, 0, limit)), int(np.clip(col + reach + 1, 0, limit)))
        return rows, cols

    def blob(
        self, u0: float, v0: float, ru: float, rv: float
    ) -> tuple[tuple[slice, slice], np.ndarray]:
        """A Gaussian blob exp(-((u-u0)/ru)² - ((v-v0)/rv)²) on its window, with the window."""
        win = self.window(u0, v0, 2.5 * max(ru, rv))
        du = (self.u[win] - F32(u0)) / F32(ru)
        dv = (self.v[win] - F32(v0)) / F32(rv)
        return win, np.exp(-(du * du + dv * dv))

    def disc(
        self, u0: float, v0: float, radius: float, edge: float
    ) -> tuple[tuple[slice, slice], np.ndarray]:
        """A disc with a soft edge ``edge`` canonical units wide, on its window; and the window."""
        win = self.window(u0, v0, radius + 2 * edge)
        dist = np.hypot(self.u[win] - F32(u0), self.v[win] - F32(v0))
        return win, np.clip((F32(radius) - dist) / F32(edge) + 0.5, 0, 1)

    def polygon_mask(self, outlines: Sequence[np.ndarray]) -> np.ndarray:
        """float32 0/1 mask of the union of canonical polygons (each [K, 2])."""
        image = Image.new("L", (self.frame.resolution_px, self.frame.resolution_px), 0)
        draw = ImageDraw.Draw(image)
        for outline in outlines:
            rows, cols = self.frame.to_px(outline[:, 0], outline[:, 1])
            draw.polygon(list(zip(cols.tolist(), rows.tolist(), strict=True)), fill=255)
        return np.asarray(image, dtype=F32) * F32(1 / 255)

    def splat_segments(
        self, canvas: np.ndarray, starts: np.ndarray, ends: np.ndarray, weights: np.ndarray
    ) -> None:
        """Add thin lines (canonical segments [S, 2] → [S, 2], ``weights`` per unit length)."""
        if len(starts) == 0:
            return
        rs, cs = self.frame.to_px(starts[:, 0], starts[:, 1])
        re, ce = self.frame.to_px(ends[:, 0], ends[:, 1])
        length_px = np.hypot(re - rs, ce - cs)
        steps = max(2, int(np.ceil(length_px.max() * 1.5)))
        t = np.linspace(0.0, 1.0, steps)[None, :]
        rows = np.rint(rs[:, None] + t * (re - rs)[:, None]).astype(np.int64)
        cols = np.rint(cs[:, None] + t * (ce - cs)[:, None]).astype(np.int64)
        mass = np.broadcast_to((weights * length_px / steps)[:, None], rows.shape)
        self._accumulate(canvas, rows.ravel(), cols.ravel(), mass.ravel())

    def _accumulate(
        self, canvas: np.ndarray, rows: np.ndarray, cols: np.ndarray, mass: np.ndarray
    ) -> None:
        limit = self.frame.resolution_px
        inside = (rows >= 0) & (rows < limit) & (cols >= 0) & (cols < limit)
        flat = rows[inside] * limit + cols[inside]
        canvas += (
            np.bincount(flat, mass[inside], minlength=limit * limit).reshape(self.shape).astype(F32)
        )


def band_outline(points: np.ndarray, half_width: float) -> np.ndarray:
    """Outline [2K, 2] of a band of ``half_width`` around a canonical polyline [K, 2]."""
    tangent = np.empty_like(points)
    tangent[1:-1] = points[2:] - points[:-2]
    tangent[0], tangent[-1] = points[1] - points[0], points[-1] - points[-2]
    tangent /= np.hypot(tangent[:, 0], tangent[:, 1])[:, None] + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1) * half_width
    return np.concatenate([points + normal, (points - normal)[::-1]])


def new_scene(frame: Frame) -> Scene:
    """An empty scene (all layers zero, visibility one) on ``frame``."""
    u, v = frame.grid()
    tissue, air, fill, extra, markings = (np.zeros(u.shape, F32) for _ in range(5))
    return Scene(frame, u, v, tissue, air, fill, extra, markings, np.ones(u.shape, F32))
