"""What the browser tests and the load test share: a real `streamlit run` on 127.0.0.1, the
Chromium that drives it, and the landmarks they look for on the page.

Plain Python, no pytest: tests/test_load.py also runs as a script. Locators are built alike in
playwright's sync API (test_browser.py) and async API (test_load.py), so the helpers serve both.
"""
import io
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
CHROMIUM = os.environ.get("SNNET_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
POINT = ".js-plotly-plot .scatterlayer .point"
SELECTION = re.compile(r"^(Stitch \d+|Anchor \w+ \(id \d+\))$")  # the details heading
PREDICTION = re.compile(r"^(Stitch \d+|Anchor \w+) · [\d.]+ ms$")  # the title over one image's top-5
ERRORS = "[data-testid=stException], [data-testid=stAlertContentError]"
# The configuration id of each stitch point on the curve, read from plotly's own data (ids ride in
# customdata, app/figures.py; stitch traces are named "front → back"), or null for any other point
# and for a stitch with another point within 10 px: plotly gives a click to the nearest point, so
# clicking a crowded one may select its neighbour.
STITCH_IDS_JS = """points => {
    const centres = points.map(point => {
        const box = point.getBoundingClientRect();
        return [box.x + box.width / 2, box.y + box.height / 2];
    });
    return points.map((point, i) => {
        const trace = point.closest('.trace').__data__[0].trace;
        const crowded = centres.some(([x, y], j) => j !== i && Math.hypot(x - centres[i][0], y - centres[i][1]) < 10);
        return trace.name.includes('→') && !crowded ? trace.customdata[point.__data__.i][0] : null;
    });
}"""


def stitch_points(page):
    """Every point of the curve (stitches, anchors, zoo, the selection ring), in drawing order."""
    return page.locator(".js-plotly-plot").first.locator(".scatterlayer .point")


def prediction_row(page, image_name: str):
    """One image's row of predictions: the image captioned with its name, then a top-5 per configuration."""
    caption = page.locator("[data-testid=stImageCaption]", has_text=re.compile(f"^{re.escape(image_name)}$"))
    return page.locator("[data-testid=stHorizontalBlock]", has=caption).last  # the innermost: the page's columns hold it too


def title_of(selection: str) -> str:
    """The predictions' title for a details heading: "Anchor x (id 1)" -> "Anchor x"."""
    return selection.split(" (id ")[0]


def noise_png(seed: int, size: int = 24) -> bytes:
    """A small PNG no other upload shares, so the app's prediction cache cannot answer for it."""
    from PIL import Image

    pixels = random.Random(seed).randbytes(size * size * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def streamlit_server(home: Path, start_timeout_s: float = 60) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on loopback with its own $SNNET_HOME; yields its URL.

    The server log goes to home/server.log: a file, not a pipe nobody reads, which could fill up."""
    port = free_port()
    environment = {**os.environ, "SNNET_HOME": str(home)}
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_healthy(url, process, start_timeout_s, home / "server.log")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return
        except OSError:
            time.sleep(0.2)  # nothing to wait on but the port itself
    raise RuntimeError(f"streamlit did not start: {log.read_text()[-2000:]}")


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver (bash .ci/run does)")
