"""The reader study in a real browser: headless Chromium clicks answers; the CSV holds them.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and the ``selenium`` package (dev extra); skipped otherwise.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from site_node.reader_study.build import build_study
from site_node.reader_study.serve import make_server

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium + chromium-driver: apt-get install -y chromium chromium-driver",
)
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="needs selenium (pip install -e .[dev])"
)
By = pytest.importorskip("selenium.webdriver.common.by").By


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage"]  # fmt: skip
    for flag in [*flags, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options
    )
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture
def served(tmp_path):
    """Build a study of ``design``, serve it on loopback; yields (url, study folder, spec)."""
    servers = []

    def serve(design: str, num_items: int):
        rng = np.random.default_rng(0)
        real = rng.integers(0, 128, (12, 32, 32), dtype=np.uint8)
        fake = rng.integers(128, 256, (12, 32, 32), dtype=np.uint8)
        spec = build_study(
            tmp_path / design, real, fake, design=design, num_items=num_items, display_px=64
        )
        server = make_server(tmp_path / design, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/index.html", tmp_path / design, spec

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _start(browser, url: str, reader: str) -> None:
    browser.get(url)
    browser.find_element(By.ID, "reader").send_keys(reader)
    browser.find_element(By.ID, "begin").click()


def _wait_for_rows(study: Path, count: int, timeout_s: float = 15.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        path = study / "answers.csv"
        if path.exists():
            answers = pd.read_csv(path, dtype=str)
            if len(answers) >= count:
                return answers
        time.sleep(0.1)
    raise AssertionError(f"{study}/answers.csv did not reach {count} rows in {timeout_s} s")


def _wait_for_item(browser, number: int, total: int) -> None:
    deadline = time.monotonic() + 10
    text = f"Item {number} of {total}"
    while browser.find_element(By.ID, "progress").text != text and time.monotonic() < deadline:
        time.sleep(0.05)


def test_single_design_answers_reach_the_csv(browser, served):
    url, study, spec = served("single", 4)
    _start(browser, url, "reader-1")
    clicked = {}
    for number, item in enumerate(spec.items, start=1):
        _wait_for_item(browser, number, 4)
        answer = "real" if number % 2 else "synthetic"
        browser.find_element(By.ID, f"answer-{answer}").click()
        clicked[item.images[0]] = answer
    answers = _wait_for_rows(study, 4)
    assert dict(zip(answers.image_id, answers.answer, strict=True)) == clicked
    assert set(answers.reader_id) == {"reader-1"}
    assert browser.find_element(By.ID, "done").is_displayed()


def test_grid_design_marks_clicked_images_real(browser, served):
    url, study, spec = served("grid", 2)
    _start(browser, url, "reader-2")
    marked = set()
    for number, item in enumerate(spec.items, start=1):
        _wait_for_item(browser, number, 2)
        for image_id in item.images[::2]:  # mark the 1st, 3rd and 5th image
            browser.find_element(By.CSS_SELECTOR, f'img[data-image-id="{image_id}"]').click()
            marked.add(image_id)
        browser.find_element(By.ID, "submit").click()
    answers = _wait_for_rows(study, 12)
    assert {
        i for i, a in zip(answers.image_id, answers.answer, strict=True) if a == "real"
    } == marked
    assert len(answers) == 12


def test_pairs_design_records_the_pick(browser, served):
    url, study, spec = served("pairs", 3)
    _start(browser, url, "reader-3")
    picked = []
    for number, item in enumerate(spec.items, start=1):
        _wait_for_item(browser, number, 3)
        choice = item.images[number % 2]
        browser.find_element(By.CSS_SELECTOR, f'img[data-image-id="{choice}"]').click()
        picked.append(choice)
    answers = _wait_for_rows(study, 6)
    assert sorted(answers.image_id[answers.answer == "real"]) == sorted(picked)
