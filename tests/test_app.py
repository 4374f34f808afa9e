"""The explorer's logic through Streamlit's AppTest: selection, budget, predictions, errors, jobs."""
import io
import json
import re
import time
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from snnet.cost import space_rows
from snnet.families import get_family

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
SHIPPED = json.loads((ROOT / "checkpoints" / "mini" / "metrics.json").read_text())


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    return AppTest.from_file(APP, default_timeout=120).run()


def _oracle_best(budget: float) -> int:
    """Brute force over the shipped figures and our own cost table, apart from snnet.pareto."""
    family = get_family("mini")
    gmacs = {row["id"]: row["gmacs"] for row in space_rows(family, family.space())}
    top1 = {row["id"]: row["top1"] for row in SHIPPED["configurations"]}
    fitting = [i for i in gmacs if gmacs[i] <= budget]
    return sorted(fitting, key=lambda i: (-top1[i], gmacs[i]))[0]


def _prediction_titles(app) -> list[str]:
    return [m.value for m in app.markdown if re.fullmatch(r"\*\*(Stitch \d+|Anchor \w+)\*\* · [\d.]+ ms", m.value)]


def _heading(app) -> str:
    return app.subheader[0].value


def _chart(app) -> dict:
    """The curve's figure, parsed: plotly may write non-ASCII text escaped or not, by machine."""
    return json.loads(app.get("plotly_chart")[0].proto.spec)


def _trace_names(app) -> set[str]:
    return {trace.get("name") for trace in _chart(app)["data"]}


def _zoo_names(app, zoo_trace: str) -> set[str]:
    """The models of the zoo trace (each point's customdata: -1, name, source, parameters)."""
    trace = next(t for t in _chart(app)["data"] if t.get("name") == zoo_trace)
    return {point[1] for point in trace["customdata"]}


def test_starts_on_the_embedded_default_with_a_stitch_selected(app):
    assert not app.exception and not app.error
    assert app.sidebar.selectbox[0].value == "mini"
    biggest = max(row["gmacs"] for row in space_rows(get_family("mini"), get_family("mini").space()))
    assert _heading(app) == f"Stitch {_oracle_best(biggest / 2)}"
    names = _trace_names(app)
    assert {"mini_tiny → mini_small", "mini_small → mini_base", "anchors", "Pareto frontier",
            "zoo (trained alone)"} <= names


def test_selecting_by_id_shows_that_configuration(app):
    family = get_family("mini")
    costs = {row["id"]: row for row in space_rows(family, family.space())}
    app.session_state["stitch_id"] = 24
    app.run()
    assert _heading(app) == "Stitch 24"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["GMACs"] == f"{costs[24]['gmacs']:.4f}"
    assert metrics["Top-1"] == f"{SHIPPED['configurations'][24]['top1']:.2f} %"
    app.session_state["stitch_id"] = 1
    app.run()
    assert _heading(app) == "Anchor mini_small (id 1)"


@pytest.mark.parametrize("budget", [0.0045, 0.012, 0.03, 0.04])
def test_a_budget_selects_the_best_configuration_within_it(app, budget):
    app.slider(key="budget_gmacs").set_value(budget).run()
    assert not app.exception
    best = _oracle_best(budget)
    anchors = get_family("mini").anchor_names
    assert _heading(app) == (f"Anchor {anchors[best]} (id {best})" if best < len(anchors) else f"Stitch {best}")


def test_uploads_are_predicted_and_an_unreadable_one_is_one_line(app):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buffer, format="PNG")
    app.file_uploader[0].set_value([("blank.png", buffer.getvalue(), "image/png"),
                                    ("broken.png", b"not an image", "image/png")]).run()
    assert not app.exception
    assert [e.value for e in app.error] == ["broken.png: not a readable image, skipped"]
    captions = _prediction_titles(app)
    assert len(captions) == 3  # two built-in samples and the readable upload
    app.radio(key="compare").set_value("its anchors").run()
    captions = _prediction_titles(app)
    assert len(captions) == 9  # each image through the stitch and both of its anchors
    family = get_family("mini")
    stitch = family.space()[int(_heading(app).split()[-1])]
    anchors = {f"Anchor {family.anchor_names[i]}" for i in (stitch.front, stitch.back)}
    assert {c.split("**")[1] for c in captions} == {_heading(app)} | anchors


