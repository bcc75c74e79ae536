"""Find the image file a CSV row names, under the site's images folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from site_node.data.records import RowRejectedError
from site_node.data.report import IssueCategory

__all__ = ["ImageLocator"]


class ImageLocator:
    """Finds the file a CSV row names under the images folder.

    A path that leads outside ``images_dir`` (absolute elsewhere, ``..``, a symbolic
    link) is refused. Tried in order: ``images_dir / ref``; the same without its first
    folder (CheXpert paths start with the dataset folder, e.g.
    ``CheXpert-v1.0-small/train/...``); and for a bare file name, a unique file of that
    name anywhere below ``images_dir`` (NIH ships ``images_001/images/...``; the
    folder is walked once, on first need).
    """

    def __init__(self, images_dir: Path):
        self.root = Path(images_dir)
        self._by_name: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for folder, _dirs, files in os.walk(self.root):
                for name in files:
                    self._by_name.setdefault(name, []).append(Path(folder) / name)
        return self._by_name

    def _inside(self, path: Path, image_ref: str) -> Path:
        """``path`` if it resolves under the images folder; RowRejectedError otherwise."""
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise RowRejectedError(
                IssueCategory.OUTSIDE_IMAGES,
                "",
                "",
                f"path {image_ref!r} leads to {path.resolve()}, outside --images {root}",
            )
        return path

    def locate(self, image_ref: str) -> Path:
        """The file for ``image_ref`` under the images folder; RowRejectedError otherwise.

        missing_file names what was tried; outside_images a path that is absolute or
        climbs (``..``, a symbolic link) out of the images folder.
        """
        ref = PurePosixPath(image_ref.replace("\\", "/"))
        if ref.is_absolute() or ".." in ref.parts:
            self._inside(self.root / ref, image_ref)
        candidates = [self.root / ref]
        if len(ref.parts) > 1:
            candidates.append(self.root.joinpath(*ref.parts[1:]))
        for candidate in candidates:
            if candidate.is_file():
                return self._inside(candidate, image_ref)
        matches = self._index().get(ref.name, []) if len(ref.parts) == 1 else []
        if len(matches) == 1:
            return self._inside(matches[0], image_ref)
        reason = f"no such file under {self.root}"
        if len(matches) > 1:
            reason = f"{len(matches)} files of that name under {self.root}: ambiguous"
        raise RowRejectedError(IssueCategory.MISSING_FILE, "", "", reason)
