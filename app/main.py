"""The page, top to bottom: sidebar choices, then the Explorer, Fine-tune, Teaching and Evolve tabs,
or the presenter's view alone.

Every backend failure the user can cause (missing weights, a bad file, a failing job) arrives as
an SnnetError and is shown as one line; anything else is shown as one line too, never a traceback.
"""
import traceback

import streamlit as st

from app import evolve, explorer, finetune, present, teaching
from app.state import (follow_in_address, get_net, get_store, launch_options, load_rows, presenting, selected_id,
                       sidebar)
from snnet.errors import SnnetError, out_of_memory


def page(loading=None) -> None:
    store = get_store()
    with st.sidebar:
        st.title("snnet")
        st.caption("Stitchable Neural Networks: one network, many accuracy/cost trade-offs.")
        view = sidebar(store, launch_options())
        presenter = presenting()
    net = get_net(view.family, view.weights, view.official_compat)
    if loading is not None:
        loading.empty()  # the warm-up curve: the page draws its own from here
    explorer.apply_chart_click()
    rows = load_rows(view, view.weights, store)
    before = load_rows(view, view.before_weights, store) if view.fine_tuned else None
    selected = selected_id(rows)
    follow_in_address(view, selected, presenter)
    if presenter:
        guarded(present.render, view, net, rows, selected)
        return
    explore, tune, teach, recombine = st.tabs(["Explorer", "Fine-tune", "Teaching", "Evolve"])
    with explore:
        guarded(explorer.render, view, net, rows, before, selected, store)
    with tune:
        guarded(finetune.form, view, net, store, selected, rows)
        guarded(finetune.panel, view, store)
    with teach:
        guarded(teaching.render, net, rows)
    with recombine:  # its own networks: the sidebar's family and weights do not apply
        guarded(evolve.render, store)
        guarded(evolve.details, store)


def guarded(section, *args) -> None:
    """Run one part of the page; if it fails, it shows one line and the other parts still work."""
    try:
        section(*args)
    except SnnetError as error:
        st.error(str(error))
    except Exception as error:  # the terminal keeps the traceback; the page gets one line
        traceback.print_exc()
        if out_of_memory(error):
            st.error("Out of memory: choose smaller weights, fewer images or fewer configurations to compare.")
        else:
            st.error(f"Unexpected error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")


def render(loading=None) -> None:
    """The page; `loading` is the warm-up curve's slot (app/warmup.py), cleared once the page can draw."""
    st.set_page_config(page_title="snnet: stitchable networks", layout="wide")
    guarded(page, loading)
    if loading is not None:
        loading.empty()  # also when the page failed before it could draw
