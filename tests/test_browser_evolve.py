"""The Evolve tab end to end in headless Chromium: start a small search from the form, watch its
front appear, click an offspring and see its path and cost, and find the search again after a refresh.

The search trains its stitching layers briefly (a setting of the form), so the test checks the page,
not the offspring; screenshots of each step go to screenshots/.
"""
import re
import time

import pytest
from browser_support import CHROMIUM, ERRORS, FLAGS, POINT, SHOTS, require_chromium, streamlit_server

VIEWPORT = {"width": 1500, "height": 1100}
TRAIN_STEPS, EVALUATIONS = 3, 6
# Each point of the search chart: its trace's name, its genotype (customdata[0], null where the
# trace carries none), its GMACs, and whether another point lies within 10 px (a click goes to the
# nearest point, so a crowded one may select its neighbour).
POINTS_JS = """points => {
    const centres = points.map(point => {
        const box = point.getBoundingClientRect();
        return [box.x + box.width / 2, box.y + box.height / 2];
    });
    return points.map((point, i) => {
        const trace = point.closest('.trace').__data__[0].trace;
        const crowded = centres.some(([x, y], j) => j !== i && Math.hypot(x - centres[i][0], y - centres[i][1]) < 10);
        return {name: trace.name, genotype: trace.customdata ? trace.customdata[point.__data__.i][0] : null,
                gmacs: trace.x[point.__data__.i], crowded: crowded};
    });
}"""

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("snnet-home-evolve")
    with streamlit_server(home) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _evolve_tab(page, url: str):
    page.goto(url)
    page.wait_for_selector(POINT, timeout=90_000)  # the explorer's curve: the page is up
    page.get_by_role("tab", name="Evolve").click()
    return page.get_by_role("tabpanel", name="Evolve")


def test_a_search_started_from_the_page_grows_a_front_and_a_clicked_offspring_shows_its_path_and_cost(server, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport=VIEWPORT)
    try:
        started = time.monotonic()
        tab = _evolve_tab(page, server)
        tab.get_by_text("No searches yet: start one above.").wait_for(timeout=90_000)  # the tab's run has ended
        tab.get_by_role("spinbutton", name="Evaluations (genotypes asked for)").fill(str(EVALUATIONS))
        tab.get_by_text("Stitch training").click()
        tab.get_by_role("spinbutton", name="Feature-matching steps").fill(str(TRAIN_STEPS))
        tab.get_by_role("spinbutton", name="Steps on the task's labels").fill(str(TRAIN_STEPS))
        tab.get_by_role("button", name="Start search").click()
        tab.get_by_text(re.compile(r"networks measured of a budget|preparing the supernetwork|starting|loading")).first.wait_for(
            timeout=60_000)
        front = tab.locator(".js-plotly-plot").first.locator(".legendtext", has_text="Pareto front")
        front.wait_for(timeout=240_000)  # the parents are measured: the chart and its front are drawn
        _shot(page, "evolve-1-running")
        # .first: while the page reruns, Streamlit may show an element twice for a moment (the stale copy fading)
        tab.get_by_text(re.compile(r"^Search \d+ done in")).first.wait_for(timeout=240_000)
        tab.get_by_text(re.compile(r"^Of \d+ offspring measured, ")).first.wait_for(timeout=30_000)
        _shot(page, "evolve-2-done")

        chart = tab.locator(".js-plotly-plot").first
        points = chart.locator(".scatterlayer .point")
        found = points.evaluate_all(POINTS_JS)
        index = next(i for i, point in enumerate(found) if point["genotype"] and not point["crowded"]
                     and not point["name"].startswith(("parent", "ensemble")))
        genotype = found[index]["genotype"]
        points.nth(index).click(force=True)
        tab.get_by_role("heading", name=re.compile(rf"· genotype {re.escape(genotype)}$")).first.wait_for(timeout=120_000)
        assert tab.get_by_text(re.compile(r"blocks \d+-\d+ .*→ .*head")).count() >= 1  # the path, in words
        path = tab.locator(".js-plotly-plot").nth(1)  # its picture: both parents' rows, the heads
        path.locator(".annotation-text", has_text="head").first.wait_for(timeout=30_000)
        labels = path.locator(".annotation-text").evaluate_all("texts => texts.map(t => t.textContent)")
        assert labels.count("head") == 2 and any(label.startswith("A ") for label in labels)
        metrics = dict(zip(tab.locator("[data-testid=stMetricLabel]").all_inner_texts(),
                           tab.locator("[data-testid=stMetricValue]").all_inner_texts()))
        assert metrics["GMACs"] == f"{found[index]['gmacs']:.4f}"  # the cost of the very point clicked
        assert re.fullmatch(r"[\d.]+ M", metrics["Parameters"]) and re.fullmatch(r"[\d.]+ %", metrics["Val error"])
        tab.get_by_text("Test error", exact=True).first.wait_for(timeout=60_000)
        tab.locator("input[type=file]").set_input_files(
            files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"not an image"}])
        tab.get_by_text("broken.png: not a readable image, skipped").first.wait_for(timeout=60_000)
        assert page.locator("[data-testid=stException]").count() == 0
        _shot(page, "evolve-3-offspring")

        tab = _evolve_tab(page, server)  # a refresh: the search lives in the store, not in this session
        tab.locator(".js-plotly-plot").first.locator(".legendtext", has_text="Pareto front").wait_for(timeout=90_000)
        expect(tab.get_by_role("combobox", name="Search")).to_have_value(
            re.compile(rf"^Search \d+ · NSGA-II · {EVALUATIONS} evaluations · seed 0 · done$"))
        assert page.locator(ERRORS).count() == 0
        print(f"evolve browser test: {time.monotonic() - started:.0f} s")
    except Exception:
        _shot(page, "failed-evolve")
        raise
    finally:
        page.close()
