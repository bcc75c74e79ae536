"""Build a static real-versus-synthetic reader study (HTML + JS + PNGs) in one of three designs.

Designs::

    grid    Segal et al.: screens of six images, each real with probability 0.5;
            the reader marks the ones they think real
    pairs   Segal et al.: one real and one synthetic image side by side (random
            side); the reader picks the real one
    single  Han et al.: single images, half real and half synthetic, in random
            order; the reader answers real or synthetic

Layout of a study folder (a new folder; never overwritten)::

    <study>/site/index.html    the page (study items inlined: it also works from file://)
    <study>/site/images/*.png  images under random ids, nothing in a name tells the truth
    <study>/key.csv            image_id, truth (real | synthetic), source: outside site/
    <study>/study.json         StudySpec: design, seed, counts, display size
    <study>/answers.csv        appended by ``radshare-site reader-study serve``
"""

from __future__ import annotations

import html
import json
import secrets
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ConfigError
from shared.fileio import atomic_write_text

__all__ = ["DESIGNS", "GRID_SIZE", "StudyItem", "StudySpec", "build_study"]

DESIGNS = ("grid", "pairs", "single")
GRID_SIZE = 6
TEMPLATE = Path(__file__).with_name("template.html")


class StudyItem(BaseModel):
    """One screen: its id and the image ids shown, in display order."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    images: list[str]


class StudySpec(BaseModel):
    """What a study folder holds (``study.json``); the truth lives only in ``key.csv``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    design: Literal["grid", "pairs", "single"]
    seed: int
    num_items: int
    num_real_images: int
    num_synthetic_images: int
    display_px: int = Field(260, description="shown size; Segal et al. showed 260 × 260")
    title: str = "Real or synthetic?"
    items: list[StudyItem]


def _truth_sequence(design: str, num_items: int, rng: np.random.Generator) -> list[list[str]]:
    """Per item, the truth of each slot: grid Bernoulli(0.5) ×6, pairs shuffled, single balanced."""
    if design == "grid":
        return [
            ["real" if r else "synthetic" for r in rng.random(GRID_SIZE) < 0.5]
            for _ in range(num_items)
        ]
    if design == "pairs":
        return [list(rng.permutation(["real", "synthetic"])) for _ in range(num_items)]
    truths = ["real"] * (num_items - num_items // 2) + ["synthetic"] * (num_items // 2)
    return [[t] for t in rng.permutation(truths)]


def _write_png(path: Path, image_u8: np.ndarray, display_px: int) -> None:
    image = Image.fromarray(np.asarray(image_u8, dtype=np.uint8))
    if image.size != (display_px, display_px):
        image = image.resize((display_px, display_px), Image.Resampling.LANCZOS)
    image.save(path)


def _page(spec: StudySpec) -> str:
    public = {"design": spec.design, "items": [item.model_dump() for item in spec.items]}
    study_json = json.dumps(public).replace("</", "<\\/")  # safe inside <script>
    page = TEMPLATE.read_text(encoding="utf-8")
    return (
        page.replace("__TITLE__", html.escape(spec.title))
        .replace("__PX__", str(spec.display_px))
        .replace("__STUDY_JSON__", study_json)
    )


def build_study(
    out_dir: Path | str,
    real_images_u8: np.ndarray,
    synthetic_images_u8: np.ndarray,
    *,
    design: str,
    num_items: int,
    seed: int = 0,
    display_px: int = 260,
    title: str = "Real or synthetic?",
) -> StudySpec:
    """Write a new study folder; images are drawn without replacement from each pool.

    Raises:
        ConfigError: an unknown design, an existing folder, or pools too small for the items.
    """
    if design not in DESIGNS:
        raise ConfigError(f"reader study design {design!r}; valid: {', '.join(DESIGNS)}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"{out_dir}: already exists (a study folder is never overwritten)")
    rng = np.random.default_rng(seed)
    truths = _truth_sequence(design, num_items, rng)
    needed = {t: sum(row.count(t) for row in truths) for t in ("real", "synthetic")}
    pools = {"real": real_images_u8, "synthetic": synthetic_images_u8}
    for truth, count in needed.items():
        if count > len(pools[truth]):
            raise ConfigError(
                f"{design} study with {num_items} items needs {count} {truth} images, "
                f"got {len(pools[truth])}"
            )
    draws = {t: iter(rng.permutation(len(pools[t]))[: needed[t]]) for t in pools}
    (out_dir / "site" / "images").mkdir(parents=True)
    items, key_rows = [], []
    for number, row in enumerate(truths, start=1):
        image_ids = []
        for truth in row:
            source_row = int(next(draws[truth]))
            image_id = secrets.token_hex(6)  # random: a name never hints at the truth
            _write_png(
                out_dir / "site" / "images" / f"{image_id}.png",
                pools[truth][source_row],
                display_px,
            )
            key_rows.append(
                {
                    "image_id": image_id,
                    "item_id": f"item{number:03d}",
                    "truth": truth,
                    "source_row": source_row,
                }
            )
            image_ids.append(image_id)
        items.append(StudyItem(item_id=f"item{number:03d}", images=image_ids))
    spec = StudySpec(
        design=design,  # type: ignore[arg-type]
        seed=seed,
        num_items=num_items,
        num_real_images=needed["real"],
        num_synthetic_images=needed["synthetic"],
        display_px=display_px,
        title=title,
        items=items,
    )
    pd.DataFrame(key_rows).to_csv(out_dir / "key.csv", index=False)
    (out_dir / "study.json").write_text(spec.model_dump_json(indent=2))
    atomic_write_text(out_dir / "site" / "index.html", _page(spec))
    return spec
