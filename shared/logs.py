"""Structured logs: one ``key=value`` (or JSON) line per record, tagged with its component.

Every radshare process calls :func:`configure_logging` once, naming its component
(``hub``, ``site.a``, ``demo``, ...). A line looks like::

    ts=2026-11-03T10:02:07.412Z level=INFO component=site.a logger=radshare.site.train msg="phase 3"

The primary rule is that no code logs a patient identifier (``docs/contributing.md``).
As a second line of defence, :class:`IdentifierRedactor` rewrites what looks like one:
NIH-style image names (``00000001_000.png``, whose first eight digits are the patient id),
``IM-0003-0001``-style keys, and any ``patient``/``Patient ID`` field followed by a value.
Record arguments are formatted first, so a redacted id cannot come back through ``%s``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from pathlib import Path
from typing import Literal

__all__ = ["IdentifierRedactor", "KeyValueFormatter", "configure_logging", "redact"]

LogFormat = Literal["kv", "json"]

_REDACTED = "<redacted>"

# What an identifier looks like in the layouts radshare reads (NIH, CheXpert, Kermany).
_IDENTIFIER_PATTERNS = (
    # NIH Image Index: 8-digit patient id + follow-up, with or without an extension.
    re.compile(r"\b\d{8}_\d{3}(?:\.(?:png|jpe?g|dcm))?\b", re.IGNORECASE),
    # Kermany-style patient keys and file names: IM-0003-0001(-0001).jpeg, person12_bacteria_3.
    re.compile(r"\bIM-\d{4}(?:-\d{4}){0,2}(?:\.(?:png|jpe?g))?\b", re.IGNORECASE),
    re.compile(r"\bperson\d+_(?:bacteria|virus)_\d+(?:\.(?:png|jpe?g))?\b", re.IGNORECASE),
    # CheXpert paths: patient00001/study1/view1_frontal.jpg.
    re.compile(r"\bpatient\d{3,}\b", re.IGNORECASE),
    # A labelled patient id field: "Patient ID: 123", "patient_id=123", "'Patient ID': '123'".
    re.compile(r"(?i)\b(patient[ _-]?id['\"]?\s*[:=]?\s*['\"]?)([\w.-]+)"),
)


def redact(text: str) -> str:
    """``text`` with everything that looks like a patient identifier replaced by ``<redacted>``."""
    for pattern in _IDENTIFIER_PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: m.group(1) + _REDACTED, text)
        else:
            text = pattern.sub(_REDACTED, text)
    return text


class IdentifierRedactor(logging.Filter):
    """A filter that formats a record's message and redacts identifiers from it (never drops)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        return True


class KeyValueFormatter(logging.Formatter):
    """One ``key=value`` or JSON line: ts, level, component, logger, msg (and exc on errors)."""

    def __init__(self, component: str, fmt: LogFormat = "kv") -> None:
        super().__init__()
        self.component, self.fmt = component, fmt

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "component": getattr(record, "component", self.component),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            fields["exc"] = redact(self.formatException(record.exc_info))
        if self.fmt == "json":
            return json.dumps(fields, ensure_ascii=False)
        return " ".join(f"{key}={_kv_value(value)}" for key, value in fields.items())


def _kv_value(value: str) -> str:
    if value and not re.search(r"[\s\"=]", value):
        return value
    return json.dumps(value, ensure_ascii=False)


def configure_logging(
    component: str,
    *,
    level: str | int = "INFO",
    fmt: LogFormat = "kv",
    file: Path | None = None,
) -> logging.Logger:
    """Route every log record of this process to stderr (and ``file``) as structured lines.

    Parameters: ``component`` is the tag every line carries; ``level`` the threshold;
    ``fmt`` ``"kv"`` or ``"json"``; ``file`` an extra file to append to.
    Returns the ``radshare.<component>`` logger. Calling it again replaces the handlers.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.addFilter(IdentifierRedactor())
        handler.setFormatter(KeyValueFormatter(component, fmt))
        root.addHandler(handler)
    root.setLevel(level)
    return logging.getLogger(f"radshare.{component}")
