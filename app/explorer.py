"""The explorer: the accuracy/cost curve, the selected configuration, a budget, live predictions."""
import hashlib
import io
import os
import shutil
from dataclasses import asdict
from functools import partial

import pandas as pd
import streamlit as st

from app import access
from app.finetune import previews as running_previews
from app.figures import AnchorPicture, blocks_text, layer_text, path_figure, pareto_figure, row_title
from app.state import View, select
from snnet.api import predict
from snnet.data import load_image
from snnet.errors import SnnetError
from snnet.export import INPUT_NAME, OUTPUT_NAME, export_bytes, file_name
from snnet.jobs import JobSpec, submit
from snnet.model import StitchableNet
from snnet.pareto import BUDGET_KEYS, best_under_budget
from snnet.store import Store

CHART_KEY = "pareto"
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"]
MAX_UPLOAD_MB = 20  # per file; .streamlit/config.toml sets the same for the whole server
MAX_IMAGES = 8  # predicted at once: a room of viewers shares one CPU
BUDGET_STEPS = 200
EXPORT_LABELS = {"onnx": "ONNX", "torchscript": "TorchScript", "safetensors": "safetensors"}
TABLE_COLUMNS = ["id", "kind", "front", "back", "front_block", "back_block", "gmacs", "params_m", "top1", "top5",
                 "latency_ms"]


def apply_chart_click() -> None:
    """A click on a point selects its configuration (ids ride in customdata, zoo points carry -1)."""
    event = st.session_state.get(CHART_KEY)
    points = event.selection.points if event is not None else []
    ids = [p["customdata"][0] for p in points if p.get("customdata") and p["customdata"][0] >= 0]
    clicked = ids[0] if ids else None
    if clicked is not None and clicked != st.session_state.get("last_click"):
        select(clicked)
    st.session_state["last_click"] = clicked


def anchor_pictures(net: StitchableNet) -> list[AnchorPicture]:
    """Each anchor's blocks as the path picture draws them: stage and output activation."""
    pictures = []
    for index, name in enumerate(net.family.anchor_names):
        depths = net.adapters[index].stage_depths(net.anchors[index])
        stages = tuple(stage for stage, depth in enumerate(depths) for _ in range(depth))
        pictures.append(AnchorPicture(name, stages, tuple(net.points[index][1:])))
    return pictures


def _budget(configs: list[dict]) -> None:
    unit = st.radio("Budget in", list(BUDGET_KEYS), format_func=BUDGET_KEYS.get, horizontal=True, key="budget_unit")
    costs = sorted(r[unit] for r in configs if r.get(unit) is not None)
    if len(set(costs)) < 2:
        st.caption("Not enough measured configurations for a budget yet.")
        return

    def choose() -> None:
        best = best_under_budget(configs, st.session_state[f"budget_{unit}"], unit)
        if best is not None:
            select(best["id"])

    low, high = float(costs[0]), float(costs[-1])
    # Streamlit's default step (0.01) would leave a handful of positions on a curve of a few MMACs
    st.slider(f"Budget ({BUDGET_KEYS[unit]})", min_value=low, max_value=high, step=(high - low) / BUDGET_STEPS,
              value=max(low, high / 2), key=f"budget_{unit}", on_change=choose, format="%.4f" if unit == "gmacs" else "%.2f",
              help="Moves the selection to the most accurate configuration within the budget: "
                   "SN-Net switches configurations at run time, without retraining or reloading.")
    budget = st.session_state[f"budget_{unit}"]
    best = best_under_budget(configs, budget, unit)
    if all(r.get("top1") is None for r in configs):
        st.caption("No configuration has a measured top-1 yet: the budget picks among measured ones.")
    elif best is None:
        st.warning("Nothing measured fits this budget.")
    else:
        st.caption(f"Best within {budget:.4g} {BUDGET_KEYS[unit]}: **{row_title(best)}** "
                   f"(top-1 {best['top1']:.2f} %, {best[unit]:.4g} {BUDGET_KEYS[unit]})")


def _offer_evaluation(view: View, missing: list[int], total: int, store: Store) -> None:
    st.info(f"{len(missing)} of {total} configurations have no measured accuracy for these weights and settings yet.")
    spec = JobSpec(family=view.family, weights=view.weights, stitches=missing, steps=0, split=view.split,
                   official_compat=view.official_compat, data=view.data)
    pending = [job["id"] for job in store.list_jobs(view.family)
               if job["status"] in ("queued", "running") and job["spec"] == asdict(spec)]
    if pending:
        st.caption(f"Job {pending[0]} is measuring them: follow it in the Fine-tune tab.")
        return
    locked = access.lock()
    clicked = st.button(f"Evaluate {'them' if len(missing) > 1 else 'it'} in the background", key="evaluate_missing",
                        disabled=locked is not None, help=locked)
    if locked:
        st.caption(locked)
    elif clicked:
        try:
            st.toast(f"Job {submit(spec, store)} queued: follow it in the Fine-tune tab")
        except SnnetError as error:
            st.error(str(error))


