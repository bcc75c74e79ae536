"""``radshare-hub archives``: the pooled archives in the hub's archive store."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["archives"]


def archives(
    root: Path = typer.Option(
        Path("hub-data"), help="the hub's root: archives are <root>/archives"
    ),
) -> None:
    """List every complete archive (id, images, files, size, sites), read on the hub machine.

    Operators pull one with ``radshare-hub pull-archive ID``. Example:

    \b
      radshare-hub --config /etc/radshare/hub.yaml archives
    """
    from hub.archives.store import ArchiveStore

    found = ArchiveStore(root / "archives").list()
    for info in found:
        typer.echo(
            f"{info.archive_id}  {info.num_images:>8} images  {info.num_files:>8} files  "
            f"{info.total_bytes:>12} B  sites {','.join(info.sites)}"
        )
    typer.echo(f"{len(found)} archive(s) in {root / 'archives'}")
