"""``radshare-hub list``: published generators (or other artifacts) at a hub."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.commands.options import HUB, TLS_DIR

__all__ = ["list_artifacts"]


def list_artifacts(
    kind: str = typer.Option("generator", help="generator | labeller | classifier | all"),
    site: str | None = typer.Option(None, help="only this site's artifacts"),
    hub: str = HUB,
    tls_dir: Path = TLS_DIR,
    identity: str = typer.Option("operator", help="whose certificate to use (operator / auditor)"),
    hub_root: Path | None = typer.Option(
        None,
        help="on the hub machine: the registry root; reads each artifact's integrity "
        "(ok / corrupt / missing / unchecked, from radshare-hub verify) from it and lists "
        "the pooled archives under <root>/archives",
    ),
    archive: list[Path] = typer.Option(
        [], help="also list this archive folder (synthetic or pooled; repeatable)"
    ),
) -> None:
    """List what the hub holds; generators with their audit state and any override.

    The audit column is the hub's audit policy (passed, FAILED, MISSING, STALE,
    UNVERIFIED, FORGED, WITHDRAWN; override(<state>) once an operator overrode it),
    the override column who overrode it and why. The integrity column is the stored
    bytes' last verified state (ok, corrupt, missing, unchecked; `radshare-hub verify`);
    a corrupt or missing one is not served until its site re-publishes it. Archives
    (--hub-root, --archive) are listed with their generators; one made from a withdrawn
    generator is marked.

    Example:

    \b
      radshare-hub list --kind generator --site a --tls-dir certs --identity operator
    """
    from shared.artifacts.records import ArtifactKind
    from shared.errors import ConfigError
    from shared.hub_client import ClientTLS, HubClient

    valid = [k.value for k in ArtifactKind]
    if kind != "all" and kind not in valid:
        raise ConfigError(f"--kind: {kind!r} is not one of {[*valid, 'all']}")
    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        found = client.list(None if kind == "all" else ArtifactKind(kind), site)
        states = {d.generator_id: d for d in client.audit_states(None)}
    integrity = _integrity(hub_root)
    for s in found:
        decision = states.get(s.artifact_id)
        audit = decision.label if decision is not None else "-"
        held = integrity.get(s.artifact_id) or s.integrity  # the hub's own answer if no root
        checked = f"integrity {held:<9}  " if held else ""
        typer.echo(
            f"{s.artifact_id}  {s.kind:<10}  site {s.site_id:<8}  "
            f"{s.size_bytes:>12} B  {s.published_at}  audit {audit:<18}  {checked}"
            f"{_override_column(decision)}"
        )
    typer.echo(f"{len(found)} artifact(s)")
    folders = list(archive)
    if hub_root is not None and (hub_root / "archives").is_dir():
        folders += sorted(p for p in (hub_root / "archives").iterdir() if p.is_dir())
    for folder in folders:
        typer.echo(_archive_line(folder, states))


def _integrity(hub_root: Path | None) -> dict[str, str]:
    """Artifact id → integrity state from the registry at ``hub_root`` (none: empty)."""
    if hub_root is None or not (hub_root / "registry.sqlite3").is_file():
        return {}
    from hub.registry.integrity import artifact_states
    from hub.registry.sqlite_registry import SqliteRegistry

    return artifact_states(SqliteRegistry.open_existing(hub_root))


def _override_column(decision) -> str:  # type: ignore[no-untyped-def]
    """``override: <who> <when>: <reason>`` / ``withdrawn: ...`` / empty."""
    if decision is None:
        return ""
    if decision.withdrawal is not None:
        w = decision.withdrawal
        return f"withdrawn by {w.withdrawn_by} {w.withdrawn_at:%Y-%m-%dT%H:%M}: {w.reason}"
    if decision.override is not None:
        o = decision.override
        return f"override by {o.given_by} {o.given_at:%Y-%m-%dT%H:%M}: {o.reason}"
    return ""


def _archive_line(folder: Path, states: dict) -> str:  # type: ignore[type-arg]
    """An archive folder, its generators' audit states, and WITHDRAWN where one is."""
    from hub.pooling.audit import archive_generator_ids

    ids = archive_generator_ids(folder)
    parts = []
    for generator_id in ids:
        decision = states.get(generator_id)
        parts.append(f"{generator_id[:12]} {decision.label if decision else 'UNKNOWN'}")
    withdrawn = [g for g in ids if states.get(g) is not None and states[g].state == "withdrawn"]
    mark = f"  MADE FROM WITHDRAWN GENERATOR {', '.join(g[:12] for g in withdrawn)}" * bool(
        withdrawn
    )
    return f"archive {folder}: generators {', '.join(parts) or 'none named'}{mark}"
