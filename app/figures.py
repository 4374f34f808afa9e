"""Plotly figures of the explorer: the accuracy/cost curve and the picture of one stitched path.

Every point carries its configuration id as customdata[0] (-1 for zoo models), so a click maps
to a configuration whatever order the traces are drawn in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

from snnet.pareto import pareto_front

if TYPE_CHECKING:  # the warm-up curve (app/warmup.py) draws with this module before torch is imported
    from snnet.families import Activation

PALETTE = qualitative.Plotly
ANCHOR_COLOUR = "#222222"
LAYER_COLOUR = "#d62728"
HOVER = ("<b>%{customdata[1]}</b><br>id %{customdata[0]} · %{customdata[2]}<br>%{x:.4f} GMACs · "
         "%{customdata[3]:.2f} M params<br>top-1 %{customdata[5]} · %{customdata[4]:.2f} ms<extra></extra>")
ZOO_HOVER = ("<b>%{customdata[1]}</b><br>%{customdata[2]}<br>%{x:.4f} GMACs · %{customdata[3]:.2f} M params"
             "<br>top-1 %{y:.2f} %<extra></extra>")


def _number(value) -> float:
    return math.nan if value is None else float(value)


def row_title(row: dict) -> str:
    return f"Anchor {row['front']}" if row["kind"] == "anchor" else f"Stitch {row['id']}"


def blocks_text(row: dict) -> str:
    if row["kind"] == "anchor":
        return "all blocks"
    return f"{row['front']} blocks 0-{row['front_block']} → {row['back']} blocks {row['back_block']}-end"


def _points(rows: list[dict], **trace) -> go.Scatter:
    return go.Scatter(
        x=[r["gmacs"] for r in rows], y=[_number(r.get("top1")) for r in rows],
        customdata=[[r["id"], row_title(r), blocks_text(r), r["params_m"], _number(r.get("latency_ms")),
                     _accuracy_text(r)] for r in rows],
        hovertemplate=HOVER, **trace)


def _accuracy_text(row: dict) -> str:
    if row.get("measured") is False:
        return "not measured"
    if row.get("preview_images"):
        return f"{row['top1']:.2f} % (preview on {row['preview_images']} images)"
    return f"{row['top1']:.2f} %"


def pair_colours(rows: list[dict]) -> dict[tuple[str, str], str]:
    pairs = sorted({(r["front"], r["back"]) for r in rows if r["kind"] == "stitch"}, key=lambda p: min(
        r["gmacs"] for r in rows if (r["front"], r["back"]) == p))
    return {pair: PALETTE[i % len(PALETTE)] for i, pair in enumerate(pairs)}


def pareto_figure(rows: list[dict], selected: Optional[int] = None, before: Optional[list[dict]] = None,
                  log_x: bool = False, budget_gmacs: Optional[float] = None, zoo_name: str = "zoo",
                  previews: Sequence[tuple[str, list[dict]]] = ()) -> go.Figure:
    """top-1 against GMACs: stitches by anchor pair, anchors labelled, the frontier, the zoo, a
    faded 'before' curve when these are fine-tuned weights, and (name, rows) previews of a running
    fine-tune's figures as open circles."""
    configs = [r for r in rows if r["kind"] != "zoo" and r.get("top1") is not None]
    zoo = [r for r in rows if r["kind"] == "zoo" and r.get("top1") is not None and r.get("gmacs") is not None]
    figure = go.Figure()
    if before:
        figure.add_trace(_points([r for r in before if r["kind"] != "zoo" and r.get("top1") is not None], name="before fine-tune",
                                 mode="markers", marker=dict(color="#bbbbbb", size=7), legendgroup="before"))
    for (front, back), colour in pair_colours(configs).items():
        figure.add_trace(_points([r for r in configs if r["kind"] == "stitch" and (r["front"], r["back"]) == (front, back)],
                                 name=f"{front} → {back}", mode="markers", legendgroup="stitches",
                                 marker=dict(color=colour, size=8, line=dict(width=0.5, color="white"))))
    floor = min([r["top1"] for r in configs + zoo] or [0.0]) - 2.0
    unmeasured = [{**r, "top1": floor, "measured": False} for r in rows if r["kind"] != "zoo" and r.get("top1") is None]
    if unmeasured:  # still visible and clickable: a row of marks under everything measured
        figure.add_trace(_points(unmeasured, name="not measured yet", mode="markers", legendgroup="unmeasured",
                                 marker=dict(symbol="triangle-up-open", size=7, color="#999999")))
    for name, preview in previews:
        figure.add_trace(_points(preview, name=name, mode="markers", legendgroup="preview",
                                 marker=dict(symbol="circle-open", size=11, color=LAYER_COLOUR, line=dict(width=2))))
    anchors = [r for r in configs if r["kind"] == "anchor"]
    figure.add_trace(_points(anchors, name="anchors", mode="markers+text", text=[r["front"] for r in anchors],
                             textposition="top center", marker=dict(color=ANCHOR_COLOUR, size=16, symbol="star")))
    front = pareto_front(configs)
    figure.add_trace(go.Scatter(x=[r["gmacs"] for r in front], y=[r["top1"] for r in front], mode="lines",
                                name="Pareto frontier", line=dict(color="#444444", dash="dot"), hoverinfo="skip"))
    if zoo:
        figure.add_trace(go.Scatter(
            x=[r["gmacs"] for r in zoo], y=[r["top1"] for r in zoo], mode="markers", name=zoo_name,
            legendgroup="zoo", marker=dict(symbol="diamond", size=10, color="#8c564b"),
            customdata=[[-1, r["name"], r.get("source") or "trained alone", _number(r.get("params_m"))] for r in zoo],
            hovertemplate=ZOO_HOVER))
    chosen = [r for r in configs + unmeasured if r["id"] == selected]
    if chosen:
        figure.add_trace(go.Scatter(x=[chosen[0]["gmacs"]], y=[chosen[0]["top1"]], mode="markers", name="selected",
                                    showlegend=False, hoverinfo="skip",
                                    marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(width=3, color=LAYER_COLOUR))))
    if budget_gmacs is not None:
        figure.add_vline(x=budget_gmacs, line=dict(color=LAYER_COLOUR, dash="dash", width=1),
                         annotation_text="budget", annotation_position="bottom right")
    figure.update_layout(
        xaxis=dict(title="GMACs", type="log" if log_x else "linear"), yaxis=dict(title="top-1 (%)"),
        height=520, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.15),
        clickmode="event+select", dragmode="zoom")
    return figure


