"""``radshare-hub restore``: put a verified backup in place as a registry root."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["restore"]


def restore(
    from_dir: Path = typer.Option(..., "--from", help="a folder written by radshare-hub backup"),
    root: Path = typer.Option(Path("hub-data"), help="registry folder to restore into"),
    force: bool = typer.Option(
        False, help="replace the database of a root that already holds a registry"
    ),
) -> None:
    """Verify the backup (database and every blob hash), then restore it into ROOT; refuses
    a root that holds a registry unless --force. Stop the hub first.

    Example:

    \b
      radshare-hub restore --from /backups/hub-2026-12-03 --root hub-data --force
      restored 3 artifact(s), 3 blob(s) from /backups/hub-2026-12-03 into hub-data
      (backup of 2026-12-03T02:00:00+00:00); check with: radshare-hub verify --root hub-data
    """
    from hub.registry.backup import restore_registry
    from hub.registry.database import check_database
    from hub.registry.sqlite_registry import SqliteRegistry

    manifest = restore_registry(from_dir, root, force=force)
    check_database(SqliteRegistry(root).db_path)  # opens it: schema up to date, pages sound
    typer.echo(
        f"restored {manifest.artifacts} artifact(s), {len(manifest.blobs)} blob(s) from "
        f"{from_dir} into {root} (backup of {manifest.created.isoformat(timespec='seconds')}); "
        f"check with: radshare-hub verify --root {root}"
    )
