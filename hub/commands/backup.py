"""``radshare-hub backup``: a consistent copy of the registry (database + blobs) while serving."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["backup"]


def backup(
    out: Path = typer.Option(..., help="new folder for the backup (must not exist)"),
    root: Path = typer.Option(Path("hub-data"), help="registry folder (SQLite + blobs)"),
) -> None:
    """Snapshot the database (SQLite online backup), copy exactly the blobs it names and
    every pooled archive, re-hashing each file; writes backup.json last. Safe while
    `radshare-hub serve` runs.

    Example:

    \b
      radshare-hub backup --root hub-data --out /backups/hub-2026-12-03
      backup /backups/hub-2026-12-03: 3 artifact(s), 3 blob(s), 1 pooled archive(s), 412 MB,
      database sha256 5d1e…
    """
    from hub.registry.backup import backup_registry

    manifest = backup_registry(root, out)
    size_mb = (sum(manifest.blobs.values()) + sum(manifest.archives.values())) / 1e6
    typer.echo(
        f"backup {out}: {manifest.artifacts} artifact(s), {len(manifest.blobs)} blob(s), "
        f"{len(manifest.archives)} pooled archive(s), {size_mb:.1f} MB, "
        f"database sha256 {manifest.database_sha256[:16]}…"
    )
