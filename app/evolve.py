"""The Evolve tab: recombine two trained parents of different architectures and search their offspring.

A search is a background job (snnet.api.submit_evolve): its worker prepares the supernetwork, then
writes each network to the store as it measures it. This tab only reads the store: while the shown
search runs, a fragment redraws it every couple of seconds, and when it ends the whole page reruns.
A click on the chart shows that network (its genotype rides in customdata): its path through both
parents, its cost and errors, and its predictions, through the supernetwork from the evolve cache.
"""
import hashlib
import io
import json
import time

import pandas as pd
import streamlit as st

from app import access
from app.evolve_figures import genotype_text, offspring_path_figure, parse_genotype, path_text, role_title, search_figure
from app.explorer import IMAGE_TYPES, MAX_IMAGES, MAX_UPLOAD_MB, anchor_pictures
from snnet import api
from snnet.data import load_image
from snnet.errors import SnnetError
from snnet.store import Store

ACTIVE = ("queued", "running")
FOLLOW_EVERY_S = 2.0
WATCH_EVERY_S = 3.0
CHART_KEY = "evolve_chart"
SHOWN = "evolve_search"  # the id of the search on show
SELECTED = "evolve_genotype"  # the genotype (an active key) of the network shown under the chart
LAST_CLICK = "evolve_last_click"
SAMPLES = 4  # the task's samples predicted when nothing is uploaded
ALGORITHM_NAMES = {"nsga2": "NSGA-II", "random": "random search"}
INTRO = ("Two trained networks of **different architectures** (here a small ViT and a small ResNet) are "
         "stitched both ways at matched points into one supernetwork of switches. A genotype sets the "
         "switches and picks a head; the search measures offspring for new trade-offs of error and cost.")


def render(store: Store) -> None:
    st.markdown(INTRO)
    _form(store)
    searches = api.evolve_searches(store)
    if not searches:
        st.caption("No searches yet: start one above.")
        _watch(store, [])
        return
    job_id = _choose(searches)
    _apply_click()
    if next(job for job in searches if job["id"] == job_id)["status"] in ACTIVE:
        _follow(job_id, store)
    else:
        _watch(store, searches)
        _search(api.evolve_search(job_id, store), store)


def _form(store: Store) -> None:
    defaults, locked = api.evolve_defaults(), access.lock()
    with st.form("evolve_form"):
        st.markdown("**Start a search** · it runs in the background; this tab follows it")
        if locked:
            st.caption(locked)
        left, middle, right = st.columns(3)
        evaluations = left.number_input("Evaluations (genotypes asked for)", min_value=1, value=defaults["evaluations"],
                                        step=10, key="evolve_evaluations",
                                        help="The search's budget. Genotypes that run the same network are "
                                             "measured once; the parents and their ensemble are measured besides.")
        seed = middle.number_input("Seed", min_value=0, value=defaults["seed"], key="evolve_seed")
        algorithm = right.radio("Algorithm", defaults["algorithms"], key="evolve_algorithm", horizontal=True,
                                index=defaults["algorithms"].index(defaults["algorithm"]),
                                format_func=lambda name: ALGORITHM_NAMES.get(name, name))
        with st.expander("Stitch training"):
            st.caption("The stitching layers are trained once per setting and cached: the first search of a setting "
                       "trains them (minutes on a CPU), later ones start at once.")
            first, second = st.columns(2)
            steps = first.number_input("Feature-matching steps", min_value=0, value=defaults["train_steps"],
                                       key="evolve_train_steps",
                                       help="Each layer learns to give the block it enters the activation it expects.")
            task_steps = second.number_input("Steps on the task's labels", min_value=0, value=defaults["task_steps"],
                                             key="evolve_task_steps",
                                             help="Then the layers are trained on labels, the parents' ensemble as teacher.")
        started = st.form_submit_button("Start search", type="primary", disabled=locked is not None)
    if started and not locked:
        # only what differs from the defaults: a search with the defaults shares the command line's cache key
        train = {} if steps == defaults["train_steps"] else {"steps": int(steps)}
        task = {} if task_steps == defaults["task_steps"] else {"steps": int(task_steps)}
        try:
            job_id = api.submit_evolve(int(evaluations), int(seed), algorithm, defaults["preset"], train, task, store=store)
        except SnnetError as error:
            st.error(str(error))
            return
        st.session_state[SHOWN] = job_id  # before the chooser exists in this run: it opens on the new search
        st.toast(f"Search {job_id} queued")


def _label(job: dict) -> str:
    spec = job["spec"]
    return (f"Search {job['id']} · {ALGORITHM_NAMES.get(spec['algorithm'], spec['algorithm'])} · "
            f"{spec['evaluations']} evaluations · seed {spec['seed']} · {job['status']}")


