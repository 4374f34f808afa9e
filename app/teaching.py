"""The teaching view: walk through the stitches of one anchor pair and watch the point move."""
import time

import plotly.graph_objects as go
import streamlit as st

from app.explorer import anchor_pictures
from app.figures import LAYER_COLOUR, blocks_text, layer_text, path_figure, row_title
from snnet.model import StitchableNet

LAYER_WORDS = {
    ("tokens", "tokens"): "a linear map applied to every token, from one anchor's width to the other's",
    ("map", "map"): "a 1×1 convolution: the same linear map at every pixel of the feature map, from one "
                    "anchor's channels to the other's",
    ("map", "tokens"): "a 1×1 convolution whose output pixels become the other anchor's tokens (a CNN into a ViT)",
    ("tokens", "map"): "a linear map whose output tokens become the other anchor's feature map",
}


def explanation(net: StitchableNet) -> str:
    """What SN-Net does, told for this family: its anchors, its kinds of stitching layer, its windows."""
    space = net.space
    kinds = []
    for front, back in (net.layer_shapes(layer) for layer in range(space.num_layers)):
        if LAYER_WORDS[(front.layout, back.layout)] not in kinds:
            kinds.append(LAYER_WORDS[(front.layout, back.layout)])
    stitches = len(space) - len(space.anchors)
    text = [
        f"**Anchors** are pretrained networks of one family, smallest first: here {', '.join(space.anchors)}.",
        "A **stitch** runs the first blocks of a smaller anchor, then a **stitching layer**, then the remaining "
        "blocks and the head of the bigger anchor. Leaving the small anchor later makes the stitch cheaper and, "
        "usually, less accurate: the stitches fill the gap between two anchors on the accuracy/cost curve.",
        f"Here a stitching layer is {' or '.join(kinds) or 'not needed (one anchor)'}.",
        "The stitching layers start from **least squares**: on a few hundred images, the layer M that best maps "
        "the small anchor's activations A (one row per token or pixel) onto the big one's B is M = A⁺B. Training "
        "then samples one stitch per iteration, so one network learns all of them at once.",
    ]
    if space.stage_depths:
        stages = sorted({config.stage for config in space if config.stage is not None})
        unequal = any(depths[stage] != space.stage_depths[0][stage] for depths in space.stage_depths for stage in stages)
        rule = ("where the bigger anchor is deeper, each of its blocks is matched to the nearest block of the "
                "smaller one, and one layer per front block serves all its stitches" if unequal else
                "the anchors have as many blocks in each stage, so a stitch leaves block j for the next block")
        text.append(
            "**Stages**: these anchors are hierarchical, and each stage works at its own resolution, so a stitch "
            f"stays inside one stage ({', '.join(map(str, stages))}), never the last, where the heads differ; "
            f"{rule}: {space.num_layers} layers serve {stitches} stitches.")
    else:
        text.append(
            f"**Sliding windows**: with kernel {space.kernel} and stride {space.stride}, neighbouring stitches "
            f"share one stitching layer, so {space.num_layers} layers serve {stitches} stitches.")
    return "\n\n".join(text)


def _pair_figure(rows: list[dict], pair_rows: list[dict], current: dict) -> go.Figure:
    figure = go.Figure()
    others = [r for r in rows if r["kind"] != "zoo" and r.get("top1") is not None]
    figure.add_trace(go.Scatter(x=[r["gmacs"] for r in others], y=[r["top1"] for r in others], mode="markers",
                                marker=dict(color="#cccccc", size=6), name="all configurations", hoverinfo="skip"))
    path = [r for r in pair_rows if r.get("top1") is not None]
    figure.add_trace(go.Scatter(x=[r["gmacs"] for r in path], y=[r["top1"] for r in path], mode="markers",
                                name="this pair's stitches", marker=dict(size=8)))
    if current.get("top1") is not None:
        figure.add_trace(go.Scatter(x=[current["gmacs"]], y=[current["top1"]], mode="markers+text",
                                    text=[row_title(current)], textposition="top center", name="current",
                                    marker=dict(size=18, color=LAYER_COLOUR)))
    figure.update_layout(xaxis_title="GMACs", yaxis_title="top-1 (%)", height=380,
                         margin=dict(l=10, r=10, t=10, b=10), showlegend=False)
    return figure


def render(net: StitchableNet, rows: list[dict]) -> None:
    configs = [r for r in rows if r["kind"] != "zoo"]
    pairs = list(dict.fromkeys((r["front"], r["back"]) for r in configs if r["kind"] == "stitch"))
    if not pairs:
        st.info("This family has a single anchor: there is nothing to stitch.")
        return
    pair = st.selectbox("Anchor pair", pairs, format_func=lambda p: f"{p[0]} → {p[1]}", key="teach_pair")
    anchor_ids = {name: i for i, name in enumerate(net.family.anchor_names)}
    stitches = sorted((r for r in configs if (r["front"], r["back"]) == pair and r["kind"] == "stitch"),
                      key=lambda r: r["gmacs"])
    walk = [configs[anchor_ids[pair[0]]]] + stitches + [configs[anchor_ids[pair[1]]]]
    by_id = {r["id"]: r for r in walk}
    step_id = st.select_slider("Step along the pair (cheapest first)", [r["id"] for r in walk], key="teach_step",
                               format_func=lambda i: row_title(by_id[i]))
    play = st.button("▶ Play through the pair", key="teach_play")
    view, text = st.columns([3, 2], gap="large")
    with text:
        st.markdown(explanation(net))
    with view:
        caption, curve, path = st.empty(), st.empty(), st.empty()
    pictures = anchor_pictures(net)

    def draw(row: dict, frame: int) -> None:
        accuracy = "" if row.get("top1") is None else f", top-1 {row['top1']:.2f} %"
        caption.markdown(f"**{row_title(row)}**: {blocks_text(row)}{layer_text(row, pictures)} · "
                         f"{row['gmacs']:.4f} GMACs{accuracy}")
        curve.plotly_chart(_pair_figure(rows, stitches, row), key=f"teach-curve-{frame}")
        path.plotly_chart(path_figure(row, pictures), config={"displayModeBar": False}, key=f"teach-path-{frame}")

    if play:
        for frame, row in enumerate(walk):
            draw(row, frame)
            time.sleep(0.6)
    else:
        draw(by_id[step_id], -1)
