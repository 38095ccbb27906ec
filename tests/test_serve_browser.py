"""The search page in a real browser: headless Chromium (Debian's chromium and
chromium-driver, which .ci/run installs) driven by Selenium against `wenlan serve`
running as its own process on a free localhost port.

A screenshot of the result page is saved in the test's tmp folder and, when
WENLAN_TEST_ARTIFACTS names a folder, there too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or not os.access(CHROMEDRIVER, os.X_OK),
                       reason="no headless browser: install Debian's chromium and chromium-driver "
                              "(apt-get install -y chromium chromium-driver; .ci/run does)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the test extra)")
pytest.importorskip("uvicorn", reason="wenlan serve needs the serve extra")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"wenlan serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"wenlan serve did not answer at {url} within {seconds} s")


def chromium(profile: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def save_artifact(driver, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    target = os.environ.get("WENLAN_TEST_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / name)
    return shot


def test_the_page_finds_the_image_of_a_chinese_caption(tiny_run, synth_dir, tmp_path):
    from wenlan_cli.data.sources import load_records
    from wenlan_cli.search import Searcher, build_index, load_index

    records = load_records("synth", str(synth_dir), "test")
    images = tmp_path / "photos"
    images.mkdir()
    for record in records:
        shutil.copy(record.image_path, images / record.image_path.name)
    build_index(images, tmp_path / "idx", tiny_run.out, workers=0, device="cpu")
    searcher = Searcher(load_index(tmp_path / "idx"), device="cpu")
    # The caption of a known image: one whose own image the model ranks first (the tiny
    # test model gets some right), else the library's first hit for the first caption.
    query, expected = records[0].captions[0], searcher.search(texts=[records[0].captions[0]], k=1)[0].hits[0].path
    for record in records:
        top = searcher.search(texts=[record.captions[0]], k=1)[0].hits[0].path
        if top == record.image_path.name:
            query, expected = record.captions[0], top
            break

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "wenlan_cli", "serve", "--index", str(tmp_path / "idx"), "--port", str(port),
         "--device", "cpu", "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    driver = None
    try:
        health = wait_until_up(url, server)
        assert health["images"] == 8
        driver = chromium(tmp_path / "chromium-profile")
        wait = WebDriverWait(driver, 30)
        driver.get(url + "/")
        wait.until(lambda d: "8 张图片" in d.find_element(By.ID, "info").text)
        assert health["checkpoint"]["name"] in driver.find_element(By.ID, "info").text
        box = driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys(query)
        assert box.get_attribute("value") == query
        driver.find_element(By.ID, "search").click()
        wait.until(lambda d: d.find_element(By.ID, "results").get_attribute("data-query") == query)
        figures = driver.find_elements(By.CSS_SELECTOR, "#results figure.hit")
        assert len(figures) == 8
        assert figures[0].get_attribute("data-path") == expected and figures[0].get_attribute("data-rank") == "1"
        # The whole grid is the library's ranking for this query, not the index's row order.
        ranking = [hit.path for hit in searcher.search(texts=[query], k=8)[0].hits]
        assert [f.get_attribute("data-path") for f in figures] == ranking
        assert ranking != sorted(ranking)
        assert not driver.find_element(By.ID, "token-form").is_displayed()  # no token needed here
        assert figures[0].find_element(By.CSS_SELECTOR, ".score").text.startswith("1. ")
        # The thumbnails arrived (fetched from /images/ID) and were decoded by the browser.
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
        shot = save_artifact(driver, tmp_path, "serve-text-query.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # Image upload: the image finds itself first.
        driver.find_element(By.ID, "file").send_keys(str(images / expected))
        driver.find_element(By.ID, "search-image").click()
        wait.until(lambda d: d.find_element(By.ID, "results").get_attribute("data-query") == "(uploaded image)")
        first = driver.find_element(By.CSS_SELECTOR, "#results figure.hit")
        assert first.get_attribute("data-path") == expected
        assert float(first.get_attribute("data-score")) == pytest.approx(1.0, abs=1e-3)
        save_artifact(driver, tmp_path, "serve-image-query.png")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
