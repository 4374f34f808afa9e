"""Plotly figures of the Evolve page: a search's measured networks, and one offspring's path.

Every point of the search chart carries its genotype (an active key, genes joined by spaces) as
customdata[0], so a click names a network whatever traces are drawn; anything not clickable has no
customdata.
"""
from typing import Optional, Sequence

import plotly.graph_objects as go

from app.figures import LAYER_COLOUR, PALETTE, AnchorPicture, activation_text

HOVER = ("<b>%{customdata[1]}</b><br>genotype %{customdata[0]}<br>%{x:.4f} GMACs · val error %{y:.2f} %"
         "<extra></extra>")
BEATS_COLOUR, NEW_COLOUR, PLAIN_COLOUR = "#2ca02c", "#ff7f0e", "#9a9a9a"
ROW_Y = (1.0, 0.0)  # parent A's blocks above parent B's
BOX_HALF = 0.17


def genotype_text(genotype: Sequence[int]) -> str:
    return " ".join(map(str, genotype))


def parse_genotype(text: str) -> tuple[int, ...]:
    return tuple(int(gene) for gene in text.split())


def role_title(row: dict, parent_names: Sequence[str]) -> str:
    if row["role"] == "parent A":
        return f"parent A · {parent_names[0]}" if parent_names else "parent A"
    if row["role"] == "parent B":
        return f"parent B · {parent_names[1]}" if parent_names else "parent B"
    if row["role"] == "ensemble":
        return "ensemble of the parents"
    if row["dominates_parent"]:
        return "offspring that dominates a parent"
    return "offspring with a new trade-off" if row["new_tradeoff"] else "offspring"


def _points(rows: list[dict], parent_names: Sequence[str], **trace) -> go.Scatter:
    return go.Scatter(x=[r["gmacs"] for r in rows], y=[r["error"] for r in rows], hovertemplate=HOVER,
                      customdata=[[genotype_text(r["genotype"]), role_title(r, parent_names)] for r in rows], **trace)


def search_figure(rows: list[dict], parent_names: Sequence[str], selected: Optional[tuple[int, ...]] = None) -> go.Figure:
    """Validation error against GMACs of every network measured: plain offspring, the ones that
    dominate a parent or reach a trade-off neither parent has, the parents, their ensemble, the front."""
    figure = go.Figure()
    offspring = [r for r in rows if r["role"] == "offspring"]
    groups = [("offspring", [r for r in offspring if not (r["dominates_parent"] or r["new_tradeoff"])],
               dict(color=PLAIN_COLOUR, size=7)),
              ("new trade-off (no parent dominates it)", [r for r in offspring if r["new_tradeoff"] and not r["dominates_parent"]],
               dict(color=NEW_COLOUR, size=10, line=dict(width=1, color="white"))),
              ("dominates a parent", [r for r in offspring if r["dominates_parent"]],
               dict(color=BEATS_COLOUR, size=11, symbol="diamond", line=dict(width=1, color="white")))]
    for name, group, marker in groups:
        if group:
            figure.add_trace(_points(group, parent_names, name=name, mode="markers", marker=marker))
    for index, role in enumerate(("parent A", "parent B")):
        parent = [r for r in rows if r["role"] == role]
        if parent:
            label = parent_names[index] if parent_names else role
            figure.add_trace(_points(parent, parent_names, name=f"{role} · {label}", mode="markers+text", text=[label],
                                     textposition="top center",
                                     marker=dict(color=PALETTE[index], size=18, symbol="star", line=dict(width=1, color="#222"))))
    ensemble = [r for r in rows if r["role"] == "ensemble"]
    if ensemble:
        figure.add_trace(_points(ensemble, parent_names, name="ensemble of the parents", mode="markers+text",
                                 text=["ensemble"], textposition="top center",
                                 marker=dict(color="#444444", size=14, symbol="square", line=dict(width=1, color="white"))))
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["gmacs"])
    figure.add_trace(go.Scatter(x=[r["gmacs"] for r in front], y=[r["error"] for r in front], mode="lines",
                                line=dict(color="#444444", dash="dot", shape="hv"), name="Pareto front", hoverinfo="skip"))
    chosen = [r for r in rows if tuple(r["genotype"]) == selected]
    if chosen:
        figure.add_trace(go.Scatter(x=[chosen[0]["gmacs"]], y=[chosen[0]["error"]], mode="markers", showlegend=False,
                                    hoverinfo="skip", marker=dict(size=24, color="rgba(0,0,0,0)",
                                                                  line=dict(width=3, color=LAYER_COLOUR))))
    figure.update_layout(xaxis=dict(title="GMACs"), yaxis=dict(title="validation error (%)"), height=500,
                         margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.15),
                         clickmode="event+select", dragmode="zoom")
    return figure


