"""One CSV row as ingest understands it, whatever the layout, and the view vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import DataError
from site_node.data.report import IssueCategory

__all__ = ["FRONTAL_VIEWS", "LabelRecord", "RowRejectedError", "is_frontal", "normalise_view"]

#: View names (upper case) that count as frontal. CheXpert frontal rows without an
#: AP/PA value are "FRONTAL".
FRONTAL_VIEWS = frozenset({"PA", "AP", "FRONTAL"})


@dataclass(frozen=True)
class LabelRecord:
    """A parsed label row: which image, whose, which view, which NIH labels.

    ``line`` is the row's line in the CSV (header = 1); ``image_ref`` is the path as
    written in the CSV, relative to the images folder; ``view`` is upper case or None
    when the CSV does not say; ``labels`` are NIH label names (possibly empty for a
    CheXpert row whose only findings have no NIH counterpart).
    """

    line: int
    image_ref: str
    patient_id: str
    follow_up: int | None
    view: str | None
    labels: tuple[str, ...]


class RowRejectedError(DataError):
    """One row cannot be used; ingest turns it into an Issue and goes on (never escapes)."""

    def __init__(self, category: IssueCategory, field: str, value: str, reason: str):
        super().__init__(f"{field}={value!r}: {reason}")
        self.category = category
        self.field = field
        self.value = value
        self.reason = reason


def normalise_view(value: str | None) -> str | None:
    """Upper-case, stripped view name, or None for an empty cell."""
    if value is None:
        return None
    view = value.strip().upper()
    return view or None


def is_frontal(view: str) -> bool:
    """Whether a normalised view name is a frontal (PA/AP) projection."""
    return view in FRONTAL_VIEWS