@pytest.mark.parametrize("family", ["deit", "swin", "resnet-swin"])
def test_missing_weights_are_one_clear_line(app, family):
    app.sidebar.selectbox[0].set_value(family).run()
    assert not app.exception
    assert len(app.error) == 1 and app.error[0].value.startswith(f"no SN-Net weights for family {family}")
    assert f"python -m snnet init --family {family}" in app.error[0].value
    # the selector says so before anything is chosen, and the sidebar says how to get them
    assert f"{family} (no weights here)" in app.sidebar.selectbox[0].options
    assert any(f"python -m snnet init --family {family}" in info.value for info in app.sidebar.info)
    assert {"mini", "mini-resnet"} <= set(app.sidebar.selectbox[0].options)  # both offline families are ready


def _opened_by_link(tmp_path, monkeypatch, family: str, stitch: int) -> AppTest:
    """The page as a deep link ?family=F&stitch=N opens it, with a store of its own."""
    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params["family"] = family
    app.query_params["stitch"] = str(stitch)
    return app.run()


def test_a_hierarchical_cnn_family_shows_its_stages_in_the_path_and_the_teaching_text(tmp_path, monkeypatch):
    app = _opened_by_link(tmp_path, monkeypatch, "mini-resnet", 10)
    assert not app.exception and not app.error
    assert _heading(app) == "Stitch 10"
    caption = next(c.value for c in app.caption if "stitching layer" in c.value)
    assert re.search(r"stitching layer \d+: \d+→\d+ channels, 1×1 convolution \(\d+ ch, \d+×\d+ →", caption)
    path = next(chart for chart in app.get("plotly_chart") if "stage " in chart.proto.spec)
    labels = [a["text"] for a in json.loads(path.proto.spec)["layout"]["annotations"]]
    assert any(label.startswith("stage 0 · ") for label in labels)
    assert any("**Stages**" in m.value and "1×1 convolution" in m.value for m in app.markdown)


@pytest.mark.slow
def test_a_fine_tune_from_the_page_runs_as_a_job_and_lands_on_the_curve(app, tmp_path):
    app.radio(key="ft_scope").set_value("chosen")
    app.multiselect(key="ft_chosen").set_value([0, 24])
    app.number_input(key="ft_steps").set_value(3)
    app.number_input(key="ft_batch").set_value(8)
    next(b for b in app.button if b.label == "Launch fine-tune").click().run()
    assert not app.exception and not app.error
    titles = [m.value for m in app.markdown if m.value.startswith("**Job 1 ")]
    assert titles and titles[0].split(" · ")[-1].rstrip("*") in ("queued", "running", "done")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        app.run()
        if any(s.value.startswith("Job 1 done") for s in app.success):
            break
        time.sleep(1)
    assert any(s.value.startswith("Job 1 done") for s in app.success), [e.value for e in app.error]
    # the page shows the fine-tuned weights by itself only when they raised the mean top-1
    from snnet.store import Store

    job = Store(tmp_path / "store.sqlite").get_job(1)
    assert (job["spec"]["distill"], job["spec"]["anchor_share"]) == (0.5, None)  # the form's defaults
    result = job["result"]
    before = sum(result["before"][str(i)] for i in (0, 24)) / 2
    after = sum(result["after"][str(i)] for i in (0, 24)) / 2
    switched = app.sidebar.selectbox[1].value == "job 1: fine-tuned 3 steps"
    assert switched == (after > before)
    assert any(f"{before:.2f} % before, {after:.2f} % after" in text
               for text in [m.value for m in app.markdown] + [w.value for w in app.warning])
    next(b for b in app.button if b.label == "Show on the curve").click().run()
    assert app.sidebar.selectbox[1].value == "job 1: fine-tuned 3 steps"
    assert "before fine-tune" in _trace_names(app)


def test_one_click_fine_tunes_exactly_the_configurations_below_the_frontier(app, tmp_path):
    from snnet.jobs import cancel
    from snnet.store import Store

    below = sorted(set(range(71)) - set(_oracle_frontier()))
    button = app.button(key="ft_below")
    assert button.label == f"Fine-tune the {len(below)} configurations below the frontier"
    button.click().run()
    assert not app.exception and not app.error
    store = Store(tmp_path / "store.sqlite")
    job = store.get_job(1)
    cancel(store, 1)
    assert sorted(job["spec"]["stitches"]) == below and job["spec"]["anchor_lr"] == 0.0