def _choose(searches: list[dict]) -> int:
    ids = [job["id"] for job in searches]
    if st.session_state.get(SHOWN) not in ids:
        st.session_state[SHOWN] = ids[0]  # the newest, after a refresh too
    labels = {job["id"]: _label(job) for job in searches}
    return st.selectbox("Search", ids, key=SHOWN, format_func=labels.get,
                        help="Every search started here or from the command line, newest first; "
                             "finished ones reopen from the store.")


def _apply_click() -> bool:
    """A click on the chart selects that network; True when it changed the selection."""
    event = st.session_state.get(CHART_KEY)
    points = event.selection.points if event is not None else []
    clicked = next((p["customdata"][0] for p in points if p.get("customdata")), None)
    changed = clicked is not None and clicked != st.session_state.get(LAST_CLICK)
    if changed:
        st.session_state[SELECTED] = parse_genotype(clicked)
    st.session_state[LAST_CLICK] = clicked
    return changed


def _follow(job_id: int, store: Store) -> None:
    """The running search, redrawn from the store; the whole page reruns when it ends or a click
    selects a network (the details live outside this fragment)."""
    @st.fragment(run_every=FOLLOW_EVERY_S)
    def follow() -> None:
        if _apply_click():
            st.rerun()
        search = api.evolve_search(job_id, store)
        if search["status"] not in ACTIVE:
            st.rerun()
        _search(search, store)

    follow()


def _watch(store: Store, searches: list[dict]) -> None:
    drawn = [(job["id"], job["status"]) for job in searches]

    @st.fragment(run_every=WATCH_EVERY_S)
    def watch() -> None:
        # a search started elsewhere (the command line, another viewer) reaches this tab without a click
        if [(job["id"], job["status"]) for job in api.evolve_searches(store)] != drawn:
            st.rerun()

    watch()


def _elapsed(job: dict) -> str:
    seconds = int(time.time() - job["started"]) if job["started"] else 0
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _progress(job: dict, store: Store) -> None:
    if job["status"] == "queued":
        st.progress(0.0, text="waiting for the device: one job runs at a time")
    else:
        measured = f" · {job['step']} networks measured of a budget of {job['steps']} genotypes" if job["step"] else ""
        eta = f" · at most {int(job['eta_s'])} s left" if job["eta_s"] else ""
        st.progress(min(1.0, job["step"] / max(1, job["steps"])),
                    text=f"{job['stage']}{measured} · {_elapsed(job)} so far{eta}")
    locked = access.lock()
    if st.button("Cancel search", key=f"evolve-cancel-{job['id']}", disabled=locked is not None, help=locked) and not locked:
        api.cancel_job(job["id"], store)
        st.toast(f"Search {job['id']} stops after the network it is measuring")


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def standouts(rows: list[dict]) -> str:
    """One sentence: how many offspring dominate a parent, and how many more no parent dominates."""
    offspring = [r for r in rows if r["role"] == "offspring"]
    if not offspring:
        return "No offspring measured yet: the parents and their ensemble come first."
    beats = sum(r["dominates_parent"] for r in offspring)
    new = sum(r["new_tradeoff"] and not r["dominates_parent"] for r in offspring)
    beating = "none dominates a parent" if not beats else _plural(beats, "dominates a parent", "dominate a parent")
    reaching = f"{new}{' more' if beats else ''} {'reaches' if new == 1 else 'reach'}"
    return (f"Of {len(offspring)} offspring measured, **{beating}** (no worse in error and cost, better in one), "
            f"and **{reaching} a trade-off neither parent has** (no parent dominates {'it' if new == 1 else 'them'}).")


def _search(search: dict, store: Store) -> None:
    """A search's state, its chart of everything measured so far, and what stood out."""
    if search["status"] in ACTIVE:
        _progress(search, store)
    elif search["status"] == "failed":
        st.error(f"Search {search['id']} failed: {search['message']}")
    elif search["status"] == "cancelled":
        st.info(f"Search {search['id']} was cancelled after {_plural(search['step'], 'network', 'networks')}.")
    rows = api.evolve_roles(search["points"])
    if not rows:
        return
    names = (search["result"] or {}).get("parent_names", [])
    figure = search_figure(rows, names, st.session_state.get(SELECTED))
    st.plotly_chart(figure, key=CHART_KEY, on_select="rerun", selection_mode="points", config={"displaylogo": False})
    st.markdown(standouts(rows))
    if search["status"] == "done":
        _summary(search, rows)


