"""The Evolve tab through Streamlit's AppTest, on searches written straight into the store: what a
finished, a failed and a running search show, with no worker and no network run."""
import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from snnet.store import Store

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
NAMES = ["vit_parent", "cnn_parent"]  # what the job recorded; the page must show these, not its own idea
POINTS = [([0, 0, 0, 0, 0], 10.0, 0.010, True), ([0, 0, 0, 0, 1], 20.0, 0.005, True), ([0, 0, 0, 0, 2], 8.0, 0.015, True),
          ([1, 0, 0, 0, 1], 15.0, 0.004, False),  # dominates parent B
          ([0, 1, 0, 0, 0], 6.0, 0.020, False),  # a trade-off neither parent has
          ([0, 0, 1, 1, 0], 30.0, 0.012, False)]  # dominated


def _search(store: Store, status: str, **fields) -> int:
    job_id = store.add_job("evolve", "evolve:mini", "cpu",
                           {"preset": "mini", "evaluations": 4, "seed": 3, "algorithm": "nsga2", "train": {}, "task": {}, "device": "cpu"},
                           steps=4)
    for genotype, error, gmacs, is_parent in POINTS:
        store.add_evolve_point(job_id, genotype, error, gmacs, is_parent)
    store.update_job(job_id, status=status, stage=status, step=3, started=time.time() - 5, finished=time.time(), **fields)
    return job_id


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    return Store(tmp_path / "store.sqlite")


def _chart(app) -> dict:
    return json.loads(next(c for c in app.get("plotly_chart") if "validation error" in c.proto.spec).proto.spec)


def test_a_finished_search_reopens_with_its_parents_front_standouts_and_test_check(store):
    front = [{"genotype": g, "error": e, "gmacs": c, "is_parent": p} for g, e, c, p in
             (POINTS[3], POINTS[0], POINTS[2], POINTS[4])]
    result = {"parent_names": NAMES, "front": front, "test_front": [{**entry, "error": entry["error"] + 1} for entry in front],
              "requests": 4, "evaluations": 3, "skipped_inactive": 1, "total_s": 42.0}
    job_id = _search(store, "done", result=result)
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception and not app.error
    assert app.selectbox(key="evolve_search").value == job_id
    traces = {trace["name"]: trace for trace in _chart(app)["data"]}
    assert {"parent A · vit_parent", "parent B · cnn_parent", "ensemble of the parents", "dominates a parent",
            "new trade-off (no parent dominates it)", "offspring", "Pareto front"} <= set(traces)
    assert traces["dominates a parent"]["customdata"] == [["1 0 0 0 1", "offspring that dominates a parent"]]
    assert [m.value for m in app.markdown if m.value.startswith("Of ")] == [
        "Of 3 offspring measured, **1 dominates a parent** (no worse in error and cost, better in one), and "
        "**1 more reaches a trade-off neither parent has** (no parent dominates it)."]
    assert app.success[0].value.startswith(f"Search {job_id} done in 42 s: 4 genotypes asked for, 3 networks measured, "
                                           "1 answered from the cache")
    table = next(frame.value for frame in app.dataframe if "test error (%)" in frame.value)
    assert list(table["genotype"]) == ["1 0 0 0 1", "0 0 0 0 0", "0 0 0 0 2", "0 1 0 0 0"]
    assert list(table["test error (%)"]) == [16.0, 11.0, 9.0, 7.0]
    assert any(c.value.startswith("Click a network on the chart") for c in app.caption)


def test_a_failed_search_is_one_line_and_a_running_one_offers_cancel(store):
    failed = _search(store, "failed", message="out of memory on cpu while searching (nsga2)")
    running = _search(store, "running", pid=None)
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception
    assert app.selectbox(key="evolve_search").value == running  # the newest
    assert any(b.label == "Cancel search" for b in app.button)
    app.selectbox(key="evolve_search").set_value(failed).run()
    assert [e.value for e in app.error] == [f"Search {failed} failed: out of memory on cpu while searching (nsga2)"]
