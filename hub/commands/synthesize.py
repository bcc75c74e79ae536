"""``radshare-hub synthesize``: a labelled synthetic archive (NIH layout) from a generator."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["synthesize"]


def synthesize(
    generator: str = typer.Option(..., help="registry id, bundle folder or training export"),
    labeller: str = typer.Option(..., help="registry id, bundle folder or training export"),
    size: int = typer.Option(..., help="number of images in the archive"),
    out: Path = typer.Option(..., help="archive folder (new, or an interrupted one to resume)"),
    labels: str = typer.Option(
        "match-site", help="match-site | balanced | FILE (CSV label,weight or JSON)"
    ),
    unlabelled: bool = typer.Option(
        False, help="sample without class optimisation; label afterwards"
    ),
    seed: int = typer.Option(0, help="decides every latent, target and threshold"),
    batch_size: int = typer.Option(64, help="latents optimised at once"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    lr: float = typer.Option(0.05, help="Adam step size in latent units"),
    max_steps: int = typer.Option(200, help="give a start up after this many steps"),
    plateau_steps: int = typer.Option(40, help="give up after this many steps without gain"),
    overshoot: float = typer.Option(
        0.0,
        help="optimise to T_c + overshoot logits, other callable findings to Youden - overshoot "
        "(fewer rejected follow-ups, far fewer converged centres: docs/benchmarks.md); "
        "0: as published",
    ),
    sigma: float = typer.Option(0.2, help="local sampling: std of z* + N(0, sigma^2)"),
    max_draws: int = typer.Option(
        50, help="local sampling: draws per follow-up image before a centre is given up"
    ),
    hub: str | None = typer.Option(None, help="hub address host:port, to pull registry ids"),
    tls_dir: Path = typer.Option(Path("hub-data/tls"), help="ca.crt and <identity>.crt/.key"),
    identity: str = typer.Option("operator", help="whose certificate to pull with"),
    pull_dir: Path = typer.Option(Path("pulled"), help="where pulled bundles are kept"),
    hub_root: Path = typer.Option(
        Path("hub-data"), help="the hub's root, whose registry applies the audit policy (no --hub)"
    ),
    keyring: Path | None = typer.Option(
        None,
        help="consortium keyring JSON that bundles are verified against "
        "(default: the hub's own keys under --hub-root)",
    ),
    trust_local_export: bool = typer.Option(
        False, "--trust-local-export", help="accept an unsigned training export as a source"
    ),
    override_audit: str | None = typer.Option(
        None,
        "--override-audit",
        help="REASON (10+ chars): use a generator whose audit failed, is missing or stale; "
        "recorded with who and when, and written into the archive's manifest",
    ),
) -> None:
    """Write a labelled archive; an interrupted run resumes with the same command.

    The generator must pass the hub's audit policy (the latest federated audit of its
    own site passed, is signed by that site and audited these weights; not withdrawn),
    checked by the hub (--hub) or the registry under --hub-root. Examples:

    radshare-hub synthesize --generator 3f9a1c07 --labeller 8b2e44d0 --hub 127.0.0.1:50051
    --size 20000 --labels balanced --out arch/a2

    radshare-hub synthesize --generator pulled/g1 --labeller pulled/l1 --hub-root hub-data
    --size 1000 --out arch/a1

    radshare-hub synthesize --generator runs/g1/export --labeller runs/l1/export
    --trust-local-export --hub-root hub-data --size 200 --out arch/t1
    --override-audit "pipeline test, not shared"
    """
    from hub.audit.gate import open_gate
    from hub.synthesis.class_optimisation import ClassOptimisationSettings
    from hub.synthesis.local_sampling import LocalSamplingSettings
    from hub.synthesis.pipeline import SynthesisOptions, prepare_synthesis
    from hub.trust import open_keyring
    from shared.artifacts.audit_state import check_reason

    if override_audit is not None:
        check_reason(override_audit)

    keys = open_keyring(keyring, hub_root)
    options = SynthesisOptions(
        generator=generator,
        labeller=labeller,
        out_dir=out,
        num_images=size,
        labels=labels,
        unlabelled=unlabelled,
        seed=seed,
        device=device,
        optimisation=ClassOptimisationSettings(
            batch_size=batch_size, learning_rate=lr, max_steps=max_steps,
            plateau_patience_steps=plateau_steps, overshoot_logit=overshoot,
        ),
        sampling=LocalSamplingSettings(
            sigma=sigma, batch_size=batch_size, max_draws_per_image=max_draws
        ),
        pull_dir=pull_dir,
        override_audit=override_audit,
        trusted=keys,
        trust_local_export=trust_local_export,
    )  # fmt: skip
    gate = open_gate(hub, hub_root, tls_dir, identity)
    job = prepare_synthesis(options, _puller(hub, tls_dir, identity, override_audit, keys), gate)
    typer.echo(_audit_line(job.plan.audit))
    manifest = _run_with_progress(job)
    typer.echo(_summary(manifest))
    typer.echo(_prevalence_summary(out))


def _audit_line(decision) -> str:  # type: ignore[no-untyped-def]
    """One line: which audit cleared the generator, or the override (who, why)."""
    if decision is None:
        return "audit: not checked"
    if decision.override is not None:
        o = decision.override
        return (
            f"audit: OVERRIDE of {decision.state} by {o.given_by} at "
            f"{o.given_at.isoformat(timespec='seconds')}: {o.reason}"
        )
    return f"audit: {decision.reason} ({decision.checked_by})"


def _puller(  # type: ignore[no-untyped-def]
    hub: str | None, tls_dir: Path, identity: str, override_audit: str | None, keys
):
    if hub is None:
        return None

    def pull(artifact_id: str, out_dir: Path, kind: str) -> Path:
        from shared.artifacts.records import ArtifactKind
        from shared.hub_client import ClientTLS, HubClient

        # A generator is pulled for synthesis: the hub applies its audit policy first.
        with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
            return client.pull(
                artifact_id,
                out_dir,
                ArtifactKind(kind),
                trusted=keys,
                for_synthesis=kind == ArtifactKind.GENERATOR.value,
                override_reason=override_audit,
            )

    return pull


def _run_with_progress(job, log_every_s: float = 15.0):
    """Run the job with a progress bar on a terminal, or a log line every ``log_every_s``."""
    import logging

    from hub.synthesis.pipeline import run_synthesis
    from shared.progress import ProgressReporter

    total, already = job.plan.requested_images, _images_written(job.options.out_dir)
    log = logging.getLogger("radshare.hub.synthesis")
    progress = ProgressReporter(
        total, unit="images", description="synthesize", logger=log,
        log_every_s=log_every_s, completed=already,
    )  # fmt: skip
    if not progress.use_bar:  # a service or a demo log: plain progress lines
        log.info("synthesize: %d/%d images already written", already, total)
        if not job.plan.unlabelled:
            log.info("synthesize: optimising latents first (progress lines every 10 s)")
    with progress:
        return run_synthesis(job, progress)


def _images_written(out: Path) -> int:
    import json

    journal = out / "journal.jsonl"
    if not journal.is_file():
        return 0
    count = 0
    for line in journal.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if event.get("event") == "patient":
            count += len(event.get("images", []))
    return count


def _summary(manifest) -> str:
    lines = [
        f"archive: {manifest.num_images} images, {manifest.num_patients} patients "
        f"({manifest.abandoned_patients} abandoned)",
        f"{'target class':20s} {'patients':>8s} {'starts':>6s} {'give-up':>7s} "
        f"{'no series':>9s} {'neighbours rejected':>19s}",
    ]
    for c in manifest.per_class:
        rate = "-" if c.give_up_rate is None else f"{c.give_up_rate:.0%}"
        rejected = f"{c.neighbours_rejected}/{c.neighbours_drawn}"
        lines.append(
            f"{c.target_class:20s} {c.patients:8d} {c.starts:6d} {rate:>7s} "
            f"{c.sampling_failures:9d} {rejected:>19s}"
        )
    lines.append(
        "give-up: starts that plateaued or hit the step limit; no series: converged starts "
        "whose follow-ups were rejected too often"
    )
    return "\n".join(lines)


def _prevalence_summary(out: Path) -> str:
    """The archive's ``prevalence.json`` as a table: target vs achieved with its CI, severities."""
    import json

    from hub.synthesis.prevalence import PREVALENCE_FILE

    path = out / PREVALENCE_FILE
    if not path.is_file():
        return "prevalence: none (an unlabelled archive)"
    report = json.loads(path.read_text())
    lines = [
        f"{'label':20s} {'target':>7s} {'planned':>7s} {'achieved':>8s} {'95% CI':>15s} within",
    ]
    for row in report["labels"]:
        target = "-" if row["target"] is None else f"{row['target']:.3f}"
        within = {None: "-", True: "yes", False: "NO"}[row["within_ci"]]
        ci = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        lines.append(
            f"{row['label']:20s} {target:>7s} {row['planned']:7.3f} {row['achieved']:8.3f} "
            f"{ci:>15s} {within}"
        )
    severity = report["severity"]
    kept = severity["achieved_minus_youden_kept"]
    lines += [
        f"prevalence: share of images; target: {report['target'] or 'none (not match-site)'}; "
        f"CI: patient bootstrap. {report['target_note']}".rstrip(),
        f"No Finding images with a finding: {report['no_finding_images_with_a_finding']}; "
        f"No Finding patients with a finding: {report['no_finding_patients_with_a_finding']}; "
        f"patients off their target labels: {report['patients_off_target_vector']}",
    ]
    if kept.get("n"):
        lines.append(
            f"severity (logit above Youden at the optimised centre, {severity['reference']}): "
            f"median {kept['quantiles']['0.5']:.2f} vs {severity['reference_quantiles']['0.5']:.2f}"
            f", KS {kept['ks_statistic']:.3f} (n={kept['n']}); drawn for kept patients KS "
            f"{severity['drawn_kept']['ks_statistic']:.3f}"
        )
    return "\n".join(lines)
