"""``radshare-hub verify``: re-hash every stored blob against the registry (fsck), mark damage."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["verify"]


def verify(
    root: Path = typer.Option(Path("hub-data"), help="registry folder (SQLite + blobs)"),
) -> None:
    """Check the database, re-hash every blob it names, record and report missing or corrupt
    ones (safe while the hub serves); exit code 1 if any artifact is damaged.

    Example (on the hub machine; the damaged artifact's site re-publishes to repair it):

    \b
      radshare-hub verify --root hub-data
      database hub-data/registry.sqlite3: ok
      checked 3 blob(s) (412 MB) of 3 artifact(s)
      CORRUPT  3f9c…e1  generator.safetensors  hashes to 77ab01c4… (141236 bytes); …
      1 of 3 artifact(s) damaged: the site that published it repairs it by …
    """
    from hub.registry.database import check_database
    from hub.registry.integrity import verify_registry
    from hub.registry.sqlite_registry import SqliteRegistry

    registry = SqliteRegistry.open_existing(root)
    check_database(registry.db_path)
    typer.echo(f"database {registry.db_path}: ok")
    report = verify_registry(registry)
    typer.echo(
        f"checked {report.blobs_checked} blob(s) ({report.bytes_hashed / 1e6:.1f} MB) "
        f"of {len(report.artifacts)} artifact(s)"
    )
    for artifact in report.damaged:
        for name, _sha256, state, detail in artifact.problems:
            typer.echo(f"{state.value.upper():<8} {artifact.artifact_id}  {name}  {detail}")
    if report.damaged:
        typer.echo(
            f"{len(report.damaged)} of {len(report.artifacts)} artifact(s) damaged: the site that "
            "published it repairs it by publishing the same bundle again (radshare-site publish), "
            "or restore a backup (radshare-hub restore)"
        )
        raise typer.Exit(1)
    typer.echo("all blobs verified")
