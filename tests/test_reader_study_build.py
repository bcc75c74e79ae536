"""Reader-study building (three designs) and the answer server's validation."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from shared.errors import ConfigError
from site_node.reader_study.build import build_study
from site_node.reader_study.serve import make_server


def _pools(num_real=700, num_fake=700):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (num_real, 16, 16), dtype=np.uint8), rng.integers(
        0, 256, (num_fake, 16, 16), dtype=np.uint8
    )


def test_grid_images_are_real_with_probability_one_half(tmp_path):
    real, fake = _pools()
    spec = build_study(
        tmp_path / "s", real, fake, design="grid", num_items=200, display_px=16, seed=1
    )
    key = pd.read_csv(tmp_path / "s" / "key.csv")
    assert len(key) == 1200 and all(len(item.images) == 6 for item in spec.items)
    share_real = (key.truth == "real").mean()
    assert abs(share_real - 0.5) < 3 * np.sqrt(0.25 / 1200)
    assert not (tmp_path / "s" / "site" / "key.csv").exists()
    assert len(list((tmp_path / "s" / "site" / "images").glob("*.png"))) == 1200
    assert key.source_row[key.truth == "real"].is_unique  # drawn without replacement


def test_pairs_hold_one_real_and_one_synthetic(tmp_path):
    real, fake = _pools(30, 30)
    build_study(tmp_path / "p", real, fake, design="pairs", num_items=20, display_px=16)
    key = pd.read_csv(tmp_path / "p" / "key.csv")
    assert (key.groupby("item_id").truth.apply(sorted).map(tuple) == ("real", "synthetic")).all()
    left = key.groupby("item_id").truth.first()
    assert 0 < (left == "real").sum() < 20  # the real image's side is random


def test_single_design_is_balanced_and_the_page_hides_the_truth(tmp_path):
    real, fake = _pools(10, 10)
    build_study(tmp_path / "h", real, fake, design="single", num_items=10, display_px=16)
    key = pd.read_csv(tmp_path / "h" / "key.csv")
    assert (key.truth == "real").sum() == 5
    page = (tmp_path / "h" / "site" / "index.html").read_text()
    assert '"truth"' not in page and "source_row" not in page


def test_build_refuses_bad_requests(tmp_path):
    real, fake = _pools(3, 3)
    with pytest.raises(ConfigError, match="valid: grid, pairs, single"):
        build_study(tmp_path / "x", real, fake, design="quad", num_items=1)
    with pytest.raises(ConfigError, match="needs 5 real images"):
        build_study(tmp_path / "y", real, fake, design="pairs", num_items=5)
    (tmp_path / "z").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        build_study(tmp_path / "z", real, fake, design="single", num_items=2)


def _post(url, payload):
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_server_appends_valid_answers_and_rejects_bad_ones(tmp_path):
    real, fake = _pools(4, 4)
    spec = build_study(tmp_path / "s", real, fake, design="single", num_items=4, display_px=16)
    server = make_server(tmp_path / "s", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        item = spec.items[0]
        row = {
            "item_id": item.item_id,
            "image_id": item.images[0],
            "answer": "real",
            "elapsed_ms": 12,
        }
        assert _post(url + "/answers", {"reader_id": "r1", "rows": [row]}) == 204
        other_image = spec.items[1].images[0]
        bad_requests = [
            {"reader_id": "r 1", "rows": [row]},
            {"reader_id": "r1", "rows": [dict(row, answer="maybe")]},
            {"reader_id": "r1", "rows": [dict(row, image_id=other_image)]},
        ]
        for bad in bad_requests:
            with pytest.raises(urllib.error.HTTPError) as error:
                _post(url + "/answers", bad)
            assert error.value.code == 400
        with urllib.request.urlopen(url + "/index.html", timeout=10) as response:
            assert b"Real or synthetic?" in response.read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "/../key.csv", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    # ids as text, as score.py reads them: a random hex id like "342282e43285" parses as a float
    ids = {"reader_id": str, "item_id": str, "image_id": str}
    answers = pd.read_csv(tmp_path / "s" / "answers.csv", dtype=ids)
    assert answers[["reader_id", "image_id", "answer", "elapsed_ms"]].values.tolist() == [
        ["r1", item.images[0], "real", 12]
    ]
