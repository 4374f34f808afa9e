"""What the page works on: the chosen family and weights, the loaded network, its rows, the selection.

Heavy objects live in `st.cache_resource` (one network per family, weights and path, kept
across reruns and sessions, so a new selection never reloads the model); metrics are read from
the store on every run and never computed here. The selection lives in `st.session_state`.
"""
import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import streamlit as st

from app import access
from app.warmup import launch_options
from snnet import jobs
from snnet.api import has_weights, load_net, results, weights_routes
from snnet.errors import SnnetError
from snnet.families import family_names, get_family
from snnet.model import StitchableNet
from snnet.pareto import best_under_budget
from snnet.store import Store, default_path

SHIPPED = "shipped weights"
SELECTED = "stitch_id"
SWITCH_TO = "switch_to_job"  # a finished fine-tune the weights box shows next (set where that box is already drawn)


@dataclass(frozen=True)
class View:
    family: str
    weights: Optional[str]  # None: the family's shipped weights
    fine_tuned: bool  # weights written by a fine-tune launched from the page
    before_weights: Optional[str]  # what a fine-tune started from (None: the shipped weights)
    official_compat: bool
    split: str
    log_x: bool
    data: Optional[str]  # ImageNet families: the folder with train/ and val/


@st.cache_resource
def _store(path: str) -> Store:
    return Store(Path(path))


def get_store() -> Store:
    return _store(str(default_path()))  # $SNNET_HOME may differ between runs of one server


@st.cache_resource(show_spinner="Loading the network...", max_entries=4)
def get_net(family: str, weights: Optional[str], official_compat: bool) -> StitchableNet:
    return load_net(family, weights, "cpu", official_compat=official_compat)


def load_rows(view: View, weights: Optional[str], store: Store) -> list[dict]:
    """Cost and cached metrics of every configuration, then the zoo; nothing is evaluated here."""
    net = get_net(view.family, weights, view.official_compat)
    try:
        return results(net, view.split, store, compute_missing=False, data=view.data)
    except SnnetError as error:  # a mistyped folder must not hide the page
        st.warning(f"{error}: showing the figures cached without a folder")
        return results(net, view.split, store, compute_missing=False)


def sidebar(store: Store, options: argparse.Namespace) -> View:
    names = family_names()
    first = options.family
    linked = st.query_params.get("family")  # a deep link, ?family=mini&stitch=24, beats the launch option
    if linked in names:
        first = linked
    elif linked is not None:
        st.warning(f"The link names an unknown family {linked!r}: showing {first}.")
    present = {name: has_weights(name) for name in names}
    family = st.selectbox("Family", names, index=names.index(first) if first in names else 0,
                          format_func=lambda name: name if present[name] else f"{name} (no weights here)",
                          help="A family is a list of anchors of one domain, smallest first.")
    st.caption(get_family(family).description)
    if not present[family] and not (options.weights and family == options.family):
        st.info(f"No weights for {family} here: {weights_routes(family)}.")
    # label -> (weights, whether a fine-tune wrote them, the weights it started from)
    if options.weights and family == options.family:
        runs = {f"file {Path(options.weights).name}": (options.weights, False, None)}
    else:
        runs = {SHIPPED: (None, False, None)}
    for job in jobs.runs(store, family):
        runs[run_label(job)] = (job["result"]["weights"], True, job["spec"]["weights"])
    locked = access.lock()
    switch = st.session_state.pop(SWITCH_TO, None)
    if switch is not None and run_label(switch) in runs and not locked:
        st.session_state["run"] = run_label(switch)
    label = st.selectbox("Weights", list(runs), key="run", disabled=locked is not None,
                         help="The shipped network, or the result of a fine-tune launched from this page.")
    if locked:
        st.caption(locked)
        label = next(iter(runs))  # a disabled widget binds only an honest browser
    access.passphrase_box()
    weights, fine_tuned, before = runs[label]
    official_compat = st.toggle(
        "Official-compat path", value=options.official_compat,
        help="Run stitched paths without the back anchor's final LayerNorm, as the reference SN-Net code "
             "does and its released weights expect. Off: the correct path through the final norm.")
    log_x = st.toggle("Log-scale GMACs")
    data = None
    if not get_family(family).task.offline:
        data = st.text_input("ImageNet folder", os.environ.get("SNNET_IMAGENET", ""),
                             help="A folder with train/<wnid>/ and val/<wnid>/ images: the curve shows the "
                                  "figures measured on it, and fine-tunes and evaluations from this page use it.").strip() or None
    return View(family, weights, fine_tuned, before, official_compat, get_family(family).task.default_split, log_x, data)


def selected_id(rows: list[dict]) -> int:
    """The selected configuration, kept valid when the family changes. At first it is the one a
    deep link names (?stitch=24), else the best configuration within half the largest cost: a
    stitch, on most curves."""
    configs = [r for r in rows if r["kind"] != "zoo"]
    if st.session_state.get(SELECTED) is None:
        st.session_state[SELECTED] = _linked_stitch(len(configs))
    if st.session_state.get(SELECTED) is None or not 0 <= st.session_state[SELECTED] < len(configs):
        middle = best_under_budget(configs, max(r["gmacs"] for r in configs) / 2)
        st.session_state[SELECTED] = 0 if middle is None else middle["id"]
    return st.session_state[SELECTED]


def _linked_stitch(count: int) -> Optional[int]:
    linked = st.query_params.get("stitch")
    if linked is None:
        return None
    if linked.isdigit() and int(linked) < count:
        return int(linked)
    st.warning(f"The link names configuration {linked!r}, which is not one of this family's ids 0-{count - 1}: "
               "showing the default selection.")
    return None


def follow_in_address(view: View, stitch_id: int, present: bool = False) -> None:
    """The address names the selection (and the presenter's view), so a slide can link straight to a stitch."""
    wanted = {"family": view.family, "stitch": str(stitch_id), **({"present": "1"} if present else {})}
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


def presenting() -> bool:
    """The sidebar's switch to the presenter's view; a link with present=1 opens in it."""
    return st.toggle("Presentation mode", value=st.query_params.get("present") == "1", key="present",
                     help="The curve, the path picture and the predictions only, in large type, stepping "
                          "along the frontier. The address keeps it, for links from slides.")


def select(stitch_id: int) -> None:
    st.session_state[SELECTED] = int(stitch_id)


def run_label(job: dict) -> str:
    return f"job {job['id']}: fine-tuned {job['steps']} steps"


def show_run(job: dict) -> None:
    """Switch the page to a finished fine-tune's weights (a callback: it runs before the widgets)."""
    st.session_state["run"] = run_label(job)


def show_run_next(job: dict) -> None:
    """The same from inside the page's script, where the weights box is already drawn: the sidebar
    applies it on the next run, before it draws the box."""
    st.session_state[SWITCH_TO] = job
