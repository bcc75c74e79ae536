"""Test helper: tiny NIH-layout archives (random 8-bit PNGs + Data_Entry CSV) in a temp folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

__all__ = ["make_archive", "small_site"]


def make_archive(
    folder: Path,
    findings: Sequence[str],
    *,
    site_id: str | None = None,
    resolution_px: int = 32,
    images_per_patient: int = 2,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> Path:
    """An archive with one image per ``findings`` entry ("A|B" or "No Finding").

    Images are seeded noise whose mean brightness rises with the number of findings, so
    a classifier has something to learn. ``site_id``/``class_names`` go into a small JSON
    manifest when given (as an archive writer would record them).
    """
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(findings):
        patient, follow = i // images_per_patient + 1, i % images_per_patient
        name = f"{patient:08d}_{follow:03d}.png"
        level = 60 + 60 * (0 if text == "No Finding" else len(text.split("|")))
        pixels = np.clip(rng.normal(level, 25, (resolution_px, resolution_px)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / "images" / name)
        rows.append(
            {
                "Image Index": name,
                "Finding Labels": text,
                "Follow-up #": follow,
                "Patient ID": patient,
                "Patient Age": 50,
                "Patient Gender": "F",
                "View Position": "PA",
            }
        )
    pd.DataFrame(rows).to_csv(folder / "Data_Entry_synthetic.csv", index=False)
    if site_id is not None or class_names is not None:
        meta = {"site_id": site_id, "class_names": list(class_names) if class_names else None}
        (folder / "archive.json").write_text(json.dumps({k: v for k, v in meta.items() if v}))
    return folder


def small_site(site_dir: Path, out: Path, num_images: int) -> Path:
    """Every k-th row of a real site, ``num_images`` in all (images linked, not copied)."""
    (out / "images").mkdir(parents=True)
    labels = pd.read_csv(site_dir / "labels.csv")
    labels = labels.iloc[:: max(1, len(labels) // num_images)].head(num_images)
    labels.to_csv(out / "labels.csv", index=False)
    for name in labels["Image Index"]:
        (out / "images" / name).symlink_to(site_dir / "images" / name)
    return out
