"""The quality report: one self-contained HTML file, plots embedded as base64 PNGs.

A report is a list of :class:`Section` s, each with paragraphs, tables (header +
rows) and figures (matplotlib ``Figure`` or uint8 image arrays). Text is
HTML-escaped; nothing is fetched when the page opens.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from shared.fileio import atomic_write_text

__all__ = ["Section", "image_to_data_uri", "render_report", "write_report"]

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; image-rendering: pixelated; }
"""


@dataclass
class Section:
    """A heading with paragraphs, tables ``(caption, header, rows)``, figures ``(caption, fig)``."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[object]]]] = field(default_factory=list)
    figures: list[tuple[str, Figure | np.ndarray]] = field(default_factory=list)


def image_to_data_uri(figure: Figure | np.ndarray, dpi: int = 110) -> str:
    """A matplotlib figure or a uint8 grey/RGB array as a ``data:image/png;base64`` URI."""
    buffer = io.BytesIO()
    if isinstance(figure, Figure):
        figure.savefig(buffer, format="png", dpi=dpi)
    else:
        Image.fromarray(np.asarray(figure, dtype=np.uint8)).save(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(value: object) -> str:
    if isinstance(value, float | np.floating):
        return "–" if not np.isfinite(value) else f"{value:.3f}"
    return html.escape(str(value))


def _table(caption: str, header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    table = f"<table><tr>{head}</tr>{body}</table>"
    return f'<p><b>{html.escape(caption)}</b></p><div style="overflow-x:auto">{table}</div>'


def _section(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
    parts += [_table(*t) for t in section.tables]
    for caption, figure in section.figures:
        parts.append(
            f'<figure><img src="{image_to_data_uri(figure)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


def render_report(title: str, sections: list[Section]) -> str:
    """The whole report as one HTML string."""
    body = "\n".join(_section(s) for s in sections)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>"
    )


def write_report(path: Path | str, title: str, sections: list[Section]) -> Path:
    """Render and write the report atomically (``shared.fileio``)."""
    path = Path(path)
    atomic_write_text(path, render_report(title, sections))
    return path