def _blocks(count: int) -> str:
    return f"{count} block{'s' * (count != 1)}"


@dataclass(frozen=True)
class AnchorPicture:
    """What the path picture needs of one anchor: per block, its stage and its output activation."""

    name: str
    stages: tuple[int, ...]
    outputs: tuple[Activation, ...]

    @property
    def staged(self) -> bool:
        return len(set(self.stages)) > 1


def grid(spatial: tuple[int, ...]) -> str:
    return "×".join(str(size) for size in spatial)


def activation_text(activation: Activation) -> str:
    """"1 + 64 tokens × 32" (a class token, then patches), "7×7 tokens × 768", "64 ch, 8×8" """
    if activation.layout == "tokens":
        prefix = f"{activation.prefix_tokens} + " if activation.prefix_tokens else ""
        return f"{prefix}{grid(activation.spatial)} tokens × {activation.channels}"
    return f"{activation.channels} ch, {grid(activation.spatial)}"


LAYER_KINDS = {("tokens", "tokens"): "linear on tokens", ("map", "map"): "1×1 convolution",
               ("map", "tokens"): "1×1 convolution, map into tokens", ("tokens", "map"): "linear, tokens into a map"}


def stitch_point(row: dict, pictures: list[AnchorPicture]) -> tuple[Activation, Activation]:
    """The activation a stitch leaves its front anchor with, and the one it enters its back anchor with."""
    names = [picture.name for picture in pictures]
    front, back = pictures[names.index(row["front"])], pictures[names.index(row["back"])]
    entered = back.outputs[row["back_block"] - 1]  # what enters block k is block k-1's output
    return front.outputs[row["front_block"]], entered


