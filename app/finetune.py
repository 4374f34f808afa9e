"""Fine-tunes from the page: a form that queues a background job, and a panel that follows jobs.

The job runs in its own process (snnet.jobs) and writes to the store; this panel only reads the
store, polling once a second while a job is queued or running, so it survives a refresh.
"""
from typing import Optional

import pandas as pd
import streamlit as st
import torch

from app import access
from app.state import View, show_run, show_run_next
from snnet import jobs
from snnet.errors import SnnetError
from snnet.model import StitchableNet
from snnet.pareto import pareto_front
from snnet.store import Store

ACTIVE = ("queued", "running")
WATCH_EVERY_S = 3.0
WATCHED = "watched_jobs"  # jobs this session has seen queued or running
# The one-click fine-tune of the configurations below the frontier: their stitching layers only, the
# anchors frozen, so the anchors cannot lose what they know. On the shipped mini default (4500 SN-Net
# steps) it moved the 49 configurations' mean test top-1 from 74.39 to 74.41 % (25 rose, worst -0.69,
# best +0.67); half distillation gave 74.41 too, and 400 steps at 3e-3 with it 74.42.
BELOW_FRONTIER = dict(steps=200, batch_size=64, lr=1e-3, anchor_lr=0.0)


def devices() -> list[str]:
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def below_frontier(rows: list[dict]) -> list[int]:
    """Measured configurations that another beats on both top-1 and cost."""
    measured = [r for r in rows if r["kind"] != "zoo" and r.get("top1") is not None]
    front = {r["id"] for r in pareto_front(measured)}
    return [r["id"] for r in measured if r["id"] not in front]


def _submit(spec: jobs.JobSpec, store: Store) -> None:
    try:
        st.toast(f"Job {jobs.submit(spec, store)} queued")
    except SnnetError as error:
        st.error(str(error))


def one_click(view: View, rows: list[dict], store: Store) -> None:
    below = below_frontier(rows)
    if not below:
        return
    locked = access.lock()
    recipe = BELOW_FRONTIER
    if st.button(f"Fine-tune the {len(below)} configurations below the frontier", type="primary",
                 key="ft_below", disabled=locked is not None,
                 help=locked or f"{recipe['steps']} iterations on their stitching layers alone (anchors frozen, "
                                f"learning rate {recipe['lr']:g}), then their top-1 before and after.") and not locked:
        _submit(jobs.JobSpec(family=view.family, weights=view.weights, stitches=below, split=view.split,
                             official_compat=view.official_compat, data=view.data, **recipe), store)


def form(view: View, net: StitchableNet, store: Store, selected: int, rows: list[dict]) -> None:
    one_click(view, rows, store)
    locked = access.lock()
    with st.form("finetune"):
        st.markdown("**Launch a stitching fine-tune** of the weights shown on the curve")
        if locked:
            st.caption(locked)
        scope = st.radio("Configurations", ["all", "chosen"], horizontal=True, key="ft_scope",
                         help="Each iteration samples one of these configurations, as SN-Net training does.")
        chosen = st.multiselect("Chosen configurations", list(range(len(net.space))), default=[selected],
                                key="ft_chosen", format_func=lambda i: configuration_name(net, i))
        left, right = st.columns(2)
        steps = left.number_input("Iterations (0: evaluate only)", min_value=0, value=200, step=50, key="ft_steps")
        epochs = right.number_input("Or epochs (0: use iterations)", min_value=0.0, value=0.0, step=0.5, key="ft_epochs",
                                    help="Passes over the training data; the job turns them into iterations.")
        batch_size = left.number_input("Batch size", min_value=1, value=64, key="ft_batch")
        device = right.selectbox("Device", devices(), key="ft_device")
        lr = left.number_input("Stitching-layer learning rate", min_value=1e-7, value=1e-3, format="%.1e", key="ft_lr")
        anchor_lr = right.number_input("Anchor learning rate", min_value=0.0, value=1e-4, format="%.1e", key="ft_anchor_lr")
        distill = left.number_input("Distillation from the largest anchor", min_value=0.0, max_value=1.0, value=0.5,
                                    step=0.1, key="ft_distill",
                                    help="The loss is this share KL to the largest anchor as the job begins, "
                                         "the rest cross-entropy on the labels; 0: labels alone.")
        anchor_share = right.number_input("Share of steps for the anchors alone", min_value=0.0, max_value=1.0,
                                          value=None, step=0.05, placeholder="sampled like any configuration",
                                          key="ft_anchor_share",
                                          help="Steps that train an anchor on its own, which holds the anchors' "
                                               "accuracy while the stitches pull on their blocks.")
        launched = st.form_submit_button("Launch fine-tune", type="primary", disabled=locked is not None)
    if launched and not locked:
        spec = jobs.JobSpec(family=view.family, weights=view.weights, stitches=None if scope == "all" else chosen,
                            steps=int(steps), epochs=float(epochs) or None, batch_size=int(batch_size), lr=float(lr),
                            anchor_lr=float(anchor_lr), distill=float(distill), anchor_share=anchor_share,
                            device=device, split=view.split, official_compat=view.official_compat, data=view.data)
        _submit(spec, store)


