"""Image sets in NIH layout (a site's real data, a synthetic archive) as uint8 arrays and labels.

Both a site's labelled folder and a synthetic archive share the NIH
``Data_Entry`` layout: a CSV with ``Image Index``, ``Finding Labels``,
``Patient ID`` (and optionally ``Patient Gender``) beside the images, found in
``<folder>/images/<Image Index>`` or ``<folder>/<Image Index>``. Loading resizes
every image (anti-aliased) to ``resolution_px`` and keeps uint8 grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from skimage import io as skio
from skimage.color import rgb2gray
from skimage.transform import resize

from shared.errors import DataError, ImageDecodeError
from shared.labels import NIH_LABELS, labels_to_multi_hot, parse_finding_labels

__all__ = ["ImageSet", "find_label_csv", "load_nih_folder", "read_grey_u8"]


@dataclass
class ImageSet:
    """uint8 images ``[N, R, R]`` with multi-hot labels ``[N, C]`` over ``label_space``."""

    name: str
    images_u8: np.ndarray
    labels: np.ndarray
    label_space: tuple[str, ...]
    patient_ids: np.ndarray
    sex: np.ndarray | None = None

    def subset(self, rows: np.ndarray, name: str | None = None) -> ImageSet:
        """The rows ``rows`` of this set."""
        sex = None if self.sex is None else self.sex[rows]
        return ImageSet(
            name or self.name,
            self.images_u8[rows],
            self.labels[rows],
            self.label_space,
            self.patient_ids[rows],
            sex,
        )


def find_label_csv(folder: Path) -> Path:
    """The one CSV with an ``Image Index`` column in ``folder`` (labels.csv preferred)."""
    if (folder / "labels.csv").is_file():
        return folder / "labels.csv"
    candidates = [p for p in sorted(folder.glob("*.csv")) if "Image Index" in p.open().readline()]
    if len(candidates) != 1:
        raise DataError(
            f"{folder}: need exactly one NIH-style CSV, found {[p.name for p in candidates]}"
        )
    return candidates[0]


def read_grey_u8(path: Path, resolution_px: int) -> np.ndarray:
    """Read an 8-bit image as grey and resize it (anti-aliased) to ``resolution_px`` square."""
    try:
        image = skio.imread(path)
    except (OSError, ValueError) as error:
        raise ImageDecodeError(f"{path}: cannot decode image: {error}") from error
    if image.ndim == 3:
        image = rgb2gray(image[..., :3]) * 255.0
    image = np.asarray(image, dtype=np.float64)
    if image.shape != (resolution_px, resolution_px):
        image = resize(
            image, (resolution_px, resolution_px), anti_aliasing=True, preserve_range=True
        )
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _image_path(folder: Path, name: str) -> Path:
    for candidate in (folder / "images" / name, folder / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: image {name!r} listed in the CSV is missing")


def load_nih_folder(
    folder: Path | str,
    resolution_px: int,
    *,
    name: str | None = None,
    max_images: int | None = None,
) -> ImageSet:
    """Load an NIH-layout folder; ``max_images`` keeps the first rows only."""
    folder = Path(folder)
    table = pd.read_csv(find_label_csv(folder), dtype={"Image Index": str, "Patient ID": str})
    for column in ("Image Index", "Finding Labels", "Patient ID"):
        if column not in table.columns:
            raise DataError(f"{folder}: CSV lacks column {column!r}")
    table = table.head(max_images) if max_images else table
    images = np.stack(
        [read_grey_u8(_image_path(folder, n), resolution_px) for n in table["Image Index"]]
    )
    labels = np.array(
        [
            labels_to_multi_hot(parse_finding_labels(t, where=f"{folder} Finding Labels"))
            for t in table["Finding Labels"]
        ],
        dtype=np.float32,
    )
    sex = (
        table["Patient Gender"].astype(str).to_numpy()
        if "Patient Gender" in table.columns
        else None
    )
    return ImageSet(
        name or folder.name, images, labels, NIH_LABELS, table["Patient ID"].to_numpy(), sex
    )
