"""``radshare-site ingest``: validate, preprocess, split and cache a site's chest X-rays."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from site_node.data.chexpert import DEFAULT_UNCERTAINTY
from site_node.data.layouts import Layout

if TYPE_CHECKING:
    from site_node.data.ingest import IngestResult

__all__ = ["ingest_command", "print_summary"]


def ingest_command(
    csv: Path = typer.Option(..., "--csv", help="label CSV (NIH, CheXpert or plain layout)"),
    images: Path = typer.Option(..., "--images", help="folder the CSV's image paths are under"),
    out: Path = typer.Option(..., "--out", help="new cache folder (kept at the site)"),
    layout: Layout | None = typer.Option(
        None, "--layout", case_sensitive=False, help="CSV layout; default: from its header"
    ),
    max_resolution: int = typer.Option(
        256, "--max-resolution", help="largest cached side in px (a power of two >= 4)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the patient-level split"),
    split: str = typer.Option("0.7,0.1,0.2", "--split", help="train,val,test image fractions"),
    site_id: str = typer.Option("site", "--site-id", help="this site's id, stored in the cache"),
    all_views: bool = typer.Option(
        False, "--all-views", help="keep lateral and unknown views, not only PA/AP"
    ),
    chexpert_uncertain: str = typer.Option(
        DEFAULT_UNCERTAINTY,
        "--chexpert-uncertain",
        help="CheXpert -1 labels: 'positive' or 'negative', then LABEL=positive|negative",
    ),
    force: bool = typer.Option(False, "--force", help="replace a complete cache in --out"),
) -> None:
    """Read labels and images, reject bad rows with reasons, cache every resolution.

    Writes OUT/images_<R>px.npy for R = 4 ... --max-resolution, table.csv (labels,
    patient-level train/val/test split), manifest.json, and ingest_report.json/.md
    listing every rejected row (file, row, field, value, reason). Examples:

    \b
      radshare-site ingest --csv data/Data_Entry_2017.csv --images data/images \\
          --out cache/nih --site-id nih --max-resolution 256
    \b
      radshare-site ingest --csv CheXpert-v1.0-small/train.csv --images . \\
          --out cache/chexpert --chexpert-uncertain positive,Consolidation=negative
    \b
      radshare-site ingest --csv labels.csv --images pngs --layout plain \\
          --out cache/small --max-resolution 64 --split 0.8,0.1,0.1 --seed 1
    """
    from site_node.data.chexpert import UncertaintyPolicy
    from site_node.data.ingest import IngestOptions, ingest
    from site_node.data.split import parse_fractions

    options = IngestOptions(
        layout=layout,
        max_resolution_px=max_resolution,
        seed=seed,
        split_fractions=parse_fractions(split),
        site_id=site_id,
        all_views=all_views,
        chexpert_uncertain=UncertaintyPolicy.parse(chexpert_uncertain),
        force=force,
        show_progress=True,
    )
    print_summary(ingest(csv, images, out, options))


def print_summary(result: IngestResult) -> None:
    """Print counts, rejections by reason, split sizes and label shares; no identifiers."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    counts = result.counts
    console.print(
        f"rows read {counts.rows_read} = kept {counts.kept} + rejected {counts.rejected}"
        f"  ({result.elapsed_s:.1f} s)"
    )
    for category, number in counts.rejected_by_category.items():
        console.print(f"  rejected, {category}: {number}")
    split = result.report.split or {}
    table = Table("label", "all", "train", "val", "test", title="share of images per label")
    images = [split["images"][name] for name in ("train", "val", "test")] if split else []
    if images:
        table.add_row("images", *(str(n) for n in (sum(images), *images)), end_section=True)
    for label, entry in split.get("labels", {}).items():
        table.add_row(
            label, *(f"{entry[n]['fraction']:.3f}" for n in ("all", "train", "val", "test"))
        )
    console.print(table)
    console.print(f"cache:  {result.cache_dir}")
    console.print(f"report: {result.report_markdown}")
