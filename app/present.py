"""The presenter's view: the curve, the path picture and the predictions only, in large type.

It steps along the Pareto frontier, cheapest first, with a wide slider (focus it and use the arrow
keys; a presentation clicker that sends arrow keys works the same) or the two buttons beside it.
The address carries `present=1`, so a slide can open the room straight on a stitch in this view.
"""
import streamlit as st

from app.explorer import anchor_pictures, predictions
from app.figures import blocks_text, layer_text, path_figure, pareto_figure, row_title
from app.state import View, select
from snnet.model import StitchableNet
from snnet.pareto import pareto_front

FONT_PX = 22
LARGE_TYPE = f"""<style>
section.main p, section.main li, section.main label, [data-testid="stMarkdownContainer"] p {{ font-size: {FONT_PX}px; }}
[data-testid="stMetricValue"] {{ font-size: {2 * FONT_PX}px; }}
h1 {{ font-size: {2.4 * FONT_PX}px !important; }}
</style>"""
STEP_KEY = "present_step"


def frontier(configs: list[dict]) -> list[dict]:
    """The measured configurations no other beats on both top-1 and cost, cheapest first."""
    return pareto_front([r for r in configs if r.get("top1") is not None])


def nearest(steps: list[dict], row: dict) -> dict:
    """The frontier step for a selection off the frontier: the closest in cost."""
    return min(steps, key=lambda step: abs(step["gmacs"] - row["gmacs"]))


def _step_to(stitch_id: int) -> None:
    select(stitch_id)
    st.session_state[STEP_KEY] = stitch_id


def _move(steps: list[dict], current: int, by: int) -> None:
    ids = [step["id"] for step in steps]
    _step_to(ids[max(0, min(len(ids) - 1, ids.index(current) + by))])


def render(view: View, net: StitchableNet, rows: list[dict], selected: int) -> None:
    st.markdown(LARGE_TYPE, unsafe_allow_html=True)
    configs = [r for r in rows if r["kind"] != "zoo"]
    steps = frontier(configs)
    row = configs[selected]
    if not steps:
        st.info("No configuration is measured yet: evaluate them from the Explorer first.")
        return
    on_frontier = row["id"] in [step["id"] for step in steps]
    current = row if on_frontier else nearest(steps, row)
    if st.session_state.get(STEP_KEY) != current["id"]:
        st.session_state[STEP_KEY] = current["id"]
    titles = {step["id"]: f"{row_title(step)} · {step['gmacs']:.4g} GMACs" for step in steps}
    st.title(f"{row_title(row)}: top-1 {row['top1']:.1f} % at {row['gmacs']:.4g} GMACs"
             if row.get("top1") is not None else row_title(row))
    back, slider, forward = st.columns([1, 10, 1], vertical_alignment="bottom")
    back.button("◀", key="present_back", on_click=_move, args=(steps, current["id"], -1),
                disabled=current["id"] == steps[0]["id"], help="A cheaper step of the frontier", width="stretch")
    forward.button("▶", key="present_forward", on_click=_move, args=(steps, current["id"], 1),
                   disabled=current["id"] == steps[-1]["id"], help="A more accurate step of the frontier", width="stretch")
    slider.select_slider(f"Along the frontier ({len(steps)} steps, cheapest first; arrow keys move it)",
                         options=list(titles), format_func=titles.get, key=STEP_KEY,
                         on_change=lambda: select(st.session_state[STEP_KEY]))
    if not on_frontier:
        st.caption("The selection is not on the frontier; the slider stands at the nearest step in cost.")
    chart, path = st.columns([3, 2], gap="large")
    with chart:
        figure = pareto_figure(rows, row["id"], None, view.log_x, None, net.family.task.zoo_name)
        large = dict(size=FONT_PX - 4)
        figure.update_layout(font=large, legend=dict(font=large, y=-0.25), height=640, margin=dict(l=10, r=10, t=30, b=10))
        figure.update_xaxes(tickfont=large, title_font=large, automargin=True)
        figure.update_yaxes(tickfont=large, title_font=large, automargin=True)
        st.plotly_chart(figure, key="present_chart", config={"displayModeBar": False}, theme=None)
    with path:
        pictures = anchor_pictures(net)
        st.markdown(blocks_text(row) + layer_text(row, pictures))
        st.plotly_chart(path_figure(row, pictures), config={"displayModeBar": False}, key="present_path")
        first, second = st.columns(2)
        first.metric("GMACs", f"{row['gmacs']:.4f}")
        second.metric("Top-1", "—" if row.get("top1") is None else f"{row['top1']:.1f} %")
    predictions(net, row, (view.family, view.weights, view.official_compat))
