"""``radshare-site audit``: the memorisation audit of a generator against this site's data."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["audit_command"]


def _load_sampler(  # type: ignore[no-untyped-def]
    run: Path | None,
    generator: Path | None,
    trusted: Path | None,
    keyring: Path | None,
    device: str,
):
    """G_ema of a run's export/ or of a (verified) bundle, its weights file, and a sampler."""
    from shared.artifacts.generator import GENERATOR_FILE, load_generator
    from shared.artifacts.keyring import ConsortiumKeyring
    from shared.errors import ConfigError
    from site_node.pggan.export import WEIGHTS_NAME, load_exported_generator
    from site_node.pggan.sampling import generate_uint8

    if (run is None) == (generator is None):
        raise ConfigError("give exactly one of --run (training run) or --generator (bundle)")
    if run is not None:
        G, weights = load_exported_generator(run), run / "export" / WEIGHTS_NAME
    else:
        assert generator is not None
        if trusted is None and keyring is None:
            raise ConfigError(
                f"--generator {generator}: give --keyring (the consortium keyring file) or "
                "--signer-key to verify it; a bundle's own signer.pub is never trusted"
            )
        keys = trusted if trusted is not None else ConsortiumKeyring.load(keyring)  # type: ignore[arg-type]
        G, weights = load_generator(generator, keys, device=device), generator / GENERATOR_FILE

    def sample(num_images: int, seed: int):  # type: ignore[no-untyped-def]
        return generate_uint8(G, num_images, seed=seed, device=device)

    return G, weights, sample


def audit_command(
    cache: Path = typer.Option(..., "--cache", help="this site's cache (radshare-site ingest)"),
    run: Path | None = typer.Option(None, "--run", help="finished training run (its export/)"),
    generator: Path | None = typer.Option(
        None, "--generator", help="generator bundle folder (own or pulled from the hub)"
    ),
    signer_key: Path | None = typer.Option(
        None, "--signer-key", help="PEM public key of the bundle's site, pinned"
    ),
    keyring: Path | None = typer.Option(
        None, "--keyring", help="consortium keyring JSON (`radshare-hub keyring export`)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="new folder for the results (default <run>/audits/<UTC stamp>)"
    ),
    num_samples: int = typer.Option(500, "--num-samples", help="images drawn from G"),
    seed: int = typer.Option(0, "--seed", help="latent seed of the samples"),
    near_copy_ssim: float = typer.Option(0.9, "--near-copy-ssim", help="SSIM of a near copy"),
    max_near_copies: int = typer.Option(0, "--max-near-copies", help="near copies tolerated"),
    alpha: float = typer.Option(0.05, "--alpha", help="level of the two holdout tests together"),
    window: str = typer.Option("uniform", "--window", help="SSIM window: uniform or gaussian"),
    holdout_split: str = typer.Option("test", "--holdout-split", help="test or val"),
    num_permutations: int = typer.Option(9999, "--num-permutations", help="patient relabellings"),
    panel_samples: int = typer.Option(32, "--panel-samples", help="rows of the image panel"),
    labeller: Path | None = typer.Option(
        None, "--labeller", help="labeller export whose embedding is the feature space"
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    ssim_backend: str = typer.Option(
        "auto", "--ssim-backend", help="auto (fused numba kernel on CPU), fused or torch"
    ),
    prune: bool = typer.Option(
        True, "--prune/--no-prune", help="skip pairs whose SSIM bound cannot be a nearest one"
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads of the SSIM search (default: all cores)"
    ),
    membership: bool = typer.Option(
        True, "--membership/--no-membership", help="also membership-inference attacks (AUC)"
    ),
) -> None:
    """Audit a generator for memorised patients; numbers to OUT/summary.json, pixels stay here.

    Writes OUT/summary.json (aggregates only), OUT/local_summary.json (the manifest's audit
    entry, read by publish), OUT/audited_weights.json and OUT/panel/nearest_pairs.png (the
    closest sample/training pairs for the site's radiologist; never leaves the site).

    \b
      radshare-site audit --run runs/a1 --cache cache/a --num-samples 1000
      radshare-site audit --generator pulled/3f9a1c07 --cache cache/a --out audits/b-on-a
    """
    from shared.artifacts.audit import AuditSettings
    from shared.errors import ConfigError
    from shared.fileio import sha256_file
    from shared.metrics.nn_search import SearchOptions
    from site_node.audit.embedding import site_embedder
    from site_node.audit.gate import new_audit_dir, write_audit_folder
    from site_node.audit.memorisation import run_memorisation_audit
    from site_node.data.cache import SiteCache

    search_options = SearchOptions(  # checked before the generator loads
        device=device, backend=ssim_backend, prune=prune, threads=threads
    )
    G, weights, sample = _load_sampler(run, generator, signer_key, keyring, device)
    out = out or new_audit_dir(run if run is not None else Path("audits"))
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not empty (audits never overwrite)")
    settings = AuditSettings(
        num_samples=num_samples, sample_seed=seed, near_copy_ssim=near_copy_ssim,
        max_near_copies=max_near_copies, alpha=alpha,
        ssim_window=window, holdout_split=holdout_split,  # type: ignore[arg-type]
        num_permutations=num_permutations, panel_samples=panel_samples,
    )  # fmt: skip
    embed, embed_name = site_embedder(labeller, G.resolution_px, device)
    outcome = run_memorisation_audit(
        sample, SiteCache(cache), settings, embed=embed, embed_name=embed_name,
        panel_dir=out / "panel",
        options=search_options,
    )  # fmt: skip
    summary = outcome.summary
    if membership:  # GAN-Leaks / Monte-Carlo attacks, aggregates only (site_node.privacy)
        from site_node.privacy.membership import with_membership

        summary = with_membership(summary, sample, SiteCache(cache))
    write_audit_folder(out, summary, sha256_file(weights)[0])
    typer.echo(
        f"audit {'passed' if summary.passed else 'FAILED'}: {summary.near_copy_count} near copies, "
        f"holdout permutation p {summary.ssim_test.permutation_p_value:.2e} (SSIM); "
        f"results in {out}"
    )
    for reason in summary.verdict.reasons:
        typer.echo(f"  {reason}")
    if summary.ssim_search is not None:
        search = summary.ssim_search
        typer.echo(
            f"SSIM search ({search.backend}): {search.pairs_compared:,} pairs compared, "
            f"{search.pairs_skipped:,} skipped by the bound, {search.seconds:.1f} s"
        )
    if summary.membership is not None:
        attack = summary.membership.primary
        low, high = attack.roc_auc_ci95
        typer.echo(f"membership inference AUC {attack.roc_auc:.3f} [{low:.3f}, {high:.3f}]")
