"""``radshare-hub audit-dp``: recompute a generator's ε from its signed manifest and compare."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["audit_dp"]


def audit_dp(
    bundle: Path = typer.Argument(..., help="a generator bundle folder (e.g. from `pull`)"),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="the site's signing key (PEM), pinned instead of a keyring"
    ),
    keyring: Path | None = typer.Option(
        None, help="consortium keyring JSON (default: the hub's keys at --hub-root)"
    ),
    hub_root: Path = typer.Option(Path("hub-data"), help="the hub's root (keys when no --keyring)"),
    tolerance: float = typer.Option(0.01, help="slack on the recomputed ε (PRV's error)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Verify a bundle, recompute its ε with Opacus, check δ, sampling and steps.

    Example:

    \b
      radshare-hub audit-dp pulled/3f9a1c07b2e4 --keyring consortium-keyring.json --json

    Exit code 0: every check passed; 1: a check failed (reasons printed).
    """
    from hub.privacy_audit import audit_dp_bundle
    from hub.trust import open_keyring

    trusted = public_key if public_key is not None else open_keyring(keyring, hub_root)
    result = audit_dp_bundle(bundle, trusted, tolerance=tolerance)
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
