"""Square, resize and quantise one decoded radiograph into every cached resolution.

Each image is decoded once. :func:`build_pyramid` pads it to a square with zeros
(centred; an odd remainder goes to the bottom/right), resizes it once to the largest
resolution with Pillow's Lanczos filter on float32 data (Pillow widens the kernel by
the scale factor when shrinking, so this is an antialiasing filter; it is also what
made the team's sample data), clips the filter's ringing to [0, 255], then halves it
repeatedly with 2×2 area averaging down to 4 px. Every level is computed in float32
and rounded to uint8 on its own, so rounding errors do not accumulate down the ladder.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from shared.errors import ConfigError

__all__ = [
    "MIN_RESOLUTION_PX",
    "build_pyramid",
    "halve_area",
    "pad_to_square",
    "quantize_uint8",
    "resize_lanczos",
    "resolution_ladder",
]

#: The smallest cached resolution: PGGAN starts at 4×4.
MIN_RESOLUTION_PX = 4


def resolution_ladder(max_resolution_px: int) -> list[int]:
    """``[4, 8, ..., max_resolution_px]``; ConfigError unless it is a power of two >= 4."""
    if max_resolution_px < MIN_RESOLUTION_PX or max_resolution_px & (max_resolution_px - 1):
        raise ConfigError(
            f"--max-resolution: {max_resolution_px} is not a power of two >= {MIN_RESOLUTION_PX}"
        )
    ladder = [MIN_RESOLUTION_PX]
    while ladder[-1] < max_resolution_px:
        ladder.append(ladder[-1] * 2)
    return ladder


def pad_to_square(pixels: np.ndarray) -> np.ndarray:
    """Centre ``pixels`` ``[H, W]`` in a zero square of side ``max(H, W)``."""
    height, width = pixels.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.zeros((side, side), dtype=pixels.dtype)
    square[top : top + height, left : left + width] = pixels
    return square


def resize_lanczos(square: np.ndarray, size_px: int) -> np.ndarray:
    """Resize a float square image to ``size_px`` with Pillow's (antialiasing) Lanczos."""
    image = Image.fromarray(np.ascontiguousarray(square, dtype=np.float32))  # mode F
    return np.asarray(image.resize((size_px, size_px), Image.Resampling.LANCZOS), np.float32)


def halve_area(square: np.ndarray) -> np.ndarray:
    """Average each 2×2 block: area downsampling by exactly two."""
    even = square[: square.shape[0] // 2 * 2, : square.shape[1] // 2 * 2]
    corners = even[0::2, 0::2] + even[1::2, 0::2] + even[0::2, 1::2] + even[1::2, 1::2]
    return (corners * np.float32(0.25)).astype(np.float32)


def quantize_uint8(pixels: np.ndarray) -> np.ndarray:
    """Round to the nearest grey level and clip to [0, 255] (Lanczos can overshoot)."""
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def build_pyramid(pixels: np.ndarray, resolutions_px: list[int]) -> dict[int, np.ndarray]:
    """uint8 squares at every resolution in ``resolutions_px`` (a :func:`resolution_ladder`)."""
    # Clip Lanczos ringing once, so that every level is the area mean of the one above.
    level = np.clip(resize_lanczos(pad_to_square(pixels), max(resolutions_px)), 0.0, 255.0)
    pyramid = {}
    for res_px in sorted(resolutions_px, reverse=True):
        while level.shape[0] > res_px:
            level = halve_area(level)
        pyramid[res_px] = quantize_uint8(level)
    return pyramid
