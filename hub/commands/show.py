"""``radshare-hub show``: read one artifact's signed manifest, as an auditor does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hub.commands.options import HUB, TLS_DIR

__all__ = ["show"]

# Manifest keys an auditor looks for first (anywhere in the manifest).
_AUDIT_WORDS = ("audit", "override", "verdict", "withdraw", "dp.epsilon", "dp.delta")


def show(
    artifact_id: str = typer.Argument(..., help="artifact id, or a unique prefix of 8+ hex digits"),
    hub: str = HUB,
    tls_dir: Path = TLS_DIR,
    identity: str = typer.Option("auditor", help="whose certificate to use (auditor / operator)"),
    as_json: bool = typer.Option(False, "--json", help="print the whole manifest as JSON"),
) -> None:
    """Print an artifact's manifest: who published it, its files, its audit and any override.

    The manifest is the one the site signed (the hub verified the signature against the
    site's registered key on upload); the audit summary and an --override-audit reason
    are part of what was signed. Example:

    \b
      radshare-hub show 3f9a1c07 --identity auditor --tls-dir /etc/radshare/tls
    """
    from shared.hub_client import ClientTLS, HubClient

    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        reply = client.get_manifest(artifact_id)
    manifest = json.loads(reply.manifest_json)
    if as_json:
        typer.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    summary = reply.artifact
    typer.echo(f"artifact  {summary.artifact_id}")
    typer.echo(
        f"kind      {summary.kind}   site {summary.site_id}   published {summary.published_at}"
    )
    for name, entry in sorted(manifest.get("files", {}).items()):
        typer.echo(f"file      {name}  {entry.get('size_bytes')} B  sha256 {entry.get('sha256')}")
    found = sorted(_audit_fields(manifest))
    for path, value in found:
        typer.echo(f"{path}: {value}")
    if not any("override" in path for path, _ in found):
        typer.echo("override: none (published with a passing audit, or no audit recorded)")


def _audit_fields(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """``(dotted.path, value)`` of every scalar under a key that names an audit fact."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if any(word in sub.lower() for word in _AUDIT_WORDS) and not isinstance(
                item, dict | list
            ):
                out.append((sub, item))
            else:
                out += _audit_fields(item, sub)
        return out
    if isinstance(value, list) and path and any(w in path.lower() for w in _AUDIT_WORDS):
        return [(path, json.dumps(value)[:200])]
    return []
