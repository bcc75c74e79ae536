"""Screen-space marks burned into a phantom: black frame, collimation, laterality glyph, text.

Glyphs come from a tiny built-in 5x7 bitmap font (only the letters the markers
need), scaled by nearest neighbour, so no font file or Pillow text engine is involved.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GLYPHS", "burn_border", "burn_corner_text", "burn_text", "text_bitmap"]

_FONT_ROWS: dict[str, tuple[str, ...]] = {
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "B": ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "O": ("01110", "10001", "10001", "10001", "10001", "10001", "01110"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    " ": ("00000",) * 7,
}

#: Letter → boolean bitmap [7, 5].
GLYPHS: dict[str, np.ndarray] = {
    letter: np.array([[c == "1" for c in row] for row in rows])
    for letter, rows in _FONT_ROWS.items()
}


def text_bitmap(text: str, height_px: int) -> np.ndarray:
    """Boolean bitmap of ``text`` (letters of :data:`GLYPHS`), ``height_px`` rows tall."""
    spacer = np.zeros((7, 1), dtype=bool)
    cells = [part for letter in text for part in (GLYPHS[letter], spacer)][:-1]
    bitmap = np.concatenate(cells, axis=1)
    width_px = max(1, round(bitmap.shape[1] * height_px / 7))
    rows = np.arange(height_px) * 7 // height_px
    cols = np.arange(width_px) * bitmap.shape[1] // width_px
    return bitmap[rows][:, cols]


def burn_text(
    image: np.ndarray, text: str, top_left_px: tuple[int, int], height_px: int, *, boxed: bool
) -> None:
    """Burn white ``text`` into ``image`` (float [0, 1]); ``boxed`` puts it on a black block."""
    bitmap = text_bitmap(text, height_px)
    pad = max(1, height_px // 4) if boxed else 0
    top, left = max(top_left_px[0], 0), max(top_left_px[1], 0)
    rows = slice(max(top - pad, 0), min(top + bitmap.shape[0] + pad, image.shape[0]))
    cols = slice(max(left - pad, 0), min(left + bitmap.shape[1] + pad, image.shape[1]))
    if boxed:
        image[rows, cols] = 0.02
    visible = bitmap[: max(image.shape[0] - top, 0), : max(image.shape[1] - left, 0)]
    region = image[top : top + visible.shape[0], left : left + visible.shape[1]]
    region[visible] = 0.97


def burn_corner_text(
    image: np.ndarray,
    lines: list[str],
    top_px: int,
    inset_px: int,
    *,
    from_right: bool,
    height_px: int,
    boxed: bool,
) -> None:
    """Burn ``lines`` one under another, ``inset_px`` from the left (or right) edge."""
    row = top_px
    for text in lines:
        width = text_bitmap(text, height_px).shape[1]
        col = image.shape[1] - inset_px - width if from_right else inset_px
        burn_text(image, text, (row, max(col, 0)), height_px, boxed=boxed)
        row += round(height_px * 1.6)


def burn_border(image: np.ndarray, widths_px: tuple[int, int, int, int], soft_px: float) -> None:
    """Black out (top, bottom, left, right) margins, with a soft collimator edge of ``soft_px``."""
    size = image.shape[0]
    index = np.arange(size, dtype=np.float32)
    top, bottom, left, right = widths_px
    soft = max(soft_px, 1e-3)
    rows = np.clip((index - top) / soft, 0, 1) * np.clip((size - bottom - index) / soft, 0, 1)
    cols = np.clip((index - left) / soft, 0, 1) * np.clip((size - right - index) / soft, 0, 1)
    image *= rows[:, None] * cols[None, :]
