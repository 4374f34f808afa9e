"""The warm-up curve a cold server draws before torch is imported (app/warmup.py)."""
import asyncio
import re
import subprocess
import sys
from pathlib import Path

import plotly
import pytest
from browser_support import CHROMIUM, ERRORS, FLAGS, POINT, SELECTION, require_chromium, streamlit_server

from app.warmup import shipped_rows
from snnet.api import has_weights, load_net, results
from snnet.families import get_family
from snnet.store import Store

ROOT = Path(__file__).resolve().parents[1]
CHART_KEYS = ("id", "kind", "front", "back", "front_block", "back_block", "gmacs", "params_m", "top1", "latency_ms",
              "name")


def test_the_warm_up_module_imports_neither_torch_nor_timm():
    code = "import sys, app.warmup; print(sorted({'torch', 'timm', 'snnet.model'} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_every_module_plotly_looks_up_without_importing_is_whole_once_the_warm_up_is_imported():
    """plotly reads some modules from `sys.modules` without importing them; in a run beside another
    thread that is importing one, it would get the module half-initialised (a cold server, several
    pages opened at once, failed so)."""
    sources = "\n".join(path.read_text() for path in Path(plotly.__file__).parents[1].glob("*plotly*/**/*.py"))
    looked_up = sorted(set(re.findall(r"get_module\(\s*[\"']([\w.]+)[\"']\s*,\s*should_load=False", sources)))
    assert {"numpy", "pandas"} <= set(looked_up)
    code = ("import importlib.util, sys, app.warmup; names = sys.argv[1:]; "
            "print([n for n in names if importlib.util.find_spec(n.split('.')[0]) and n not in sys.modules])")
    missing = subprocess.run([sys.executable, "-c", code, *looked_up], cwd=ROOT, capture_output=True, text=True,
                             check=True)
    assert missing.stdout.strip() == "[]", looked_up


@pytest.mark.browser
def test_pages_opened_at_once_on_a_cold_server_all_draw_without_an_error(tmp_path):
    """The room opens the link together: every page draws the curve, then the Explorer's details,
    and none shows an exception."""
    from playwright.async_api import async_playwright

    require_chromium()

    async def open_one(browser, url):
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(url)
        await page.wait_for_selector(POINT, timeout=180_000)
        await page.get_by_role("heading", name=SELECTION).first.wait_for(timeout=180_000)
        await page.wait_for_load_state("networkidle")
        return await page.locator(ERRORS).all_inner_texts()

    async def open_all(url, count):
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                return await asyncio.gather(*(open_one(browser, url) for _ in range(count)))
            finally:
                await browser.close()

    with streamlit_server(tmp_path) as url:
        shown = asyncio.run(open_all(url, 6))
    assert shown == [[]] * 6, (tmp_path / "server.log").read_text()[-3000:]


@pytest.mark.parametrize("family_name", ["mini", "mini-resnet"])
def test_the_warm_up_rows_are_the_rows_the_page_then_shows(family_name, tmp_path):
    assert has_weights(family_name)
    quick, zoo_name = shipped_rows(family_name)
    page = results(load_net(family_name), store=Store(tmp_path / "store.sqlite"), compute_missing=False)
    assert [{k: r.get(k) for k in CHART_KEYS} for r in quick] == [{k: r.get(k) for k in CHART_KEYS} for r in page]
    assert zoo_name == get_family(family_name).task.zoo_name


def test_a_family_without_a_metrics_file_draws_nothing_early():
    assert shipped_rows("deit") is None