def test_the_official_compat_path_has_its_own_figures_and_offers_to_measure_them(app):
    app.sidebar.toggle[0].set_value(True).run()
    assert not app.exception and not app.error
    assert app.info[0].value == "71 of 71 configurations have no measured accuracy for these weights and settings yet."
    assert any(b.label == "Evaluate them in the background" for b in app.button)


@pytest.mark.slow
def test_imagenet_mode_shows_the_timm_zoo_and_predicts_imagenet_classes(tmp_path, monkeypatch):
    import sys

    import torch

    from snnet.model import StitchableNet
    from snnet.weights import save_weights

    weights = tmp_path / "deit-random.safetensors"
    torch.manual_seed(0)
    save_weights(StitchableNet.from_family("deit"), weights)
    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--family", "deit", "--weights", str(weights)])
    app = AppTest.from_file(APP, default_timeout=300).run()
    assert not app.exception and not app.error
    assert app.sidebar.selectbox[1].value == "file deit-random.safetensors"
    assert app.info[0].value.startswith("71 of 71 configurations have no measured accuracy")
    assert any(name.startswith("deit_small_patch16_224.") for name in _zoo_names(app, "timm zoo"))
    titles = _prediction_titles(app)
    assert len(titles) == 2  # scikit-learn's two sample photos through the selection
    classes = set(app.dataframe[0].value["class"])
    assert len(classes) == 5 and classes <= set(get_family("deit").task.class_labels(get_family("deit")))


@pytest.mark.parametrize("address, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                ("", False), (None, False), ("192.168.1.5", False),
                                                ("demo.example", False)])
def test_only_loopback_addresses_keep_the_server_on_this_machine(address, loopback):
    from app.access import is_loopback

    assert is_loopback(address) is loopback


def test_the_project_binds_loopback_and_caps_uploads():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["maxUploadSize"] == 20


@pytest.fixture
def served_to_a_room(tmp_path, monkeypatch):
    """The app as `streamlit run --server.address 0.0.0.0` serves it, with a presenter's passphrase."""
    from streamlit import config

    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    monkeypatch.setenv("SNNET_PASSPHRASE", "stitch me")
    before = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    yield AppTest.from_file(APP, default_timeout=120)
    config.set_option("server.address", before)


def _button(app, label):
    return next(b for b in app.button if b.label == label)


def test_served_beyond_loopback_viewers_explore_but_jobs_and_weights_are_locked(served_to_a_room):
    app = served_to_a_room.run()
    assert not app.exception and not app.error
    assert app.sidebar.selectbox(key="run").disabled
    assert _button(app, "Launch fine-tune").disabled
    reason = "Locked for viewers: enter the presenter's passphrase in the sidebar to launch jobs or switch weights."
    assert reason in [c.value for c in app.caption]
    app.session_state["stitch_id"] = 24  # exploring still works
    app.run()
    assert _heading(app) == "Stitch 24" and len(_prediction_titles(app)) == 2
    app.sidebar.text_input(key="passphrase").input("wrong").run()
    assert [e.value for e in app.error] == ["Wrong passphrase."]
    assert _button(app, "Launch fine-tune").disabled
    app.sidebar.text_input(key="passphrase").input("stitch me").run()
    assert not app.error and not _button(app, "Launch fine-tune").disabled
    assert not app.sidebar.selectbox(key="run").disabled
    assert reason not in [c.value for c in app.caption]


def test_without_a_passphrase_a_server_on_the_network_locks_its_controls_for_everyone(served_to_a_room, monkeypatch):
    monkeypatch.delenv("SNNET_PASSPHRASE")
    app = served_to_a_room.run()
    assert not app.exception and not app.error
    assert _button(app, "Launch fine-tune").disabled
    assert not [t for t in app.sidebar.text_input if t.key == "passphrase"]
    assert any(c.value.startswith("Locked: this server is reachable from the network and no SNNET_PASSPHRASE is set")
               for c in app.caption)


