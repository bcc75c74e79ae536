"""The demo on the team's real images: its logs carry no patient id.

The ``tiny`` profile with ``--data-a``/``--data-b`` pointing at ``$RADSHARE_SAMPLE_DATA``:
every log line of every component is searched for every patient id and image name of both
sites. Its own file so that a parallel run (``pytest -n``) starts it beside the phantom
demo of ``test_demo_e2e.py`` instead of after it.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
from test_demo_e2e import _demo

from deployment.report import SECTION_TITLES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.timeout(7200),
]

# Numbers that are not patient ids although they may equal one: process ids that
# uvicorn prints ("Started server process [12345]").
_NOT_AN_ID = re.compile(r"server process \[\d+\]|pid[= ]\d+")


def _identifiers(site: Path) -> set[str]:
    """Every Patient ID (5+ digits: shorter ones are indistinguishable from counts), every
    image name and stem, and each id zero-padded to 8 digits as NIH names carry it."""
    found: set[str] = set()
    with (site / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            patient = row["Patient ID"].strip()
            found |= {row["Image Index"], Path(row["Image Index"]).stem, patient.zfill(8)}
            if len(patient) >= 5:
                found.add(patient)
            if row.get("Original Patient Key"):
                found.add(row["Original Patient Key"])
    return found


def test_real_data_demo_logs_no_patient_id(site_a, site_b, tmp_path):
    out = tmp_path / "demo-real"
    result = _demo(out, "--data-a", str(site_a), "--data-b", str(site_b), profile="tiny")
    page = (out / "report" / "index.html").read_text()
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in page
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    identifiers = _identifiers(site_a) | _identifiers(site_b)
    pattern = re.compile(
        r"(?<![\w.-])("
        + "|".join(map(re.escape, sorted(identifiers, key=len, reverse=True)))
        + r")(?![\w-])"
    )
    leaks = []
    for path in sorted((out / "logs").glob("*.log")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = pattern.search(_NOT_AN_ID.sub("", line))
            if match:
                leaks.append(f"{path.name}:{number}: {match.group(1)!r} in {line[:160]}")
    assert leaks == []
    assert os.path.getsize(out / "logs" / "site-a.log") > 0
