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
    hub: str | None = typer.Option(
        None, help="hub address host:port: the hub applies the audit policy (else --hub-root)"
    ),
    tls_dir: Path = typer.Option(Path("hub-data/tls"), help="ca.crt and <identity>.crt/.key"),
    identity: str = typer.Option("operator", help="who pools (recorded with an override)"),
    override_audit: str | None = typer.Option(
        None,
        "--override-audit",
        help="REASON (10+ chars): pool archives whose generator's audit failed, is missing "
        "or stale; recorded with who and when, and written into the pooled manifest",
    ),
) -> None:
    """Pool archives (union label space, per-site masks, counts).

    The generator of every archive must pass the hub's audit policy now (checked by
    the hub with --hub, else by the registry under --hub-root; a withdrawn generator
    never passes); the decisions, overrides included, go into the pooled manifest.

    Example:

    \b
      radshare-hub pool --archive a=archives/site-a --archive b=archives/site-b \\
          --labels "b=Pneumonia|No Finding" --strategy balance --enrich Cardiomegaly=500

    """
    from hub.audit.gate import open_gate
    from hub.pooling.audit import clear_archives
    from hub.pooling.pool import PoolOptions, PoolStrategy, plan_pool
    from hub.pooling.writer import write_pooled_archive
    from shared.artifacts.audit_state import check_reason

    if override_audit is not None:
        check_reason(override_audit)

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
    gate = open_gate(hub, hub_root, tls_dir, identity)
    generators = clear_archives(sources, gate, override_audit)
    pooled = write_pooled_archive(
        plan_pool(sources, options),
        sources,
        options,
        hub_root / "archives",
        shard_size_images=shard_size,
        out_dir=out,
        generators=generators,
    )
    manifest = pooled.manifest
    typer.echo(f"pooled archive {pooled.archive_id} ({manifest.num_images} images)")
    typer.echo(f"  folder: {pooled.folder}")
    for site, entry in manifest.sites.items():
        annotated = ", ".join(entry.annotated_labels)
        typer.echo(f"  site {site}: {entry.num_images} images; annotated: {annotated}")
    for name, decision in generators.items():
        typer.echo(f"  archive {name}: generator {decision.generator_id[:12]}, {decision.label}")
        if decision.override is not None:
            o = decision.override
            typer.echo(
                f"    override by {o.given_by} at {o.given_at:%Y-%m-%dT%H:%M:%S}: {o.reason}"
            )
