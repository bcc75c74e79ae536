"""Write a phantom site in the NIH ChestX-ray14 layout, like the real sample sites::

    <out>/phantom.json       how it was made (style, seed, size); written first
    <out>/images/<8-digit patient>_<3-digit follow-up>.png   8-bit grayscale
    <out>/labels.csv         Data_Entry_2017 columns; written last (a site without it is incomplete)

``labels.csv`` keeps NIH's header quirk: ``OriginalImage[Width,Height]`` and
``OriginalImagePixelSpacing[x,y]`` each name two columns, so pandas reads them as
``OriginalImage[Width`` / ``Height]`` and ``OriginalImagePixelSpacing[x`` / ``y]``,
exactly as it reads NIH's file and ``shared/data/cxr-site-a/labels.csv``. Every
file is written to a temporary name and moved into place; an existing non-empty
folder is never written into.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from shared.errors import ConfigError
from shared.fileio import atomic_write_bytes
from site_node.phantom.render import MIN_RESOLUTION_PX, render_study
from site_node.phantom.series import StudyPlan, plan_site
from site_node.phantom.style import HospitalStyle, get_style

__all__ = ["NIH_HEADER", "PHANTOM_SCHEMA_VERSION", "PhantomSiteInfo", "make_phantom_site"]

logger = logging.getLogger("radshare.phantom")

PHANTOM_SCHEMA_VERSION = 1

#: The header line of NIH's Data_Entry_2017.csv (two names span two columns each),
#: followed by the three source columns the team's real sample sites carry.
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
    "Source Repository,Source Path,Source Resolution"
)


class PhantomSiteInfo(BaseModel):
    """``phantom.json``: what made this folder, so it can be made again bit for bit."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = PHANTOM_SCHEMA_VERSION
    kind: str = "radshare procedural phantom radiographs (not real patients)"
    num_images: int
    resolution_px: int
    seed: int
    style: HospitalStyle


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()


def _claim_folder(out_dir: Path) -> Path:
    """Create ``out_dir`` (and images/); refuse one that already holds anything."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(
            f"out_dir: {out_dir} exists and is not empty; phantom sites are never overwritten"
        )
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    return out_dir


def _csv_row(plan: StudyPlan, style: HospitalStyle, resolution_px: int) -> list[object]:
    """One Data_Entry_2017 row plus the team's three source columns."""
    spacing_mm = round(plan.field_of_view_mm / resolution_px, 4)
    size = f"{resolution_px}x{resolution_px}"
    return [
        plan.image_index, plan.finding_labels, plan.follow_up, plan.patient_id, plan.age_years,
        plan.sex, plan.acquisition.view, resolution_px, resolution_px, spacing_mm, spacing_mm,
        f"radshare-phantom/{style.name}", f"images/{plan.image_index}", size,
    ]  # fmt: skip


def _labels_csv(plans: list[StudyPlan], style: HospitalStyle, resolution_px: int) -> bytes:
    text = io.StringIO()
    text.write(NIH_HEADER + "\n")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerows(_csv_row(plan, style, resolution_px) for plan in plans)
    return text.getvalue().encode("utf-8")


def _check_request(num_images: int, resolution_px: int) -> None:
    if num_images < 1:
        raise ConfigError(f"num_images: must be at least 1, got {num_images}")
    if resolution_px < MIN_RESOLUTION_PX:
        raise ConfigError(
            f"resolution_px: must be at least {MIN_RESOLUTION_PX}, got {resolution_px}"
        )


def make_phantom_site(
    out_dir: Path | str,
    num_images: int,
    style: str | HospitalStyle = "hospital-a",
    resolution_px: int = 256,
    seed: int = 0,
) -> Path:
    """Write ``num_images`` phantom radiographs of one hospital style; return labels.csv's path.

    Patients get 1-4 follow-ups (same anatomy, evolving findings); the same
    arguments always give the same bytes.

    Raises:
        ConfigError: unknown style, ``num_images`` < 1, ``resolution_px`` < 32, or a
            non-empty ``out_dir``.
    """
    # Check the request and claim a new folder; record how it is made before making it.
    resolved, started = get_style(style), time.perf_counter()
    _check_request(num_images, resolution_px)
    out = _claim_folder(Path(out_dir))
    info = PhantomSiteInfo(
        num_images=num_images, resolution_px=resolution_px, seed=seed, style=resolved
    )
    atomic_write_bytes(out / "phantom.json", info.model_dump_json(indent=2).encode("utf-8"))
    # Plan patients and their series, then render every image from its own seed.
    plans = plan_site(num_images, resolved, seed)
    for plan in plans:
        rng = np.random.default_rng(plan.render_seed)
        image = render_study(
            plan.anatomy, plan.findings, plan.acquisition, resolved, resolution_px, rng
        )
        atomic_write_bytes(out / "images" / plan.image_index, _png_bytes(image))
    # Write the label table last: a folder without it is an unfinished site.
    csv_path = out / "labels.csv"
    atomic_write_bytes(csv_path, _labels_csv(plans, resolved, resolution_px))
    num_patients = len({plan.patient_id for plan in plans})
    logger.info(
        "wrote %d phantom images of %d patients in %.1f s",
        len(plans),
        num_patients,
        time.perf_counter() - started,
    )
    return csv_path
