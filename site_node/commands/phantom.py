"""``radshare-site phantom``: write a procedural phantom site in the NIH layout."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["phantom"]


def phantom(
    out: Path = typer.Option(
        ..., help="new folder for images/ and labels.csv (must not hold files)"
    ),
    num_images: int = typer.Option(1000, min=1, help="number of images (patients get 1-4 each)"),
    style: str = typer.Option("hospital-a", help="hospital style preset: hospital-a or hospital-b"),
    resolution: int = typer.Option(256, min=32, help="image side in pixels"),
    seed: int = typer.Option(0, help="same seed, same bytes"),
) -> None:
    """Make phantom chest radiographs (demo data and test fixture, not real patients).

    Example:

    \b
      radshare-site phantom --out data/phantom-a --num-images 1000 --style hospital-a --seed 0

    Writes <out>/images/<8-digit patient>_<3-digit follow-up>.png, <out>/labels.csv
    (NIH Data_Entry_2017 columns) and <out>/phantom.json.
    """
    from site_node.phantom import make_phantom_site

    csv_path = make_phantom_site(out, num_images, style=style, resolution_px=resolution, seed=seed)
    typer.echo(f"wrote {num_images} phantom images; labels: {csv_path}")
