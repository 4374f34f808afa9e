"""End to end in headless Chromium: a real `streamlit run`, driven by Python playwright.

Screenshots of every step, and the timings, go to screenshots/ (see the README).
"""
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
CHROMIUM = os.environ.get("SNNET_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
POINT = ".js-plotly-plot .scatterlayer .point"
TIMINGS: dict[str, float] = {}

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    home = tmp_path_factory.mktemp("snnet-home")
    environment = {**os.environ, "SNNET_HOME": str(home)}
    log = open(home / "server.log", "wb")  # a file, not a pipe nobody reads, which could fill up
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"streamlit did not start: {(home / 'server.log').read_text()[-2000:]}")
    yield url, started
    process.terminate()
    process.wait(timeout=20)
    log.close()
    SHOTS.mkdir(exist_ok=True)
    (SHOTS / "timings.json").write_text(json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver (bash .ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(server, browser, request):
    url, _ = server
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(url)
    page.wait_for_selector(POINT, timeout=90_000)
    yield page
    if request.node.rep_call.failed:  # what the page showed when the test gave up
        _shot(page, f"failed-{request.node.name}")
    page.close()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _selection(page) -> str:
    return page.get_by_role("heading", name=re.compile(r"^(Stitch \d+|Anchor \w+ \(id \d+\))$")).first.inner_text()


def test_the_server_starts_and_draws_the_curve(server, browser):
    url, started = server
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(url)
    page.wait_for_selector(POINT, timeout=90_000)
    TIMINGS["server_start_to_chart_s"] = round(time.monotonic() - started, 2)
    legend = page.locator(".js-plotly-plot .legendtext").evaluate_all("texts => texts.map(t => t.textContent)")
    assert {"anchors", "Pareto frontier", "zoo (trained alone)"} <= set(legend)
    assert page.locator(POINT).count() >= 71
    _shot(page, "1-explorer")
    page.close()


def test_clicking_a_point_selects_that_stitch(page):
    before = _selection(page)
    stitches = page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").first.locator(".point")
    target = stitches.nth(5)
    target.hover(force=True)
    hover = page.locator(".js-plotly-plot .hoverlayer").first.text_content()
    wanted = re.search(r"Stitch \d+", hover).group(0)
    assert wanted != before
    target.click(force=True)
    page.get_by_role("heading", name=wanted, exact=True).wait_for(timeout=30_000)
    assert page.get_by_text(re.compile(r"stitching layer \d+:")).count() >= 1  # the path picture changed with it
    _shot(page, "2-clicked-stitch")


def test_an_upload_gets_predictions(page):
    from PIL import Image

    from snnet.data import sample_images
    from snnet.families import get_family

    name, digit = sample_images(get_family("mini"))[3]
    buffer = io.BytesIO()
    digit.convert("RGB").resize((96, 96)).save(buffer, format="PNG")
    assert isinstance(digit, Image.Image)
    started = time.monotonic()
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "my-digit.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    page.get_by_text("my-digit.png").first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"^(Stitch \d+|Anchor \w+) · [\d.]+ ms$")).nth(2).wait_for(timeout=60_000)
    TIMINGS["upload_to_predictions_s"] = round(time.monotonic() - started, 2)
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"not an image"}])
    page.get_by_text("broken.png: not a readable image, skipped").wait_for(timeout=60_000)
    _shot(page, "3-predictions")


def test_a_tiny_fine_tune_runs_and_lands_on_the_curve(page):
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text("chosen", exact=True).click()
    page.get_by_label("Iterations (0: evaluate only)").fill("3")
    page.get_by_label("Batch size").fill("8")
    page.get_by_role("button", name="Launch fine-tune").click()
    page.get_by_text(re.compile(r"^Job 1 · finetune")).first.wait_for(timeout=30_000)
    _shot(page, "4-job-running")
    page.reload()  # the job lives in its own process and the store, not in this browser session
    page.wait_for_selector(POINT, timeout=90_000)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text(re.compile(r"^Job 1 done")).wait_for(timeout=180_000)
    _shot(page, "5-job-done")
    page.get_by_role("button", name="Show on the curve").click()
    page.get_by_role("tab", name="Explorer").click()
    page.locator(".js-plotly-plot .legendtext", has_text="before fine-tune").first.wait_for(timeout=120_000)
    _shot(page, "6-after-fine-tune")