def configuration_name(net: StitchableNet, stitch_id: int) -> str:
    config, names = net.space[stitch_id], net.family.anchor_names
    if config.kind == "anchor":
        return f"{stitch_id}: anchor {names[config.front]}"
    return f"{stitch_id}: stitch {names[config.front]} → {names[config.back]}, blocks {config.front_block}→{config.back_block}"


def mean_change(result: dict) -> Optional[tuple[float, float]]:
    """Mean top-1 of a job's configurations before and after it, over those measured both times."""
    both = [str(i) for i in result["stitches"] if result["before"].get(str(i)) is not None]
    if not both:
        return None
    return (sum(result["before"][i] for i in both) / len(both), sum(result["after"][i] for i in both) / len(both))


def improved(job: dict) -> bool:
    change = mean_change(job["result"]) if job["status"] == "done" and job["kind"] == "finetune" else None
    return change is not None and change[1] > change[0]


def _eta(seconds) -> str:
    if seconds is None:
        return ""
    minutes, seconds = divmod(int(seconds), 60)
    return f" · ETA {minutes} min {seconds:02d} s" if minutes else f" · ETA {seconds} s"


def _job(job: dict, store: Store, locked: Optional[str]) -> None:
    spec = job["spec"]
    configurations = "all configurations" if spec["stitches"] is None else f"configurations {', '.join(map(str, spec['stitches']))}"
    length = f"{spec['epochs']:g} epochs ({job['steps']} steps)" if spec.get("epochs") else f"{job['steps']} steps"
    title = f"Job {job['id']} · {job['kind']} · {configurations} · {length} on {job['device']} · {job['status']}"
    with st.container(border=True):
        st.markdown(f"**{title}**")
        if job["status"] in ACTIVE:
            fraction = job["step"] / job["steps"] if job["steps"] else 0.0
            loss = "" if job["loss"] is None else f" · loss {job['loss']:.3f}"
            st.progress(min(1.0, fraction), text=f"{job['stage']} · step {job['step']}/{job['steps']}{loss}{_eta(job['eta_s'])}")
            if st.button("Cancel", key=f"cancel-{job['id']}", disabled=locked is not None, help=locked) and not locked:
                jobs.cancel(store, job["id"])
        points = store.get_progress(job["id"])
        if points:
            st.line_chart(pd.DataFrame(points).set_index("step")["loss"], height=160)
        if job["status"] in ("failed", "cancelled"):
            if job["status"] == "failed":
                st.error(f"Job {job['id']} failed: {job['message']}")
            else:
                st.info(f"Job {job['id']} was cancelled at step {job['step']}/{job['steps']}.")
            if st.button("Resume", key=f"resume-{job['id']}", disabled=locked is not None,
                         help=locked or "Continue from the job's last checkpoint.") and not locked:
                jobs.resume(store, job["id"])
                st.rerun()
        elif job["status"] == "done":
            result = job["result"]
            table = pd.DataFrame({"id": result["stitches"],
                                  "top-1 before": [result["before"].get(str(i)) for i in result["stitches"]],
                                  "top-1 after": [result["after"].get(str(i)) for i in result["stitches"]]})
            st.success(f"Job {job['id']} done: {len(table)} configuration{'s' * (len(table) != 1)} evaluated.")
            change = mean_change(result) if job["kind"] == "finetune" else None
            if change is not None:
                before, after = change
                line = f"Mean top-1 of these configurations: {before:.2f} % before, {after:.2f} % after ({after - before:+.2f})."
                if after > before:
                    st.markdown(line)
                else:
                    st.warning(f"{line} The page keeps the weights this job started from; "
                               "'Show on the curve' switches to the fine-tuned ones anyway.")
            st.dataframe(table, hide_index=True, height=min(300, 38 + 35 * len(table)))
            if job["kind"] == "finetune" and st.button("Show on the curve", key=f"show-{job['id']}",
                                                       disabled=locked is not None, help=locked,
                                                       on_click=None if locked else show_run, args=(job,)):
                st.rerun()


