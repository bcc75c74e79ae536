"""``radshare-hub pool``: pool the synthetic archives of several sites (label harmonisation)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["parse_pairs", "pool"]


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """``["k=v", ...]`` → dict; ConfigError naming the bad item."""
    from shared.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _source(spec: str, labels: dict[str, str]):  # type: ignore[no-untyped-def]
    from hub.pooling.archive import read_archive

    site, sep, path = spec.partition("=")
    folder = Path(path if sep else spec)
    site_id = site if sep else None
    if site_id is None:
        import json

        hinted = [json.loads(p.read_text()).get("site_id") for p in folder.glob("*.json")]
        site_id = next((h for h in hinted if isinstance(h, str)), folder.name)
    annotated = labels.get(site_id)
    names = [n.strip() for n in annotated.split("|")] if annotated else None
    return read_archive(folder, site_id=site_id, annotated_labels=names)


def pool(
    archive: list[str] = typer.Option(
        ..., help="SITE=FOLDER (or FOLDER: site from its manifest, else the folder name)"
    ),
    labels: list[str] = typer.Option(
        [], help="SITE=Label|Label...: what the site annotated (default: labels in its CSV)"
    ),
    strategy: str = typer.Option("all", help="all | match-prevalence | balance"),
    num_images: int | None = typer.Option(None, help="match-prevalence: images to draw"),
    target_prevalence: list[str] = typer.Option([], help="match-prevalence: LABEL=0.2"),
    images_per_label: int | None = typer.Option(None, help="balance: positives per label"),
    enrich: list[str] = typer.Option([], help="LABEL=N: add N more images of LABEL"),
    seed: int = typer.Option(0, help="sampling seed"),
    hub_root: Path = typer.Option(Path("hub-data"), help="the hub's root: <root>/archives/<id>"),
    out: Path | None = typer.Option(None, help="write here instead of the hub's store"),
    shard_size: int = typer.Option(10_000, help="images per shard for large pools"),
) -> None:
    """Pool archives (union label space, per-site masks, counts); example:

    radshare-hub pool --archive a=archives/site-a --archive b=archives/site-b
    --labels "b=Pneumonia|No Finding" --strategy balance --enrich Cardiomegaly=500
    """
    from hub.pooling.pool import PoolOptions, PoolStrategy, plan_pool
    from hub.pooling.writer import write_pooled_archive

    label_map = parse_pairs(labels, "--labels")
    options = PoolOptions(
        strategy=PoolStrategy(strategy),
        num_images=num_images,
        target_prevalence={
            k: float(v) for k, v in parse_pairs(target_prevalence, "--target-prevalence").items()
        }
        or None,
        images_per_label=images_per_label,
        enrich={k: int(v) for k, v in parse_pairs(enrich, "--enrich").items()},
        seed=seed,
    )
    sources = [_source(spec, label_map) for spec in archive]
    pooled = write_pooled_archive(
        plan_pool(sources, options),
        sources,
        options,
        hub_root / "archives",
        shard_size_images=shard_size,
        out_dir=out,
    )
    manifest = pooled.manifest
    typer.echo(f"pooled archive {pooled.archive_id} ({manifest.num_images} images)")
    typer.echo(f"  folder: {pooled.folder}")
    for site, entry in manifest.sites.items():
        annotated = ", ".join(entry.annotated_labels)
        typer.echo(f"  site {site}: {entry.num_images} images; annotated: {annotated}")
