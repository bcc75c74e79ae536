"""Small holes (issue 12, item 8): one site-id rule; ingest paths stay under --images;
identical image bytes under two ids are reported and land in one split."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hub.cli import app as hub_app
from shared.cli_main import run_cli
from shared.site_ids import check_site_id, is_site_id
from site_node.cli import app as site_app
from site_node.data.ingest import IngestOptions, ingest

BAD_IDS = ["A", "../x", "a/b", "a b", "a\n", "", "-a", "x" * 64, "a.b", "é"]


def _files(folder: Path) -> list[str]:
    return (
        sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
        if folder.exists()
        else []
    )


def _refused(code: int, output: str, bad: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert "Traceback" not in output and len(lines) == 1, output
    assert repr(bad) in lines[0] and "not a valid site id" in lines[0], lines[0]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_keygen_certs_and_register_site_share_one_site_id_rule(bad, tmp_path, capsys):
    assert not is_site_id(bad)
    key = tmp_path / "good" / "site-a.ed25519.pub"
    assert run_cli(site_app, ["keygen", "--site", "a", "--out", str(key.parent)], prog="s") == 0
    capsys.readouterr()
    runs = [
        (site_app, ["keygen", "--site", bad, "--out", str(tmp_path / "keys")]),
        (hub_app, ["certs", "--out", str(tmp_path / "tls"), "-i", f"site:{bad}"]),
        (
            hub_app,
            ["register-site", "--public-key", str(key), "--root", str(tmp_path / "hub"), "--", bad],
        ),
    ]
    for app, argv in runs:
        code = run_cli(app, argv, prog="radshare")
        captured = capsys.readouterr()
        _refused(code, captured.out + captured.err, bad)
    # Nothing was written by any of them.
    assert _files(tmp_path / "keys") == [] and _files(tmp_path / "tls") == []
    assert _files(tmp_path / "hub") == []


def test_good_site_ids_pass_the_rule():
    for good in ("a", "site-b", "charite_2", "0", "x" * 63):
        assert check_site_id(good) == good


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "labels", "patient_id"])
        writer.writerows(rows)
    return path


def test_ingest_rejects_paths_outside_the_images_folder(tmp_path):
    images = tmp_path / "images"
    rows = [[f"img{i}.png", "No Finding", f"p{i}"] for i in range(8)]
    for i in range(8):
        _png(images / f"img{i}.png", i)
    secret = _png(tmp_path / "elsewhere" / "secret.png", 99)  # exists, but not the site's data
    (images / "link.png").symlink_to(secret)
    rows += [
        [str(secret), "No Finding", "p8"],  # line 10: absolute, outside
        ["../elsewhere/secret.png", "No Finding", "p9"],  # line 11: climbs out
        ["link.png", "No Finding", "p10"],  # line 12: a link that leads out
        [str(images / "img0.png"), "No Finding", "p11"],  # line 13: absolute, inside: fine
    ]
    result = ingest(_csv(tmp_path / "l.csv", rows), images, tmp_path / "cache",
                    IngestOptions(max_resolution_px=4))  # fmt: skip
    outside = [(i.row, i.field, i.value) for i in result.report.issues
               if i.category.value == "outside_images"]  # fmt: skip
    assert outside == [
        (10, "path", str(secret)),
        (11, "path", "../elsewhere/secret.png"),
        (12, "path", "link.png"),
    ]
    reasons = [i.reason for i in result.report.issues if i.category.value == "outside_images"]
    assert all("outside --images" in r and str(secret) in r for r in reasons)
    assert result.counts.kept == 9
    table = pd.read_csv(tmp_path / "cache" / "table.csv", dtype=str)
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in set(table["source_sha256"])


def test_identical_bytes_under_two_ids_are_reported_and_kept_in_one_split(tmp_path):
    images = tmp_path / "images"
    rows = [[f"img{i:02d}.png", "No Finding", f"p{i:02d}"] for i in range(20)]
    for i in range(20):
        _png(images / f"img{i:02d}.png", i)
    shutil.copyfile(images / "img03.png", images / "copy-of-3.png")  # another patient's row
    rows.append(["copy-of-3.png", "No Finding", "p17"])
    csv_path = _csv(tmp_path / "l.csv", rows)
    digest = hashlib.sha256((images / "img03.png").read_bytes()).hexdigest()
    for seed in range(6):
        out = tmp_path / f"cache-{seed}"
        result = ingest(csv_path, images, out, IngestOptions(max_resolution_px=4, seed=seed))
        [note] = [n for n in result.report.notes if "identical image bytes" in n]
        assert digest[:12] in note and "img03.png (row 5)" in note
        assert "copy-of-3.png (row 22)" in note
        table = pd.read_csv(out / "table.csv", dtype=str).set_index("image_index")
        # Both copies, and every image of both patients, are in one split.
        patients = table[table["patient_id"].isin(["p03", "p17"])]
        assert patients["split"].nunique() == 1, (seed, patients["split"].to_dict())
        assert table.loc["copy-of-3.png", "source_sha256"] == digest
