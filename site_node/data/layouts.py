"""Label CSVs in three layouts (NIH, CheXpert, plain), detected from the header.

* ``nih``: NIH ``Data_Entry_2017.csv`` — ``Image Index``, ``Finding Labels`` (pipe-joined
  NIH names or ``No Finding``), ``Patient ID``, optional ``Follow-up #`` and
  ``View Position``. Its split header columns (``OriginalImage[Width``, ``Height]``,
  ``OriginalImagePixelSpacing[x``, ``y]``) are read as ordinary, ignored columns.
* ``chexpert``: ``Path``, ``Frontal/Lateral``, ``AP/PA`` and the 14 observation
  columns (see :mod:`site_node.data.chexpert`).
* ``plain``: ``path`` and ``labels`` (pipe-separated NIH names); optional
  ``patient_id`` (without it each image is its own patient) and ``view``.

:func:`read_label_table` turns every non-empty row into a :class:`LabelRecord` or an
:class:`Issue` naming the CSV, line, field and value; the caller decides what to do
with views and files.
"""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from shared.errors import ConfigError, LabelError
from shared.labels import NIH_LABELS, NO_FINDING, parse_finding_labels
from site_node.data.chexpert import CHEXPERT_LABELS, UncertaintyPolicy, parse_chexpert_row
from site_node.data.records import LabelRecord, RowRejectedError, normalise_view
from site_node.data.report import Issue, IssueCategory

__all__ = [
    "IMAGE_COLUMN",
    "REQUIRED_COLUMNS",
    "LabelTable",
    "Layout",
    "detect_layout",
    "read_label_table",
]


class Layout(StrEnum):
    """The label-CSV layouts ingest understands."""

    NIH = "nih"
    CHEXPERT = "chexpert"
    PLAIN = "plain"