def _summary(search: dict, rows: list[dict]) -> None:
    result = search["result"]
    st.success(f"Search {search['id']} done in {result['total_s']:.0f} s: {result['requests']} genotypes asked for, "
               f"{result['evaluations']} networks measured, {result['skipped_inactive']} answered from the cache "
               f"(they differed only in switches no path reads).")
    tested = {tuple(entry["genotype"]): entry["error"] for entry in result["test_front"]}
    roles = {tuple(row["genotype"]): role_title(row, result["parent_names"]) for row in rows}
    st.markdown("**The front, checked on the test split** (the search chose on validation)")
    st.dataframe(pd.DataFrame([{"genotype": genotype_text(entry["genotype"]), "network": roles[tuple(entry["genotype"])],
                                "GMACs": entry["gmacs"], "val error (%)": entry["error"],
                                "test error (%)": tested[tuple(entry["genotype"])]} for entry in result["front"]]),
                 hide_index=True, column_config={"GMACs": st.column_config.NumberColumn(format="%.4f"),
                                                 "val error (%)": st.column_config.NumberColumn(format="%.2f"),
                                                 "test error (%)": st.column_config.NumberColumn(format="%.2f")})


@st.cache_resource(show_spinner="Loading the supernetwork from the evolve cache...", max_entries=2)
def _supernet(spec_json: str):
    return api.load_supernet(json.loads(spec_json))


def details(store: Store) -> None:
    """The network selected on the chart of the search on show: path, cost, errors, predictions."""
    if st.session_state.get(SHOWN) is None:
        return
    search = api.evolve_search(st.session_state[SHOWN], store)
    selected = st.session_state.get(SELECTED)
    rows = {tuple(row["genotype"]): row for row in api.evolve_roles(search["points"])}
    if selected not in rows:
        if rows:
            st.caption("Click a network on the chart to see its path through both parents, its cost and its predictions.")
        return
    row, names = rows[selected], search["result"]["parent_names"]
    net = _supernet(json.dumps(search["spec"], sort_keys=True))
    summary = api.offspring_summary(net, selected)
    st.subheader(f"{role_title(row, names).capitalize()} · genotype {genotype_text(selected)}")
    st.caption(path_text(summary["paths"], names))
    st.plotly_chart(offspring_path_figure(summary["paths"], net.genome.pairs, anchor_pictures(net)),
                    config={"displayModeBar": False}, key="evolve_path")
    columns = st.columns(4)
    columns[0].metric("GMACs", f"{summary['gmacs']:.4f}")
    columns[1].metric("Parameters", f"{summary['params_m']:.3f} M")
    columns[2].metric("Val error", f"{row['error']:.2f} %")
    test_slot = columns[3].empty()  # filled last: the predictions need not wait for a test-split pass
    _predictions(net, selected, json.dumps(search["spec"], sort_keys=True))
    if row["test_error"] is None:
        test_slot.caption("Measuring on the test split...")
    test_slot.metric("Test error", f"{api.offspring_test_error(net, search['id'], selected, store):.2f} %")


def _images(net) -> list[tuple[str, object]]:
    uploads = st.file_uploader("Upload images", type=IMAGE_TYPES, accept_multiple_files=True, key="evolve_uploads",
                               max_upload_size=MAX_UPLOAD_MB,
                               help=f"Up to {MAX_IMAGES} images, {MAX_UPLOAD_MB} MB each; without any, the task's own "
                                    "samples are shown.")
    images = []
    for upload in (uploads or [])[:MAX_IMAGES]:
        try:
            images.append((upload.name, load_image(io.BytesIO(upload.getvalue()))))
        except SnnetError:
            st.error(f"{upload.name}: not a readable image, skipped")
    if len(uploads or []) > MAX_IMAGES:
        st.warning(f"Predicting the first {MAX_IMAGES} of {len(uploads)} uploads.")
    if uploads:
        return images
    st.caption("The task's own samples, until you upload images.")
    return net.family.task.sample_images(net.family)[:SAMPLES]


def _digest(image) -> str:
    return hashlib.sha256(image.mode.encode() + str(image.size).encode() + image.tobytes()).hexdigest()


@st.cache_data(max_entries=256, show_spinner=False)
def _predict(_net, net_key: str, genotype: tuple, image_digest: str, _image) -> dict:
    """One image through one network, kept so that unrelated reruns do not predict again."""
    return api.predict_genotype(_net, genotype, [_image], top=3)[0]


def _predictions(net, genotype: tuple, net_key: str) -> None:
    st.markdown("**Predictions** through this network")
    images = _images(net)
    for start in range(0, len(images), 4):
        for column, (name, image) in zip(st.columns(4), images[start:start + 4]):
            result = _predict(net, net_key, genotype, _digest(image), image)
            shown = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")
            column.image(shown, caption=name, width=80)
            column.dataframe(pd.DataFrame([{"class": p["label"], "probability": p["prob"]} for p in result["top5"]]),
                             hide_index=True, width="stretch", column_config={"probability": st.column_config.ProgressColumn(
                                 format="percent", min_value=0.0, max_value=1.0)})