def test_uploads_beyond_the_cap_are_skipped_with_one_line(app):
    uploads = []
    for shade in range(9):
        buffer = io.BytesIO()
        Image.new("L", (32, 32), shade * 20).save(buffer, format="PNG")
        uploads.append((f"shade-{shade}.png", buffer.getvalue(), "image/png"))
    app.file_uploader[0].set_value(uploads).run()
    assert not app.exception and not app.error
    assert [w.value for w in app.warning] == [
        "Predicting 8 of 11 images (samples first): at most 8 at once; the rest are skipped."]
    assert len(_prediction_titles(app)) == 8


@pytest.mark.slow
def test_a_job_out_of_memory_is_one_line_the_page_stays_usable_and_resume_finishes_it(app, monkeypatch):
    from snnet import jobs
    from snnet.store import Store

    monkeypatch.setenv("SNNET_FAULT", "oom:2")  # the worker fails as an allocator would, at step 2's checkpoint
    store = Store()  # the page's store: $SNNET_HOME of the fixture
    job_id = jobs.submit(jobs.JobSpec("mini", stitches=[0, 24], steps=2, batch_size=8), store)
    monkeypatch.delenv("SNNET_FAULT")
    _wait_for_page(app, lambda: any(e.value.startswith(f"Job {job_id} failed") for e in app.error))
    assert [e.value for e in app.error] == [
        f"Job {job_id} failed: out of memory on cpu while training (batch size 8): try a smaller batch"]
    assert not app.exception
    app.session_state["stitch_id"] = 40  # the rest of the page still works
    app.run()
    assert _heading(app) == "Stitch 40" and len(_prediction_titles(app)) == 2
    _button(app, "Resume").click().run()
    _wait_for_page(app, lambda: any(s.value.startswith(f"Job {job_id} done") for s in app.success))
    assert not app.error and store.get_job(job_id)["step"] == 2