PREVIEWS_DRAWN = "previews_drawn"  # running fine-tunes whose preview this session's curve shows


def previews(view: View, rows: list[dict], store: Store) -> list[tuple[str, list[dict]]]:
    """The previews of running fine-tunes of the weights shown, as (legend name, rows) for the
    curve: their configurations at the top-1 the job measured on the task's preview set, before
    its exact evaluation ends (then the job is done and the page shows the exact figures)."""
    drawn, found = set(), []
    by_id = {r["id"]: r for r in rows if r["kind"] != "zoo"}
    for job in store.list_jobs(view.family):
        result = job["result"] or {}
        if job["status"] not in ACTIVE or "preview" not in result or job["spec"]["weights"] != view.weights:
            continue
        drawn.add(job["id"])
        points = [{**by_id[int(i)], "top1": top1, "preview_images": result["preview_images"]}
                  for i, top1 in result["preview"].items() if int(i) in by_id]
        found.append((f"job {job['id']}: preview on {result['preview_images']} of {result['eval_images']} images", points))
    st.session_state[PREVIEWS_DRAWN] = drawn
    return found


def _switch_to_improved(view: View, listed: list[dict]) -> bool:
    """Whether a fine-tune this session watched has ended having raised the mean top-1 of the
    weights shown; if so, its weights are shown next."""
    watched = st.session_state.setdefault(WATCHED, set())
    ended = [job for job in listed if job["id"] in watched and job["status"] not in ACTIVE]
    watched.difference_update(job["id"] for job in ended)
    watched.update(job["id"] for job in listed if job["status"] in ACTIVE)
    better = [job for job in ended if improved(job) and job["spec"]["weights"] == view.weights]
    if better and not access.lock():
        show_run_next(better[0])
    return bool(better) and not access.lock()


def panel(view: View, store: Store) -> None:
    """The family's jobs, newest first. Active ones are redrawn every second from the store; when
    one ends, the whole page reruns so its results reach the curve, and a fine-tune of the weights
    shown that raised its configurations' mean top-1 becomes the weights shown (one that lowered it
    does not). With none active, a cheaper watch reruns the page when a job appears or changes."""
    jobs.refresh(store)
    locked = access.lock()
    listed = store.list_jobs(view.family)
    if _switch_to_improved(view, listed):
        st.rerun()
    active = [job["id"] for job in listed if job["status"] in ACTIVE]
    if active:
        @st.fragment(run_every=1.0)
        def follow() -> None:
            jobs.refresh(store)
            current = [store.get_job(job_id) for job_id in active]
            if any(job["status"] not in ACTIVE for job in current):
                st.rerun()
            previewed = {job["id"] for job in current
                         if "preview" in (job["result"] or {}) and job["spec"]["weights"] == view.weights}
            if previewed - st.session_state.get(PREVIEWS_DRAWN, set()):
                st.rerun()  # a preview is in: the curve, outside this fragment, draws it
            for job in current:
                _job(job, store, locked)

        follow()
    else:
        drawn = [(job["id"], job["status"]) for job in listed]

        @st.fragment(run_every=WATCH_EVERY_S)
        def watch() -> None:
            # a job queued elsewhere (a terminal, another viewer) reaches this page without a click
            if [(job["id"], job["status"]) for job in store.list_jobs(view.family)] != drawn:
                st.rerun()

        watch()
    for job in listed:
        if job["status"] not in ACTIVE:
            _job(job, store, locked)
    if not listed:
        st.caption("No jobs yet.")