def details(row: dict, net: StitchableNet) -> None:
    st.subheader(row_title(row) if row["kind"] == "stitch" else f"{row_title(row)} (id {row['id']})")
    pictures = anchor_pictures(net)
    st.caption(blocks_text(row) + layer_text(row, pictures))
    st.plotly_chart(path_figure(row, pictures), config={"displayModeBar": False}, key="path")
    first, second = st.columns(2)
    first.metric("GMACs", f"{row['gmacs']:.4f}")
    second.metric("Parameters", f"{row['params_m']:.2f} M")
    first.metric("Top-1", "—" if row.get("top1") is None else f"{row['top1']:.2f} %")
    second.metric("Latency (batch 1)", "—" if row.get("latency_ms") is None else f"{row['latency_ms']:.2f} ms")
    if row.get("top1") is None:
        st.caption("Not measured for these weights yet.")
    export_buttons(net, row["id"])


def export_buttons(net: StitchableNet, stitch_id: int) -> None:
    """The selected configuration as a network of its own, one button per format. Each file is made
    only when its button is clicked (Streamlit runs the callable then, off the page script; a failure
    shows as one line under the button)."""
    family = net.family
    st.caption(f"Export it alone, without the parts of the anchors it does not run: input `{INPUT_NAME}` "
               f"(N x {' x '.join(map(str, family.input_size))}, preprocessed as for predictions), output "
               f"`{OUTPUT_NAME}` (N x {family.num_classes}).")
    for column, (fmt, label) in zip(st.columns(len(EXPORT_LABELS)), EXPORT_LABELS.items()):
        column.download_button(f"Download {label}", partial(export_bytes, net, stitch_id, fmt),
                               file_name=file_name(family.name, stitch_id, fmt), mime="application/octet-stream",
                               on_click="ignore", key=f"export_{fmt}", width="stretch")


def render(view: View, net: StitchableNet, rows: list[dict], before: list[dict], selected: int, store: Store) -> None:
    configs = [r for r in rows if r["kind"] != "zoo"]
    row = configs[selected]
    chart, panel = st.columns([3, 2], gap="large")
    with panel:
        _budget(configs)
        budget = st.session_state.get("budget_gmacs") if st.session_state.get("budget_unit") == "gmacs" else None
    with chart:
        missing = [r["id"] for r in configs if r.get("top1") is None]
        if missing:
            _offer_evaluation(view, missing, len(configs), store)
        previews = running_previews(view, rows, store)
        if previews:
            st.caption("Open circles: a running fine-tune's configurations, measured on a fixed part of the "
                       "evaluation set (a preview); the exact figures replace them when its evaluation ends.")
        zoo_name = net.family.task.zoo_name
        figure = pareto_figure(rows, row["id"], before, view.log_x, budget, zoo_name, previews)
        st.plotly_chart(figure, key=CHART_KEY, on_select="rerun", selection_mode="points",
                        config={"displaylogo": False})
        curve_downloads(figure, rows, f"{view.family}-curve")
    with panel:
        details(row, net)
    predictions(net, row, (view.family, view.weights, view.official_compat))


def image_browser() -> str | None:
    """The browser kaleido renders plotly figures with, if this machine has one (kaleido's own
    BROWSER_PATH first): it drives a headless Chromium and cannot download one offline."""
    candidates = [os.environ.get("BROWSER_PATH")] + ["chromium", "chromium-browser", "google-chrome", "chrome"]
    return next((found for name in candidates if name and (found := shutil.which(name))), None)


def figure_bytes(figure, fmt: str) -> bytes:
    return figure.to_image(format=fmt, width=1200, height=720, scale=2 if fmt == "png" else 1)


def table_csv(rows: list[dict]) -> bytes:
    """Every configuration and zoo network, one row each, in the units the page shows."""
    table = pd.DataFrame(rows)
    columns = [c for c in TABLE_COLUMNS if c in table] + [c for c in ("name", "source") if c in table]
    return table[columns].to_csv(index=False).encode()