#: Columns a CSV must have to be read in each layout.
REQUIRED_COLUMNS: dict[Layout, tuple[str, ...]] = {
    Layout.NIH: ("Image Index", "Finding Labels", "Patient ID"),
    Layout.CHEXPERT: ("Path",),
    Layout.PLAIN: ("path", "labels"),
}
#: The column that names each row's image file.
IMAGE_COLUMN: dict[Layout, str] = {
    Layout.NIH: "Image Index",
    Layout.CHEXPERT: "Path",
    Layout.PLAIN: "path",
}
_USED_COLUMNS: dict[Layout, frozenset[str]] = {
    Layout.NIH: frozenset({*REQUIRED_COLUMNS[Layout.NIH], "Follow-up #", "View Position"}),
    Layout.CHEXPERT: frozenset({"Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS}),
    Layout.PLAIN: frozenset({"path", "labels", "patient_id", "view", "follow_up"}),
}


@dataclass
class LabelTable:
    """What :func:`read_label_table` found: records, issues and notes for the report."""

    csv_path: Path
    layout: Layout
    columns: list[str]
    records: list[LabelRecord] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows_read: int = 0

    @property
    def has_view_column(self) -> bool:
        """Whether the CSV says which view each image is."""
        return bool({"View Position", "Frontal/Lateral", "AP/PA", "view"} & set(self.columns))


def detect_layout(columns: list[str], *, csv_path: Path) -> Layout:
    """The layout whose required columns the header has; ConfigError when none fits."""
    header = set(columns)
    if set(REQUIRED_COLUMNS[Layout.NIH]) <= header:
        return Layout.NIH
    if "Path" in header and ({"Frontal/Lateral", *CHEXPERT_LABELS} & header):
        return Layout.CHEXPERT
    if set(REQUIRED_COLUMNS[Layout.PLAIN]) <= header:
        return Layout.PLAIN
    raise ConfigError(
        f"{csv_path}: cannot tell the layout from its header {columns}; expected nih "
        "(Image Index, Finding Labels, Patient ID), chexpert (Path, Frontal/Lateral and "
        "CheXpert label columns) or plain (path, labels); pass --layout to choose"
    )


def _open_rows(csv_path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line, cells)`` for every row, header first; the line is where the row ends."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for cells in reader:
                yield reader.line_num, cells
    except UnicodeDecodeError as error:
        raise LabelError(f"{csv_path}: not UTF-8 text ({error})") from error
    except csv.Error as error:
        raise LabelError(f"{csv_path}: unreadable CSV ({error})") from error


def _required(fields: Mapping[str, str], column: str) -> str:
    value = fields.get(column, "").strip()
    if not value:
        raise RowRejectedError(IssueCategory.MISSING_FIELD, column, "", "empty required cell")
    return value


def _labels(fields: Mapping[str, str], column: str) -> tuple[str, ...]:
    cell = _required(fields, column)
    try:
        labels = parse_finding_labels(cell, where=column)
    except LabelError as error:
        raise RowRejectedError(IssueCategory.UNKNOWN_LABEL, column, cell, str(error)) from error
    if NO_FINDING in labels and len(labels) > 1:
        raise RowRejectedError(
            IssueCategory.BAD_VALUE, column, cell, "No Finding together with findings"
        )
    return tuple(name for name in NIH_LABELS if name in labels)


def _follow_up(fields: Mapping[str, str], column: str) -> int | None:
    cell = fields.get(column, "").strip()
    if not cell:
        return None
    if not cell.isdigit():
        raise RowRejectedError(
            IssueCategory.BAD_VALUE, column, cell, "expected a whole number >= 0"
        )
    return int(cell)


def _parse_nih_row(fields: Mapping[str, str], line: int) -> LabelRecord:
    return LabelRecord(
        line=line,
        image_ref=_required(fields, "Image Index"),
        patient_id=_required(fields, "Patient ID"),
        follow_up=_follow_up(fields, "Follow-up #"),
        view=normalise_view(fields.get("View Position")),
        labels=_labels(fields, "Finding Labels"),
    )


def _parse_plain_row(fields: Mapping[str, str], line: int) -> LabelRecord:
    path = _required(fields, "path")
    patient_id = _required(fields, "patient_id") if "patient_id" in fields else path
    return LabelRecord(
        line=line,
        image_ref=path,
        patient_id=patient_id,
        follow_up=_follow_up(fields, "follow_up"),
        view=normalise_view(fields.get("view")),
        labels=_labels(fields, "labels"),
    )


def _row_parser(layout: Layout, policy: UncertaintyPolicy) -> Callable[..., LabelRecord]:
    if layout is Layout.NIH:
        return _parse_nih_row
    if layout is Layout.PLAIN:
        return _parse_plain_row
    return lambda fields, line: parse_chexpert_row(fields, line, policy)


def _check_columns(table: LabelTable) -> None:
    missing = [c for c in REQUIRED_COLUMNS[table.layout] if c not in table.columns]
    if missing:
        raise LabelError(
            f"{table.csv_path}: layout {table.layout.value!r} needs column(s) {missing}; "
            f"the header has {table.columns}"
        )
    duplicated = sorted({c for c in table.columns if table.columns.count(c) > 1})
    if duplicated:
        raise LabelError(f"{table.csv_path}: header repeats column(s) {duplicated}")
    ignored = [c for c in table.columns if c not in _USED_COLUMNS[table.layout]]
    if ignored:
        table.notes.append(f"CSV columns not used by layout {table.layout.value}: {ignored}")
    if table.layout is Layout.PLAIN and "patient_id" not in table.columns:
        table.notes.append(
            "no patient_id column: every image is its own patient, so the split cannot keep "
            "a patient's images together"
        )


def _issue(table: LabelTable, line: int, rejected: RowRejectedError) -> Issue:
    return Issue(
        category=rejected.category,
        file=str(table.csv_path),
        row=line,
        field=rejected.field,
        value=rejected.value,
        reason=rejected.reason,
    )


def _read_row(
    table: LabelTable, line: int, cells: list[str], parse: Callable[..., LabelRecord]
) -> LabelRecord:
    if len(cells) != len(table.columns):
        raise RowRejectedError(
            IssueCategory.MALFORMED_ROW,
            "<row>",
            ",".join(cells)[:200],
            f"{len(cells)} fields, the header has {len(table.columns)}",
        )
    return parse(dict(zip(table.columns, cells, strict=True)), line)


def read_label_table(
    csv_path: Path,
    layout: Layout | None = None,
    uncertainty: UncertaintyPolicy | None = None,
) -> LabelTable:
    """Read a label CSV; every non-empty row becomes a record or an issue.

    ``layout=None`` detects it from the header. A second row naming the same image is
    a ``duplicate`` issue. Raises LabelError/ConfigError only for problems with the
    whole file (unreadable, no header, missing required columns, unknown layout).
    """
    csv_path = Path(csv_path)
    rows = _open_rows(csv_path)
    first = next(rows, None)
    if first is None or not any(cell.strip() for cell in first[1]):
        raise LabelError(f"{csv_path}: empty file or empty header line")
    columns = [cell.strip() for cell in first[1]]
    table = LabelTable(csv_path, layout or detect_layout(columns, csv_path=csv_path), columns)
    _check_columns(table)
    parse = _row_parser(table.layout, uncertainty or UncertaintyPolicy())
    seen: dict[str, int] = {}
    for line, cells in rows:
        if not any(cell.strip() for cell in cells):
            continue  # blank line: not a row
        table.rows_read += 1
        try:
            record = _read_row(table, line, cells, parse)
            key = posixpath.normpath(record.image_ref.replace("\\", "/"))
            if key in seen:
                raise RowRejectedError(
                    IssueCategory.DUPLICATE,
                    IMAGE_COLUMN[table.layout],
                    record.image_ref,
                    f"same image as row {seen[key]}",
                )
            seen[key] = line
            table.records.append(record)
        except RowRejectedError as rejected:
            table.issues.append(_issue(table, line, rejected))
    unlabelled = sum(1 for record in table.records if not record.labels)
    if unlabelled:
        table.notes.append(
            f"{unlabelled} row(s) carry no NIH label (their findings have no NIH counterpart); "
            "they are kept with an all-zero label vector"
        )
    return table
