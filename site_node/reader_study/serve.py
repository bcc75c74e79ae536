"""Serve a reader study on loopback and append POSTed answers to ``<study>/answers.csv``.

``GET`` serves ``<study>/site`` (the page and images, never ``key.csv``);
``POST /answers`` takes ``{"reader_id": str, "rows": [{item_id, image_id, answer,
elapsed_ms}]}``, checks every row against the study (known item, an image of that
item, answer ``real`` or ``synthetic``) and appends them under a lock. A bad
request is answered 400 and writes nothing.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import threading
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from shared.errors import ConfigError
from site_node.reader_study.build import StudySpec

__all__ = ["ANSWER_COLUMNS", "make_server", "parse_answers"]

ANSWER_COLUMNS = ("reader_id", "item_id", "image_id", "answer", "elapsed_ms", "answered_utc")
MAX_BODY_BYTES = 1 << 20
READER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
log = logging.getLogger("radshare.reader_study")


def parse_answers(payload: dict, spec: StudySpec) -> list[dict[str, object]]:
    """Validated answer rows from a POST body; ValueError names the bad field and value."""
    reader = payload.get("reader_id")
    if not isinstance(reader, str) or not READER_ID.match(reader):
        raise ValueError(f"reader_id {reader!r} must be 1-64 letters, digits, _ or -")
    images_of = {item.item_id: set(item.images) for item in spec.items}
    rows = payload.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ValueError("rows must be a non-empty list")
    now = datetime.now(UTC).isoformat()
    out = []
    for row in rows:
        item, image, answer = row.get("item_id"), row.get("image_id"), row.get("answer")
        if image not in images_of.get(item, ()):
            raise ValueError(f"image_id {image!r} is not in item {item!r}")
        if answer not in ("real", "synthetic"):
            raise ValueError(f"answer {answer!r} must be 'real' or 'synthetic'")
        elapsed = row.get("elapsed_ms", 0)
        elapsed_ms = int(elapsed) if isinstance(elapsed, int | float) else 0
        out.append(
            dict(zip(ANSWER_COLUMNS, (reader, item, image, answer, elapsed_ms, now), strict=True))
        )
    return out


class _StudyHandler(SimpleHTTPRequestHandler):
    spec: StudySpec
    answers_path: Path
    lock: threading.Lock

    def log_message(self, format: str, *args) -> None:
        log.debug("reader-study %s", format % args)

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/answers":
            self.send_error(404, "only POST /answers")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self.send_error(400, f"body of {length} bytes")
            return
        try:
            rows = parse_answers(json.loads(self.rfile.read(length)), self.spec)
        except (ValueError, AttributeError) as error:
            self.send_error(400, str(error)[:200])
            return
        with self.lock:
            new_file = not self.answers_path.exists()
            with self.answers_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=ANSWER_COLUMNS)
                if new_file:
                    writer.writeheader()
                writer.writerows(rows)
        self.send_response(204)
        self.end_headers()


def make_server(
    study_dir: Path | str, host: str = "127.0.0.1", port: int = 8765
) -> ThreadingHTTPServer:
    """An HTTP server for ``study_dir`` (call ``serve_forever``; ``port=0`` picks a free one)."""
    study_dir = Path(study_dir)
    spec_path = study_dir / "study.json"
    if not spec_path.is_file():
        raise ConfigError(f"{study_dir}: no study.json (build the study first)")
    spec = StudySpec.model_validate_json(spec_path.read_text())
    handler = type(
        "StudyHandler",
        (_StudyHandler,),
        {"spec": spec, "answers_path": study_dir / "answers.csv", "lock": threading.Lock()},
    )
    return ThreadingHTTPServer((host, port), partial(handler, directory=str(study_dir / "site")))
