"""The curve while a fresh server warms up.

A server's first run imports torch and timm and loads the network: seconds before the Explorer can
draw. That first run draws the family's shipped curve from its metrics file first, with plotly
alone, where the Explorer's chart will stand; the page replaces it once it is ready. Later runs
find torch imported and skip this. Nothing here may import torch, timm or the backend's models.

Several people may open a cold server at once, each page a run in its own thread. Imports by
`import` wait for a module another thread is still importing, but plotly looks up numpy, pandas and
PIL.Image in `sys.modules` without importing them, and would find a half-initialised module while
another thread imports torch (which imports numpy) or the page (pandas, pillow). So they are
imported whole here, before any figure is built: a run reaches the curve only once this module is.
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import numpy  # noqa: F401  (see above: imported whole before plotly looks for them)
import pandas  # noqa: F401
import PIL.Image  # noqa: F401
import streamlit as st

from app.figures import pareto_figure
from snnet.pareto import best_under_budget

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def launch_options() -> argparse.Namespace:
    """`streamlit run streamlit_app.py -- --family deit --weights X.safetensors --official-compat`."""
    parser = argparse.ArgumentParser(prog="streamlit run streamlit_app.py --")
    parser.add_argument("--family", default="mini")
    parser.add_argument("--weights")
    parser.add_argument("--official-compat", action="store_true")
    return parser.parse_known_args(sys.argv[1:])[0]


def shipped_rows(family_name: str) -> Optional[tuple[list[dict], str]]:
    """The shipped weights' rows as `snnet.api.results` gives them (configurations, then the zoo),
    and the zoo's name, read from checkpoints/<family>/metrics.json; None without that file."""
    path = CHECKPOINTS / family_name / "metrics.json"
    if not path.is_file():
        return None
    shipped = json.loads(path.read_text())
    zoo = sorted(shipped.get("zoo", []), key=lambda row: row["gmacs"])
    return shipped["configurations"] + [{"kind": "zoo", **row} for row in zoo], shipped.get("zoo_name", "zoo")


def curve_while_loading(options: argparse.Namespace):
    """On a cold server, the shipped curve of the family the page opens on, with the selection a
    deep link names (or the default one). Returns the slot to clear once the page draws. Every run
    makes the slot, drawn into or not: Streamlit matches unkeyed elements such as the tabs by
    position, and a page that lost its first element would reset them (the selected tab with them)."""
    slot = st.empty()
    if "torch" in sys.modules or (options.weights or options.official_compat):
        return slot  # warm already, or not the shipped figures the page will show
    family = st.query_params.get("family", options.family)
    try:
        found = shipped_rows(family) if family.replace("-", "").isalnum() else None
        if found is not None:
            _draw(slot, family, *found)
    except Exception:  # an early picture only: the page proper still draws, and says what fails
        logging.getLogger(__name__).exception("the warm-up curve of %s failed", family)
        slot.empty()
    return slot


def _draw(slot, family: str, rows: list[dict], zoo_name: str) -> None:
    configs = [row for row in rows if row["kind"] != "zoo"]
    linked = st.query_params.get("stitch", "")
    if linked.isdigit() and int(linked) < len(configs):
        selected = int(linked)
    else:
        middle = best_under_budget(configs, max(row["gmacs"] for row in configs) / 2)
        selected = 0 if middle is None else middle["id"]
    with slot.container():
        chart, panel = st.columns([3, 2], gap="large")
        chart.plotly_chart(pareto_figure(rows, selected, zoo_name=zoo_name), config={"displaylogo": False})
        panel.info(f"Loading the {family} network: the curve is its shipped figures; selecting, predicting "
                   "and fine-tuning start in a few seconds.")