def curve_downloads(figure, rows: list[dict], stem: str) -> None:
    """The curve as PNG and SVG, drawn on the server the way the page draws it, and its table as CSV."""
    browser = image_browser()
    missing = None if browser else "Drawing images needs Chromium on the server (apt-get install chromium); the chart's camera button saves a PNG meanwhile."
    png, svg, csv = st.columns(3)
    for column, fmt in ((png, "png"), (svg, "svg")):
        column.download_button(f"Download {fmt.upper()}", partial(figure_bytes, figure, fmt), file_name=f"{stem}.{fmt}",
                               mime="image/png" if fmt == "png" else "image/svg+xml", on_click="ignore",
                               key=f"curve_{fmt}", disabled=missing is not None, help=missing, width="stretch")
    csv.download_button("Download CSV", table_csv(rows), file_name=f"{stem}.csv", mime="text/csv", on_click="ignore",
                        key="curve_csv", width="stretch", help="Every configuration and zoo network with its cost and accuracy.")


def _images(family: str) -> list[tuple[str, object]]:
    uploads = st.file_uploader("Upload images", type=IMAGE_TYPES, accept_multiple_files=True,
                               max_upload_size=MAX_UPLOAD_MB,
                               help=f"Any size or mode, up to {MAX_UPLOAD_MB} MB each; they are resized and "
                                    f"normalised like the training data. At most {MAX_IMAGES} images are predicted at once.")
    samples = dict(_samples(family))
    chosen = st.multiselect("Built-in samples", list(samples), default=list(samples)[:2])
    images = [(name, samples[name]) for name in chosen]
    uploads = uploads or []
    if len(images) + len(uploads) > MAX_IMAGES:
        st.warning(f"Predicting {MAX_IMAGES} of {len(images) + len(uploads)} images (samples first): at most "
                   f"{MAX_IMAGES} at once; the rest are skipped.")
    images = images[:MAX_IMAGES]
    for upload in uploads[:MAX_IMAGES - len(images)]:
        if upload.size > MAX_UPLOAD_MB * 2**20:
            st.error(f"{upload.name}: larger than {MAX_UPLOAD_MB} MB, skipped")
            continue
        try:
            images.append((upload.name, load_image(io.BytesIO(upload.getvalue()))))
        except SnnetError:
            st.error(f"{upload.name}: not a readable image, skipped")
    return images


@st.cache_resource
def _samples(family: str) -> list:
    from snnet.families import get_family

    family = get_family(family)
    return family.task.sample_images(family)


def _digest(image) -> str:
    return hashlib.sha256(image.mode.encode() + str(image.size).encode() + image.tobytes()).hexdigest()


@st.cache_data(max_entries=512, show_spinner=False)
def _predict(_net: StitchableNet, net_key: tuple, stitch_id: int, image_digest: str, _image) -> dict:
    """One image through one configuration, kept so that unrelated reruns do not predict again."""
    return predict(_net, stitch_id, [_image])[0]


def predictions(net: StitchableNet, row: dict, view_key: tuple) -> None:
    st.subheader("Live predictions")
    options, compare = st.columns([3, 2])
    with options:
        images = _images(net.family.name)
    with compare:
        mode = st.radio("Compare with", ["nothing", "its anchors", "another configuration"], key="compare")
        ids = [row["id"]]
        if mode == "its anchors":
            anchors = net.family.anchor_names
            ids += [anchors.index(name) for name in dict.fromkeys([row["front"], row["back"]]) if anchors.index(name) != row["id"]]
        elif mode == "another configuration":
            ids.append(int(st.number_input("Configuration id", 0, len(net.space) - 1, 0, key="compare_id")))
    if not images:
        st.caption("Pick a sample or upload an image to see the selected configuration's top-5.")
        return
    outputs = {stitch_id: [_predict(net, view_key, stitch_id, _digest(image), image) for _, image in images]
               for stitch_id in ids}
    for index, (name, image) in enumerate(images):
        columns = st.columns([1] + [2] * len(ids))
        shown = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")  # e.g. CMYK, P
        columns[0].image(shown, caption=name, width=96)
        for column, stitch_id in zip(columns[1:], ids):
            result = outputs[stitch_id][index]
            config = net.space[stitch_id]
            title = f"Anchor {net.family.anchor_names[config.front]}" if config.kind == "anchor" else f"Stitch {stitch_id}"
            column.markdown(f"**{title}** · {result['latency_ms']:.1f} ms")
            column.dataframe(
                pd.DataFrame([{"class": p["label"], "probability": p["prob"]} for p in result["top5"]]),
                hide_index=True, width="stretch",
                column_config={"probability": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0)})
