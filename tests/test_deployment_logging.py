"""Structured logs: component tag on every line, identifiers redacted, args formatted first."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from deployment.processes import tag_line
from shared.logs import configure_logging, redact


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read 00000001_000.png ok", "read <redacted> ok"),
        ("stem 00012345_007 rejected", "stem <redacted> rejected"),
        ("Patient ID: 1000002", "Patient ID: <redacted>"),
        ("{'Patient ID': '44'}", "{'Patient ID': '<redacted>'}"),
        ("patient_id=30710 row 3", "patient_id=<redacted> row 3"),
        ("file IM-0003-0001.png", "file <redacted>"),
        ("CheXpert train/patient00001/study1", "CheXpert train/<redacted>/study1"),
        ("person12_bacteria_3.jpeg", "<redacted>"),
    ],
)
def test_identifier_shapes_are_redacted(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text", ["213 patients in 3 splits", "phase fade 8px kimg=0.5", "port 50051", "AUC 0.731"]
)
def test_ordinary_text_is_kept(text):
    assert redact(text) == text


def test_lines_carry_the_component_and_redact_arguments(tmp_path: Path, capsys):
    log_file = tmp_path / "x.log"
    logger = configure_logging("site.a", file=log_file)
    logging.getLogger("radshare.site.ingest").warning("rejected %s: %s", "00000042_001.png", "bad")
    logger.info("done")
    lines = log_file.read_text().splitlines()
    assert len(lines) == 2
    assert all(" component=site.a " in line and line.startswith("ts=") for line in lines)
    assert "00000042" not in log_file.read_text() + capsys.readouterr().err
    assert 'msg="rejected <redacted>: bad"' in lines[0]


def test_json_format_is_one_object_per_line(tmp_path: Path):
    log_file = tmp_path / "x.log"
    configure_logging("hub", fmt="json", file=log_file)
    logging.getLogger("radshare.hub").info("hub serving on %s", "127.0.0.1:5")
    record = json.loads(log_file.read_text().splitlines()[0])
    assert record["component"] == "hub" and record["msg"] == "hub serving on 127.0.0.1:5"


def test_child_output_is_tagged_and_redacted():
    line = tag_line("superlink", "\x1b[92mINFO \x1b[0m: got 00000001_000.png\n")
    assert " component=superlink " in line and "<redacted>" in line and "\x1b" not in line
    already = 'ts=1 level=INFO component=hub logger=radshare.hub msg="x"'
    assert tag_line("other", already + "\n") == already + "\n"
