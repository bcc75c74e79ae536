"""``radshare-site reader-study build | serve | score``: the real-versus-synthetic reader study.

It shows real images, so it is built and run at the site::

    radshare-site reader-study build --real-cache cache/ --split test \\
        --synthetic archive/ --design grid --items 6 --out studies/grid1
    radshare-site reader-study serve studies/grid1 --port 8765   # readers open http://127.0.0.1:8765/
    radshare-site reader-study score studies/grid1
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

__all__ = ["app", "build", "score", "serve"]

app = typer.Typer(
    help="Real-versus-synthetic reader study (Segal et al. grids and pairs, Han et al. singles).",
    no_args_is_help=True,
)


def _images_from_folder(folder: Path, resolution_px: int) -> np.ndarray:
    from PIL import Image

    root = folder / "images" if (folder / "images").is_dir() else folder
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not paths:
        from shared.errors import DataError

        raise DataError(f"{root}: no PNG or JPEG images")
    size = (resolution_px, resolution_px)
    return np.stack(
        [
            np.asarray(Image.open(p).convert("L").resize(size, Image.Resampling.LANCZOS))
            for p in paths
        ]
    )


def _real_images(
    real_cache: Path | None, real_dir: Path | None, split: str, resolution_px: int
) -> np.ndarray:
    from shared.errors import ConfigError

    if (real_cache is None) == (real_dir is None):
        raise ConfigError("give exactly one of --real-cache or --real-dir")
    if real_dir is not None:
        return _images_from_folder(real_dir, resolution_px)
    from site_node.data.cache import SiteCache

    cache = SiteCache(real_cache)  # type: ignore[arg-type]
    return cache.images(resolution_px)[cache.indices(split)]


@app.command("build")
def build(
    out: Path = typer.Option(..., help="new study folder"),
    synthetic: Path = typer.Option(..., help="synthetic archive folder (images/*.png)"),
    real_cache: Path | None = typer.Option(None, help="the site's preprocessing cache"),
    real_dir: Path | None = typer.Option(None, help="or a folder of real PNG/JPEG images"),
    split: str = typer.Option("test", help="cache split the real images come from"),
    design: str = typer.Option("grid", help="grid | pairs | single"),
    items: int = typer.Option(6, help="screens: grids, pairs or single images"),
    resolution_px: int = typer.Option(256, help="resolution the images are read at"),
    display_px: int = typer.Option(260, help="size shown to readers"),
    seed: int = typer.Option(0),
) -> None:
    """Build a static study of real (this site's) and synthetic images.

    Example (Segal et al.'s 20 pairs):

    \b
      radshare-site reader-study build --real-cache cache/ --split test \\
          --synthetic archive/ --design pairs --items 20 --out studies/pairs1
    """
    from site_node.reader_study.build import build_study

    real = _real_images(real_cache, real_dir, split, resolution_px)
    fake = _images_from_folder(synthetic, resolution_px)
    spec = build_study(
        out, real, fake, design=design, num_items=items, seed=seed, display_px=display_px
    )
    typer.echo(
        f"study: {out}/site/index.html ({spec.design}, {spec.num_items} items); key: {out}/key.csv"
    )


@app.command("serve")
def serve(
    study: Path = typer.Argument(..., help="study folder made by `build`"),
    host: str = typer.Option("127.0.0.1", help="bind address (keep it inside the hospital)"),
    port: int = typer.Option(8765),
) -> None:
    """Serve the study; answers are appended to <study>/answers.csv. Ctrl-C stops.

    Example (readers open http://127.0.0.1:8765/):

    \b
      radshare-site reader-study serve studies/pairs1 --port 8765
    """
    from site_node.reader_study.serve import make_server

    server = make_server(study, host, port)
    typer.echo(
        f"reader study at http://{host}:{server.server_address[1]}/ (answers: {study}/answers.csv)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command("score")
def score(
    study: Path = typer.Argument(..., help="study folder"),
    answers: Path | None = typer.Option(None, help="answers CSV (default <study>/answers.csv)"),
    resamples: int = typer.Option(10_000, help="bootstrap resamples for the HYPE∞ CI"),
) -> None:
    """Print accuracy, sensitivity, specificity, HYPE∞ (95% CI) and Fleiss' kappa as JSON.

    Example:

    \b
      radshare-site reader-study score studies/pairs1
    """
    from site_node.reader_study.score import score_study

    result = score_study(study, answers, num_resamples=resamples)
    typer.echo(json.dumps(result, indent=2))
