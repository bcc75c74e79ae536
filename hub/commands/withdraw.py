"""``radshare-hub withdraw``: withdraw a generator; it is never used for synthesis again."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.commands.options import HUB, TLS_DIR

__all__ = ["withdraw"]


def withdraw(
    artifact_id: str = typer.Argument(..., help="artifact id, or a unique prefix of 8+ hex digits"),
    reason: str = typer.Option(..., "--reason", help="why (10 to 500 characters), recorded"),
    hub: str = HUB,
    tls_dir: Path = TLS_DIR,
    identity: str = typer.Option(
        "operator", "--identity", help="operator (any artifact) or site:<id> (its own only)"
    ),
) -> None:
    """Withdraw an artifact (WithdrawArtifact over gRPC); a withdrawal is never undone.

    The generator stays in the registry, marked withdrawn with the reason, who and
    when; the hub refuses every pull for synthesis of it, ``synthesize`` and ``pool``
    refuse it even with --override-audit, and ``list`` shows it. An operator may
    withdraw any artifact, a site only its own (with its site certificate).

    \b
      radshare-hub withdraw 3f9a1c07 --reason "site a found a patient image in training"
      radshare-hub withdraw 3f9a1c07 --reason "re-trained with DP" --identity site:a
    """
    from shared.artifacts.audit_state import check_reason
    from shared.hub_client import ClientTLS, HubClient

    check_reason(reason, "--reason")
    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        record, created = client.withdraw(artifact_id, reason)
    state = "withdrawn" if created else "was already withdrawn"
    typer.echo(
        f"{record.generator_id} {state} by {record.withdrawn_by} at "
        f"{record.withdrawn_at.isoformat(timespec='seconds')}: {record.reason}"
    )