def layer_text(row: dict, pictures: list[AnchorPicture]) -> str:
    """" · stitching layer 11: 32→64 channels, linear on tokens" for a stitch; nothing for an anchor."""
    if row["kind"] == "anchor":
        return ""
    left, right = stitch_point(row, pictures)
    return (f" · stitching layer {row['layer']}: {left.channels}→{right.channels} channels, "
            f"{LAYER_KINDS[(left.layout, right.layout)]} ({activation_text(left)} → {activation_text(right)})")


def path_figure(row: dict, pictures: list[AnchorPicture]) -> go.Figure:
    """Blocks as boxes, their heights to scale with their channels: front blocks 0..j, the
    stitching layer, then the back anchor's blocks k..L-1 and its head. Stages of hierarchical
    anchors are set apart, each labelled with its resolution and channels."""
    index = {picture.name: i for i, picture in enumerate(pictures)}
    tallest = max(out.channels for picture in pictures for out in picture.outputs)
    colours = {picture.name: PALETTE[i % len(PALETTE)] for i, picture in enumerate(pictures)}
    figure = go.Figure()
    x = 0.0

    def height(channels: int) -> float:
        return max(0.04, channels / tallest)

    def box(anchor: str, label: str, channels: int, span: float = 1.0) -> None:
        nonlocal x
        half = height(channels) / 2
        figure.add_shape(type="rect", x0=x, x1=x + span * 0.85, y0=-half, y1=half,
                         fillcolor=colours[anchor], line=dict(width=0), opacity=0.85)
        if label and half > 0.06:
            figure.add_annotation(x=x + span * 0.425, y=0, text=label, showarrow=False, font=dict(size=9, color="white"))
        x += span

    def blocks(picture: AnchorPicture, first: int, last: int, side: float) -> None:
        """Blocks first..last; a stage's label above (side 1) or below (side -1), on two rows that
        alternate, so the labels of neighbouring short stages never meet."""
        nonlocal x
        for block in range(first, last + 1):
            stage = picture.stages[block]
            if picture.staged and (block == first or stage != picture.stages[block - 1]):
                if block != first:
                    x += 0.3
                row_y = 0.58 if stage % 2 == 0 else 0.70
                figure.add_annotation(x=x, xanchor="left", y=side * row_y, showarrow=False, font=dict(size=9),
                                      text=f"stage {stage} · {activation_text(picture.outputs[block])}")
            box(picture.name, str(block), picture.outputs[block].channels)

    front, back = pictures[index[row["front"]]], pictures[index[row["back"]]]
    last_front = len(front.outputs) - 1 if row["kind"] == "anchor" else row["front_block"]
    box(front.name, "emb", front.outputs[0].channels)
    blocks(front, 0, last_front, 1)
    # The front's label hangs from the left edge above the boxes and the back's from the right edge
    # below them: on two rows, they never run into each other, however early or late the stitch.
    single = "" if front.staged else f" · {activation_text(front.outputs[last_front])}"
    figure.add_annotation(x=0, xanchor="left", y=0.86, showarrow=False,
                          text=f"{front.name} · {_blocks(last_front + 1)}{single}")
    if row["kind"] == "stitch":
        left, right = stitch_point(row, pictures)
        low, high = height(left.channels) / 2, height(right.channels) / 2
        figure.add_shape(type="path", path=f"M {x},{-low} L {x + 0.85},{-high} L {x + 0.85},{high} L {x},{low} Z",
                         fillcolor=LAYER_COLOUR, line=dict(width=0))
        x += 1.0
        blocks(back, row["back_block"], len(back.outputs) - 1, -1)
    box(back.name, "head", back.outputs[-1].channels, span=1.2)
    if row["kind"] == "stitch":
        single = "" if back.staged else f" · {activation_text(back.outputs[-1])}"
        figure.add_annotation(x=x - 0.2, xanchor="right", y=-0.86, showarrow=False,
                              text=f"{back.name} · {_blocks(len(back.outputs) - row['back_block'])}{single}")
    figure.update_layout(
        xaxis=dict(visible=False, range=[-0.2, x + 0.2]), yaxis=dict(visible=False, range=[-0.98, 0.98]),
        height=220, margin=dict(l=0, r=0, t=0, b=0), showlegend=False)
    return figure