def _columns(pairs: Sequence[tuple[int, int]], depths: tuple[int, int]) -> list[list[tuple[float, float]]]:
    """Per parent, each block's (left, width) on a shared axis where matched points line up: between
    two matched points each parent's blocks share the same span, so a switch is a vertical step."""
    knots = [(0, 0), *pairs, depths]
    placed, x = [[], []], 0.0
    for (start_a, start_b), (end_a, end_b) in zip(knots, knots[1:]):
        span = max(end_a - start_a, end_b - start_b, 1)
        for parent, (start, end) in enumerate(((start_a, end_a), (start_b, end_b))):
            width = span / max(end - start, 1)
            placed[parent] += [(x + (block - start) * width, width) for block in range(start, end)]
        x += span
    return placed


def offspring_path_figure(paths, pairs: Sequence[tuple[int, int]], pictures: Sequence[AnchorPicture]) -> go.Figure:
    """The two parents' blocks as two rows (A above B), the offspring's path drawn across them:
    blocks it runs in full colour, the rest faded, a red step at each switch it takes, grey marks at
    the switches it does not. An ensemble draws both paths and joins them at the averaged logits."""
    depths = (len(pictures[0].outputs), len(pictures[1].outputs))
    columns = _columns(pairs, depths)
    end = max(left + width for parent in columns for left, width in parent[-1:])
    used = {(segment.anchor, block) for segments, _ in paths for segment in segments
            for block in range(segment.first_block, segment.last_block + 1)}
    heads = {segments[-1].anchor for segments, _ in paths}
    starts = {segments[0].anchor for segments, _ in paths}
    figure = go.Figure()
    hover_x, hover_y, hover_text = [], [], []
    for parent, picture in enumerate(pictures):
        y, colour = ROW_Y[parent], PALETTE[parent]

        def box(x0: float, x1: float, active: bool, label: str = "") -> None:
            figure.add_shape(type="rect", x0=x0, x1=x1, y0=y - BOX_HALF, y1=y + BOX_HALF, fillcolor=colour,
                             opacity=0.9 if active else 0.18, line=dict(width=0))
            if label:
                figure.add_annotation(x=(x0 + x1) / 2, y=y, text=label, showarrow=False,
                                      font=dict(size=9, color="white" if active else "#555"))

        box(-1.1, -0.2, parent in starts, "emb")
        for block, (left, width) in enumerate(columns[parent]):
            box(left + 0.06 * width, left + 0.94 * width, (parent, block) in used, str(block) if width >= 0.9 else "")
            hover_x.append(left + width / 2)
            hover_y.append(y)
            output = picture.outputs[block]
            hover_text.append(f"{picture.name} block {block}" + (f" · {activation_text(output)}" if output else ""))
        box(end + 0.2, end + 1.3, parent in heads, "head")
        figure.add_annotation(x=-1.3, xanchor="right", y=y, showarrow=False, text=f"<b>{'AB'[parent]}</b> {picture.name}")
    for pair in pairs:  # every switch the supernetwork has, faint
        x = columns[0][pair[0]][0]
        figure.add_shape(type="line", x0=x, x1=x, y0=ROW_Y[1] + BOX_HALF, y1=ROW_Y[0] - BOX_HALF,
                         line=dict(color="#cccccc", width=1, dash="dot"))
    for segments, layers in paths:
        for segment, layer, after in zip(segments, layers, segments[1:]):
            x = columns[after.anchor][after.first_block][0]
            figure.add_annotation(x=x + 0.25, y=ROW_Y[after.anchor] + (BOX_HALF if after.anchor == 1 else -BOX_HALF),
                                  ax=x - 0.25, ay=ROW_Y[segment.anchor] + (-BOX_HALF if segment.anchor == 0 else BOX_HALF),
                                  xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2,
                                  arrowwidth=3, arrowcolor=LAYER_COLOUR, text="")
            figure.add_annotation(x=x + 0.3, y=0.5, xanchor="left", showarrow=False, font=dict(size=9, color=LAYER_COLOUR),
                                  text=f"layer {layer}")
    if len(paths) == 2:
        figure.add_annotation(x=end + 1.45, y=0.5, xanchor="left", showarrow=False, text="logits<br>averaged")
    figure.add_trace(go.Scatter(x=hover_x, y=hover_y, mode="markers", marker=dict(size=14, opacity=0),
                                hovertemplate="%{text}<extra></extra>", text=hover_text))
    figure.update_layout(xaxis=dict(visible=False, range=[-4.2, end + 2.6]), yaxis=dict(visible=False, range=[-0.45, 1.45]),
                         height=230, margin=dict(l=0, r=0, t=0, b=0), showlegend=False)
    return figure


def path_text(paths, names: Sequence[str]) -> str:
    """"mini_small blocks 0-0 → layer 0 → resnet_c16 blocks 1-15 → head", one line per path."""
    lines = []
    for segments, layers in paths:
        parts = [f"{names[segments[0].anchor]} blocks {segments[0].first_block}-{segments[0].last_block}"]
        for layer, segment in zip(layers, segments[1:]):
            parts += [f"layer {layer}", f"{names[segment.anchor]} blocks {segment.first_block}-{segment.last_block}"]
        lines.append(" → ".join(parts) + f" → {names[segments[-1].anchor]}'s head")
    return lines[0] if len(lines) == 1 else "  \n".join(f"path {i + 1}: {line}" for i, line in enumerate(lines)) + \
        "  \nlogits of the two paths averaged"
