"""``radshare-hub audit-dp``: recompute a generator's ε from its signed manifest and compare."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["audit_dp"]


def audit_dp(
    bundle: Path = typer.Argument(..., help="a generator bundle folder (e.g. from `pull`)"),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="the site's signing key (default: signer.pub in the bundle)"
    ),
    tolerance: float = typer.Option(0.01, help="slack on the recomputed ε (PRV's error)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Verify a bundle, recompute its ε with Opacus, check δ, sampling and steps; example:

    radshare-hub audit-dp pulled/3f9a1c07b2e4 --json

    Exit code 0: every check passed; 1: a check failed (reasons printed).
    """
    from hub.privacy_audit import audit_dp_bundle

    result = audit_dp_bundle(bundle, public_key, tolerance=tolerance)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(
            f"accountant {result.accountant}  delta {result.delta:g}  steps {result.num_steps}\n"
            f"epsilon claimed {result.claimed_epsilon:.4f}  "
            f"recomputed {result.recomputed_epsilon:.4f}  target {result.target_epsilon}"
        )
        for name, ok in result.checks.items():
            typer.echo(f"  {name:<9} {'-' if ok is None else 'ok' if ok else 'FAILED'}")
        for problem in result.problems:
            typer.echo(f"problem: {problem}")
    raise typer.Exit(0 if result.passed else 1)
