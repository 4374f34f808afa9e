"""End to end in headless Chromium: a real `streamlit run`, driven by Python playwright.

Screenshots of every step, and the timings, go to screenshots/ (see the README).
"""
import io
import json
import re
import time

import pytest
from browser_support import (CHROMIUM, FLAGS, POINT, PREDICTION, SELECTION, SHOTS, STITCH_IDS_JS, noise_png, prediction_row,
                             require_chromium, stitch_points, streamlit_server, title_of)

TIMINGS: dict[str, float] = {}
VIEWPORT = {"width": 1500, "height": 1100}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, when it started, its $SNNET_HOME): jobs can be submitted to the same store from here."""
    home = tmp_path_factory.mktemp("snnet-home")
    started = time.monotonic()
    with streamlit_server(home) as url:
        yield url, started, home
    SHOTS.mkdir(exist_ok=True)
    (SHOTS / "timings.json").write_text(json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(server, browser, request):
    url, _, _ = server
    page = _load(browser.new_page(viewport=VIEWPORT), url)
    yield page
    if request.node.rep_call.failed:  # what the page showed when the test gave up
        _shot(page, f"failed-{request.node.name}")
    page.close()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _load(page, url: str):
    """The page, once the curve is drawn."""
    page.goto(url)
    page.wait_for_selector(POINT, timeout=90_000)
    return page


def _selection(page) -> str:
    return page.get_by_role("heading", name=SELECTION).first.inner_text()


def _curve(page) -> tuple[list[str], int]:
    return page.locator(".js-plotly-plot .legendtext").evaluate_all("texts => texts.map(t => t.textContent)"), \
        page.locator(POINT).count()


def test_the_server_starts_and_draws_the_curve(server, browser):
    """The cold server's first run draws the shipped curve before torch is imported; the page's
    own chart then takes its place, with the same points and legend."""
    url, started, _ = server
    page = _load(browser.new_page(viewport=VIEWPORT), url)
    TIMINGS["server_start_to_chart_s"] = round(time.monotonic() - started, 2)
    warm_up = _curve(page)
    assert page.get_by_text("Loading the mini network").count() == 1
    page.get_by_role("tab", name="Explorer").wait_for(timeout=120_000)
    page.get_by_text("Loading the mini network").wait_for(state="detached", timeout=120_000)
    TIMINGS["server_start_to_page_s"] = round(time.monotonic() - started, 2)
    legend, points = _curve(page)
    assert {"anchors", "Pareto frontier", "zoo (trained alone)"} <= set(legend)
    assert points >= 71
    assert (legend, points) == warm_up
    page.get_by_role("heading", name=SELECTION).first.wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")
    assert page.locator(".js-plotly-plot").count() == 2  # the curve and the path picture, nothing left over
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
    assert page.get_by_text(re.compile(r"stitching layer \d+: \d+→\d+")).count() >= 1  # its details came with it
    _shot(page, "2-clicked-stitch")


def test_an_upload_gets_predictions(page):
    from PIL import Image

    from snnet.families import get_family

    name, digit = get_family("mini").task.sample_images(get_family("mini"))[3]
    buffer = io.BytesIO()
    digit.convert("RGB").resize((96, 96)).save(buffer, format="PNG")
    assert isinstance(digit, Image.Image)
    started = time.monotonic()
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "my-digit.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    page.get_by_text("my-digit.png").first.wait_for(timeout=60_000)
    page.get_by_text(PREDICTION).nth(2).wait_for(timeout=60_000)
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
    launched = page.get_by_text(re.compile(r"^Job \d+ · finetune")).first  # other tests may have queued jobs before
    launched.wait_for(timeout=30_000)
    job = re.match(r"Job (\d+)", launched.inner_text()).group(1)
    _shot(page, "4-job-running")
    page.reload()  # the job lives in its own process and the store, not in this browser session
    page.wait_for_selector(POINT, timeout=90_000)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text(re.compile(rf"^Job {job} done")).wait_for(timeout=180_000)
    _shot(page, "5-job-done")
    page.get_by_role("button", name="Show on the curve").click()
    page.get_by_role("tab", name="Explorer").click()
    page.locator(".js-plotly-plot .legendtext", has_text="before fine-tune").first.wait_for(timeout=120_000)
    _shot(page, "6-after-fine-tune")


def test_two_sessions_keep_their_own_selection_and_uploads_but_share_the_jobs(server, browser):
    from playwright.sync_api import expect

    from snnet.jobs import JobSpec, submit
    from snnet.store import Store

    url, _, home = server
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in range(2)]  # two people, no shared cookies
    try:
        first, second = (_load(context.new_page(), url) for context in contexts)

        before = _selection(second)  # the second moves the budget to its lowest: its callback selects
        second.get_by_role("slider", name="Budget (GMACs)").focus()
        second.keyboard.press("Home")
        expect(second.get_by_role("heading", name=SELECTION).first).not_to_have_text(before, timeout=30_000)
        theirs = _selection(second)

        points = stitch_points(first)  # the first clicks a stitch that neither page shows yet
        ids = points.evaluate_all(STITCH_IDS_JS)
        index = next(i for i, stitch in enumerate(ids)
                     if stitch is not None and f"Stitch {stitch}" not in (theirs, _selection(first)))
        mine = f"Stitch {ids[index]}"
        points.nth(index).click(force=True)
        first.get_by_role("heading", name=mine, exact=True).wait_for(timeout=30_000)

        # a job from outside both sessions, as the CLI or a third page would queue it
        job = submit(JobSpec("mini", stitches=[0], steps=0), Store(home / "store.sqlite"))

        sessions = [(first, "first.png", mine), (second, "second.png", theirs)]
        for seed, (page, image, _) in enumerate(sessions):
            page.locator("input[type=file]").first.set_input_files(
                files=[{"name": image, "mimeType": "image/png", "buffer": noise_png(seed)}])
        for page, image, _ in sessions:
            prediction_row(page, image).locator("[data-testid=stDataFrame]").wait_for(timeout=60_000)
        for (page, image, selection), (_, other, _) in zip(sessions, reversed(sessions)):
            assert _selection(page) == selection
            assert prediction_row(page, other).count() == 0
            titles = {text.split(" · ")[0] for text in page.get_by_text(PREDICTION).all_inner_texts()}
            assert titles == {title_of(selection)}  # samples and upload, all through this session's choice

        for page, _, _ in sessions:
            page.get_by_role("tab", name="Fine-tune").click()
            page.get_by_text(re.compile(rf"^Job {job} · evaluate")).first.wait_for(timeout=30_000)
        for page, _, _ in sessions:  # each page follows the job to its end on its own
            page.get_by_text(re.compile(rf"^Job {job} done")).wait_for(timeout=180_000)
        for page, image, selection in sessions:  # the job's end reran both pages: nothing of theirs was lost
            page.get_by_role("tab", name="Explorer").click()
            assert _selection(page) == selection
            assert prediction_row(page, image).locator("[data-testid=stDataFrame]").count() == 1
        _shot(first, "7-two-sessions-first")
        _shot(second, "7-two-sessions-second")
    finally:
        for context in contexts:
            context.close()


def test_a_slide_link_opens_the_presenters_view_steps_by_keyboard_and_downloads_exports(server, browser, tmp_path):
    import numpy as np
    import onnxruntime
    import torch

    from snnet.api import load_net, results
    from snnet.pareto import pareto_front

    url, _, _ = server
    net = load_net("mini")
    steps = [row["id"] for row in pareto_front([r for r in results(net, compute_missing=False) if r["kind"] != "zoo"])]
    first, following = steps[1], steps[2]
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    try:
        page.goto(f"{url}/?family=mini&stitch={first}&present=1")
        page.get_by_role("heading", name=re.compile(rf"^Stitch {first}: top-1 ")).wait_for(timeout=90_000)
        assert page.get_by_role("tab", name="Explorer").count() == 0  # the presenter's view alone
        _shot(page, "8-presenter")
        page.get_by_role("slider").first.focus()
        page.keyboard.press("ArrowRight")
        page.get_by_role("heading", name=re.compile(rf"^Stitch {following}: top-1 ")).wait_for(timeout=30_000)
        page.wait_for_url(re.compile(rf"stitch={following}&present=1"), timeout=30_000)

        page.get_by_text("Presentation mode").click()
        page.get_by_role("tab", name="Explorer").wait_for(timeout=60_000)
        downloads = {}
        for label in ("Download ONNX", "Download CSV", "Download SVG"):
            with page.expect_download(timeout=120_000) as download:
                page.get_by_role("button", name=label).click()
            downloads[label] = tmp_path / download.value.suggested_filename
            download.value.save_as(downloads[label])
        _shot(page, "9-exports")
    finally:
        page.close()
    x = torch.randn(3, *net.family.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = net(x, stitch=following).numpy()
    session = onnxruntime.InferenceSession(str(downloads["Download ONNX"]), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(theirs - ours).max() < 1e-4
    assert downloads["Download CSV"].read_text().splitlines()[0].startswith("id,kind,front,back")
    assert downloads["Download SVG"].read_text().startswith("<svg")
