"""Read one labelled synthetic archive in NIH layout, as the pooling step needs it.

An archive (``hub.synthesis`` writes them; a pooled archive has the same layout) is a
folder with one ``Data_Entry``-style CSV (columns ``Image Index``, ``Finding Labels``,
``Patient ID``, ...) and the images it names, under ``images/`` or, for a sharded
archive, under the folder the CSV's optional ``Image Path`` column gives. Reading keeps
the table and the image paths, never the pixels.

Which labels the site *annotated* decides the pooling masks. In order of precedence:
the caller's explicit list; the archive's own JSON manifest (a key ``annotated_labels``
or the labeller's ``class_names``); the labels that occur in the archive's CSV. A
manifest's ``label_space`` is not used: it names what could be labelled, not what was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.errors import DataError, LabelError
from shared.labels import NIH_LABELS, labels_to_multi_hot, parse_finding_labels, validate_labels

__all__ = ["ArchiveSource", "find_entry_csv", "read_archive"]

log = logging.getLogger("radshare.hub.pooling")

_LABEL_KEYS = ("annotated_labels", "class_names")
_SITE_KEYS = ("site_id", "site")


@dataclass(frozen=True)
class ArchiveSource:
    """One archive: its site, rows, multi-hot labels over NIH_LABELS, and annotated labels."""

    site_id: str
    folder: Path
    table: pd.DataFrame  # the archive's CSV, plus "_path" (absolute image path)
    labels: np.ndarray  # float32 [N, len(NIH_LABELS)]
    annotated_labels: tuple[str, ...]  # in NIH_LABELS order
    archive_name: str

    def __len__(self) -> int:
        return len(self.table)


def find_entry_csv(folder: Path) -> Path:
    """The archive's label CSV: the one CSV whose header has ``Image Index`` and ``Finding Labels``.

    Raises:
        DataError: none or several such files (the names are listed).
    """
    candidates = []
    for path in sorted(Path(folder).glob("*.csv")):
        with open(path, encoding="utf-8") as handle:
            header = handle.readline()
        if "Image Index" in header and "Finding Labels" in header:
            candidates.append(path)
    preferred = [p for p in candidates if p.name.startswith("Data_Entry")]
    if len(preferred) == 1:
        return preferred[0]
    if len(candidates) != 1:
        names = [p.name for p in candidates]
        raise DataError(
            f"{folder}: need one CSV with Image Index and Finding Labels, found {names}"
        )
    return candidates[0]


def _manifest_hints(folder: Path) -> dict[str, Any]:
    """Site id and label list from any JSON object in ``folder`` that names them."""
    hints: dict[str, Any] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(raw, dict):
            continue
        for key in _SITE_KEYS:
            if isinstance(raw.get(key), str):
                hints.setdefault("site_id", raw[key])
        for key in _LABEL_KEYS:
            if isinstance(raw.get(key), list | tuple) and "labels" not in hints:
                hints["labels"] = list(raw[key])
    return hints


def _image_paths(folder: Path, table: pd.DataFrame) -> list[Path]:
    if "Image Path" in table.columns:
        return [folder / str(p) for p in table["Image Path"]]
    return [folder / "images" / str(name) for name in table["Image Index"]]


def _annotated(
    explicit: Sequence[str] | None, hinted: Sequence[str] | None, labels: np.ndarray, where: str
) -> tuple[str, ...]:
    if explicit is not None:
        chosen = set(validate_labels(explicit, where=f"{where}: annotated labels"))
    elif hinted is not None:
        chosen = set(validate_labels(hinted, where=f"{where}: manifest labels"))
    else:
        chosen = {name for name, n in zip(NIH_LABELS, labels.sum(axis=0), strict=True) if n > 0}
    present = {name for name, n in zip(NIH_LABELS, labels.sum(axis=0), strict=True) if n > 0}
    undeclared = sorted(present - chosen)
    if undeclared:
        raise LabelError(f"{where}: labels {undeclared} occur in the CSV but are not annotated")
    return tuple(name for name in NIH_LABELS if name in chosen)


def read_archive(
    folder: Path | str,
    *,
    site_id: str | None = None,
    annotated_labels: Sequence[str] | None = None,
    check_images: bool = True,
) -> ArchiveSource:
    """Read an archive's CSV and image paths; labels become multi-hot over NIH_LABELS.

    Raises:
        DataError: no CSV, no site id, or (``check_images``) a listed image that is missing.
        LabelError: an unknown label, or one that occurs but is declared not annotated.
    """
    folder = Path(folder)
    csv_path = find_entry_csv(folder)
    table = pd.read_csv(csv_path, dtype={"Image Index": str})
    hints = _manifest_hints(folder)
    site = site_id or hints.get("site_id")
    if not site:
        raise DataError(f"{folder}: no site id given and none in the archive's JSON manifest")
    findings = [
        parse_finding_labels(text, where=f"{csv_path.name} row {i}")
        for i, text in enumerate(table["Finding Labels"])
    ]
    labels = np.array([labels_to_multi_hot(f) for f in findings], dtype=np.float32)
    labels = labels.reshape(len(table), len(NIH_LABELS))
    paths = _image_paths(folder, table)
    if check_images:
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"{folder}: {len(missing)} listed images are missing, e.g. {missing[0]}"
            )
    table = table.assign(_path=[str(p) for p in paths])
    annotated = _annotated(annotated_labels, hints.get("labels"), labels, str(folder))
    log.info(
        "archive %s (site %s): %d images, %d annotated labels",
        folder.name,
        site,
        len(table),
        len(annotated),
    )
    return ArchiveSource(str(site), folder, table, labels, annotated, folder.name)
