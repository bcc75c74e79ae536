"""The ingest validation report: every rejected row with its reason, counts that add up.

``radshare-site ingest`` never drops a row silently. Each CSV row it reads ends as
either a kept image or exactly one :class:`Issue` (file, CSV line, field, value,
reason), and ``rows_read == kept + rejected`` is checked whenever counts are built
or loaded. The report is written next to the cache as

    <cache>/ingest_report.json   IngestReport (pydantic, schema_version)
    <cache>/ingest_report.md     the same for people: counts, split proportions, issues

It stays at the site: it names image files, which in the NIH layout embed patient ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.fileio import atomic_write_text

__all__ = [
    "REPORT_JSON",
    "REPORT_MARKDOWN",
    "REPORT_SCHEMA_VERSION",
    "IngestCounts",
    "IngestReport",
    "Issue",
    "IssueCategory",
    "render_markdown",
    "write_report",
]

REPORT_SCHEMA_VERSION = 1
REPORT_JSON = "ingest_report.json"
REPORT_MARKDOWN = "ingest_report.md"


class IssueCategory(StrEnum):
    """Why a CSV row did not become a cached image."""

    MALFORMED_ROW = "malformed_row"  # wrong number of fields
    MISSING_FIELD = "missing_field"  # a required cell is empty
    BAD_VALUE = "bad_value"  # a cell that cannot be parsed
    UNKNOWN_LABEL = "unknown_label"  # a label outside the NIH label space
    DUPLICATE = "duplicate"  # a second row for the same image file
    EXCLUDED_VIEW = "excluded_view"  # not a frontal (PA/AP) view and --all-views not given
    MISSING_FILE = "missing_file"  # the image file does not exist
    OUTSIDE_IMAGES = "outside_images"  # the path leads outside --images (absolute, .., link)
    UNREADABLE_FILE = "unreadable_file"  # the file exists but cannot be read
    DECODE_ERROR = "decode_error"  # the bytes are not a decodable image
    BLANK_IMAGE = "blank_image"  # every pixel has the same value


class Issue(BaseModel):
    """One rejected CSV row: where it is, which field, what value, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: IssueCategory
    file: str = Field(description="the CSV for row problems, the image file for image problems")
    row: int = Field(description="line of the row in the CSV file (the header is line 1)")
    field: str
    value: str
    reason: str


class IngestCounts(BaseModel):
    """Row counts of one ingest; ``rows_read == kept + rejected`` always holds."""

    model_config = ConfigDict(extra="forbid")

    rows_read: int = Field(ge=0, description="non-empty data rows in the CSV")
    kept: int = Field(ge=0, description="rows whose image is in the cache")
    rejected: int = Field(ge=0, description="rows listed as issues")
    rejected_by_category: dict[str, int]

    @model_validator(mode="after")
    def _counts_add_up(self) -> IngestCounts:
        if self.rows_read != self.kept + self.rejected:
            raise ValueError(
                f"counts do not add up: rows_read={self.rows_read} != "
                f"kept={self.kept} + rejected={self.rejected}"
            )
        if sum(self.rejected_by_category.values()) != self.rejected:
            raise ValueError(
                f"rejected={self.rejected} but categories sum to "
                f"{sum(self.rejected_by_category.values())}: {self.rejected_by_category}"
            )
        return self

    @classmethod
    def from_issues(cls, rows_read: int, kept: int, issues: Iterable[Issue]) -> IngestCounts:
        """Counts from the issue list; raises ValueError when they do not add up."""
        by_category = Counter(issue.category.value for issue in issues)
        return cls(
            rows_read=rows_read,
            kept=kept,
            rejected=sum(by_category.values()),
            rejected_by_category=dict(sorted(by_category.items())),
        )


class IngestReport(BaseModel):
    """Everything one ingest run found: counts, issues, notes and the split it made."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = REPORT_SCHEMA_VERSION
    created_utc: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    site_id: str
    csv_file: str
    csv_sha256: str
    images_dir: str
    layout: str
    options: dict[str, Any]
    counts: IngestCounts
    issues: list[Issue]
    notes: list[str] = Field(default_factory=list)
    split: dict[str, Any] | None = Field(
        default=None, description="split_summary(): seed, fractions, per-split and per-label counts"
    )
    elapsed_s: float | None = None


def write_report(out_dir: Path, report: IngestReport) -> tuple[Path, Path]:
    """Write ``ingest_report.json`` and ``ingest_report.md`` atomically; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / REPORT_JSON, out_dir / REPORT_MARKDOWN
    atomic_write_text(json_path, report.model_dump_json(indent=2))
    atomic_write_text(md_path, render_markdown(report))
    return json_path, md_path


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: Iterable[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _split_markdown(split: dict[str, Any]) -> list[str]:
    names = list(split["images"])
    lines = [
        "## Split",
        "",
        f"Patient-level iterative stratification, seed {split['seed']}, "
        f"fractions {split['fractions']}.",
        "",
    ]
    lines += _md_table(
        ["", *names],
        [
            ["patients", *(split["patients"][n] for n in names)],
            ["images", *(split["images"][n] for n in names)],
        ],
    )
    lines += ["", "Share of images carrying each label (count in brackets):", ""]
    rows = []
    for label, per_split in split["labels"].items():
        row: list[object] = [label]
        for name in ["all", *names]:
            row.append(f"{per_split[name]['fraction']:.3f} ({per_split[name]['count']})")
        row.append(f"{per_split['max_abs_deviation']:.3f}")
        rows.append(row)
    lines += _md_table(["label", "all", *names, "max abs dev"], rows)
    return lines


def render_markdown(report: IngestReport) -> str:
    """The report as markdown: summary, rejections per category, split, every issue."""
    counts = report.counts
    lines = [
        f"# Ingest report: {report.site_id}",
        "",
        f"- CSV: `{report.csv_file}` (layout `{report.layout}`, sha256 `{report.csv_sha256}`)",
        f"- images: `{report.images_dir}`",
        f"- created: {report.created_utc}",
        f"- rows read {counts.rows_read} = kept {counts.kept} + rejected {counts.rejected}",
        "",
    ]
    if counts.rejected_by_category:
        by_category = counts.rejected_by_category.items()
        lines += _md_table(["rejected because", "rows"], ([k, v] for k, v in by_category))
    else:
        lines.append("No row was rejected.")
    if report.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in report.notes)]
    if report.split is not None:
        lines += ["", *_split_markdown(report.split)]
    lines += ["", f"## Issues ({len(report.issues)})", ""]
    lines += _md_table(
        ["category", "file", "row", "field", "value", "reason"],
        ([i.category.value, i.file, i.row, i.field, i.value, i.reason] for i in report.issues),
    )
    return "\n".join(lines) + "\n"