def _wait_for_page(app, condition, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, [e.value for e in app.error]
        time.sleep(1)
        app.run()


def test_a_deep_link_opens_on_its_stitch_and_the_address_follows_the_selection(tmp_path, monkeypatch):
    app = _opened_by_link(tmp_path, monkeypatch, "mini", 24)
    assert not app.exception and not app.error and not app.warning
    assert _heading(app) == "Stitch 24"
    app.slider(key="budget_gmacs").set_value(0.0045).run()
    best = _oracle_best(0.0045)
    assert _heading(app) != "Stitch 24"
    assert dict(app.query_params) == {"family": "mini", "stitch": str(best)}


@pytest.mark.parametrize("stitch", ["71", "-3", "abc"])
def test_a_deep_link_to_no_configuration_says_so_and_opens_on_the_default(tmp_path, monkeypatch, stitch):
    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params["stitch"] = stitch
    app.run()
    assert not app.exception and not app.error
    assert [w.value for w in app.warning] == [
        f"The link names configuration {stitch!r}, which is not one of this family's ids 0-70: showing the "
        "default selection."]
    biggest = max(row["gmacs"] for row in space_rows(get_family("mini"), get_family("mini").space()))
    assert _heading(app) == f"Stitch {_oracle_best(biggest / 2)}"


def test_the_budget_slider_steps_finely_and_reaches_both_ends(app):
    slider = app.slider(key="budget_gmacs")
    positions = (slider.max - slider.min) / slider.step
    assert positions >= 100 and positions == pytest.approx(round(positions))
    slider.set_value(slider.max).run()
    assert _heading(app) == "Anchor mini_base (id 2)"


def _oracle_frontier() -> list[int]:
    """Shipped figures, brute force: a configuration is on the frontier when no other is at most as
    costly and at least as accurate, and strictly better in one (ties: one of them, the first id)."""
    family = get_family("mini")
    gmacs = {row["id"]: row["gmacs"] for row in space_rows(family, family.space())}
    top1 = {row["id"]: row["top1"] for row in SHIPPED["configurations"]}
    on = [i for i in gmacs if not any((gmacs[j], top1[j]) != (gmacs[i], top1[i]) and gmacs[j] <= gmacs[i]
                                      and top1[j] >= top1[i] for j in gmacs)]
    return sorted(dict.fromkeys(on, None), key=lambda i: gmacs[i])


def test_the_presenters_view_steps_along_the_frontier_and_its_link_keeps_it(tmp_path, monkeypatch):
    frontier = _oracle_frontier()
    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params.update({"family": "mini", "stitch": str(frontier[1]), "present": "1"})
    app.run()
    assert not app.exception and not app.error
    assert app.toggle(key="present").value and not app.tabs  # the presenter's view alone
    assert re.fullmatch(rf"Stitch {frontier[1]}: top-1 [\d.]+ % at [\d.]+ GMACs", app.title[0].value)
    assert app.select_slider(key="present_step").value == frontier[1]
    anchors = get_family("mini").anchor_names
    assert [option.split(" · ")[0] for option in app.select_slider(key="present_step").options] == [
        f"Anchor {anchors[i]}" if i < len(anchors) else f"Stitch {i}" for i in frontier]
    app.button(key="present_forward").click().run()
    assert app.select_slider(key="present_step").value == frontier[2]
    assert dict(app.query_params) == {"family": "mini", "stitch": str(frontier[2]), "present": "1"}
    app.select_slider(key="present_step").set_value(frontier[-1]).run()
    assert app.button(key="present_forward").disabled and dict(app.query_params)["stitch"] == str(frontier[-1])
    app.toggle(key="present").set_value(False).run()
    assert app.tabs and dict(app.query_params) == {"family": "mini", "stitch": str(frontier[-1])}


def test_the_table_download_holds_every_configuration_with_its_shipped_figures():
    import pandas as pd

    from app.explorer import table_csv
    from snnet.api import load_net, results

    rows = results(load_net("mini"), compute_missing=False)
    table = pd.read_csv(io.BytesIO(table_csv(rows)))
    shipped = {row["id"]: row["top1"] for row in SHIPPED["configurations"]}
    configs = table[table["kind"] != "zoo"]
    assert sorted(configs["id"].astype(int)) == sorted(shipped) == list(range(71))
    assert all(abs(top1 - shipped[int(i)]) < 1e-9 for i, top1 in zip(configs["id"], configs["top1"]))
    assert set(table[table["kind"] == "zoo"]["name"]) == {z["name"] for z in SHIPPED["zoo"]}


@pytest.mark.browser
def test_the_curve_is_drawn_as_svg_and_png_on_the_server():
    from app.explorer import figure_bytes, image_browser
    from app.figures import pareto_figure
    from snnet.api import load_net, results

    assert image_browser() is not None  # CI installs Chromium; kaleido drives it
    figure = pareto_figure(results(load_net("mini"), compute_missing=False), 24)
    svg = figure_bytes(figure, "svg").decode()
    assert svg.startswith("<svg") and "top-1 (%)" in svg and "GMACs" in svg
    assert figure_bytes(figure, "png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_running_fine_tunes_preview_is_drawn_as_marked_points_until_its_exact_figures(tmp_path, monkeypatch):
    import os

    from snnet import jobs
    from snnet.store import Store

    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    store = Store(tmp_path / "store.sqlite")
    spec = jobs.JobSpec("mini", stitches=[3, 24], steps=10)
    job_id = store.add_job(spec.kind, "mini", "cpu", jobs.asdict(spec), steps=10)
    store.claim_next_job("cpu")
    preview = {"3": 41.5, "24": 77.25}
    store.update_job(job_id, pid=os.getpid(), stage="evaluating 2 configurations", result={
        "weights": str(tmp_path / "model.safetensors"), "preview": preview, "preview_images": 360, "eval_images": 3600})
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception and not app.error
    trace = next(t for t in _chart(app)["data"] if t.get("name") == f"job {job_id}: preview on 360 of 3600 images")
    assert {point[0]: y for point, y in zip(trace["customdata"], trace["y"])} == {3: 41.5, 24: 77.25}
    assert all("(preview on 360 images)" in point[5] for point in trace["customdata"])
    assert any("Open circles" in c.value for c in app.caption)
    store.update_job(job_id, status="done", result={"weights": None, "weights_hash": "x", "stitches": [3, 24],
                                                    "before": {}, "after": {}})
    app.run()
    assert not any("preview" in (t.get("name") or "") for t in _chart(app)["data"])
