"""Evolve searches as background jobs: points in the store as they are measured, the job's counts
and front equal to the same search run here, cancel, and how a page reads a search's networks.

Oracles: the search run in this process on the job's own supernetwork (same budget and seed), and
dominance checked pair by pair.
"""
import time

import pytest
import torch

from snnet import api
from snnet.errors import SnnetError
from snnet.evolve import Supernet
from snnet.evolve.search import search, top1_error
from snnet.families.recombined import mini_vit_resnet
from snnet.store import Store

TRAIN = TASK = {"steps": 3}  # short stitch trainings: these tests check the plumbing, not the offspring


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store.sqlite")


def _follow(store, job_id, until, timeout_s=300.0) -> list[dict]:
    """The search as a page polling it would see it, until `until(job)` holds: one record per change."""
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        search_now = api.evolve_search(job_id, store)
        if not seen or (len(search_now["points"]), search_now["status"]) != (len(seen[-1]["points"]), seen[-1]["status"]):
            seen.append(search_now)
        if until(search_now):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"search {job_id} still {seen[-1]['status']} ({seen[-1]['stage']}) after {timeout_s} s")


@pytest.mark.slow
def test_a_search_job_writes_each_network_as_measured_and_ends_with_the_searchs_own_counts(store):
    job_id = api.submit_evolve(6, seed=1, algorithm="nsga2", train=TRAIN, task=TASK, store=store)
    seen = _follow(store, job_id, lambda job: job["status"] not in ("queued", "running"))
    job = seen[-1]
    assert job["status"] == "done", job["message"]
    result, points = job["result"], job["points"]
    # the page saw the search grow one network at a time while the job ran
    running = [len(s["points"]) for s in seen if s["status"] == "running"]
    assert len(set(running)) >= 3 and running == sorted(running)
    assert [p["is_parent"] for p in points[:3]] == [True] * 3 and not any(p["is_parent"] for p in points[3:])
    assert len(points) == 3 + result["evaluations"]
    assert result["requests"] == 6 and result["evaluations"] + result["skipped_inactive"] == 6

    # the same search here, on the supernetwork the job prepared: the same networks, counts and front
    net = api.load_supernet(job["spec"])
    heard = []
    task = net.family.task
    direct = search(net, *task.eval_set(net.family, "val"), budget=6, seed=1, algorithm="nsga2", on_evaluated=heard.append)
    assert [(list(e.genotype), e.error, e.gmacs, e.is_parent) for e in heard] == \
        [(p["genotype"], p["error"], p["gmacs"], p["is_parent"]) for p in points]
    for count in ("requests", "evaluations", "skipped_inactive"):
        assert result[count] == direct[count]
    assert result["front"] == direct["front"]
    assert result["parent_names"] == list(net.family.anchor_names)
    # the front rule of the page is the search's, and the front was checked on the test split
    roles = api.evolve_roles(points)
    assert {tuple(r["genotype"]) for r in roles if r["on_front"]} == {tuple(e["genotype"]) for e in result["front"]}
    test_set = task.eval_set(net.family, "test")
    stored = {tuple(p["genotype"]): p["test_error"] for p in points}
    for entry in result["test_front"]:
        assert entry["error"] == stored[tuple(entry["genotype"])] == top1_error(net, entry["genotype"], *test_set)
    off_front = next(p for p in points if tuple(p["genotype"]) not in {tuple(e["genotype"]) for e in result["front"]})
    assert stored[tuple(off_front["genotype"])] is None  # measured on test only when a page asks
    assert api.offspring_test_error(net, job_id, off_front["genotype"], store) == top1_error(net, off_front["genotype"], *test_set)
    assert api.evolve_search(job_id, store)["points"][points.index(off_front)]["test_error"] is not None


@pytest.mark.slow
def test_a_running_search_stops_when_cancelled(store):
    job_id = api.submit_evolve(300, seed=0, algorithm="random", train=TRAIN, task=TASK, store=store)
    _follow(store, job_id, lambda job: len(job["points"]) >= 5)  # the parents and two offspring
    api.cancel_job(job_id, store)
    job = _follow(store, job_id, lambda job: job["status"] not in ("queued", "running"), timeout_s=60)[-1]
    assert job["status"] == "cancelled"
    stopped = len(job["points"])
    assert stopped < 3 + 300
    time.sleep(1.0)
    assert len(api.evolve_search(job_id, store)["points"]) == stopped  # nothing measured after the cancel
    assert api.evolve_searches(store)[0]["id"] == job_id


@pytest.mark.parametrize("arguments, message", [
    (dict(evaluations=0), "the evaluation budget must be a whole number of at least 1, got 0"),
    (dict(evaluations=5, algorithm="grid"), "unknown search algorithm 'grid': choose from nsga2, random"),
    (dict(evaluations=5, preset="huge"), "unknown preset 'huge': choose from mini"),
    (dict(evaluations=5, train={"epochs": 2}), "stitch training has no setting(s) epochs: choose from"),
    (dict(evaluations=5, task={"steps": -1}), "training on the task needs steps >= 0 and batch size >= 1, got -1"),
])
def test_bad_search_requests_are_one_line_and_queue_nothing(store, arguments, message):
    with pytest.raises(SnnetError) as error:
        api.submit_evolve(store=store, **arguments)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert store.list_jobs() == []


def _point(genotype, error, gmacs, is_parent=False) -> dict:
    return {"genotype": list(genotype), "error": error, "gmacs": gmacs, "is_parent": is_parent, "test_error": None}


def test_roles_mark_the_parents_the_front_and_the_offspring_that_beat_a_parent_or_reach_a_new_trade_off():
    points = [_point((0, 0, 0), 10.0, 1.0, True), _point((0, 0, 1), 20.0, 0.5, True), _point((0, 0, 2), 8.0, 1.5, True),
              _point((1, 0, 1), 15.0, 0.4),  # beats parent B on both
              _point((1, 0, 0), 5.0, 2.0),  # more accurate and costlier than both: neither parent has it
              _point((0, 1, 0), 25.0, 1.5),  # dominated by both
              _point((1, 1, 1), 20.0, 0.5)]  # ties parent B: dominates nothing, and B does not dominate it
    rows = {tuple(r["genotype"]): r for r in api.evolve_roles(points)}
    assert [rows[tuple(p["genotype"])]["role"] for p in points[:3]] == ["parent A", "parent B", "ensemble"]
    assert {g for g, r in rows.items() if r["dominates_parent"]} == {(1, 0, 1)}
    assert {g for g, r in rows.items() if r["new_tradeoff"]} == {(1, 0, 1), (1, 0, 0), (1, 1, 1)}
    assert {g for g, r in rows.items() if r["on_front"]} == {(1, 0, 1), (0, 0, 0), (0, 0, 2), (1, 0, 0)}
    assert not any(rows[tuple(p["genotype"])]["dominates_parent"] or rows[tuple(p["genotype"])]["new_tradeoff"]
                   for p in points[:3])


def test_the_callback_hears_the_parents_then_each_new_network_once():
    torch.manual_seed(0)
    net = Supernet.from_family(mini_vit_resnet(), ((3, 1), (6, 2), (9, 3))).eval()
    images = torch.randn(24, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    labels = torch.arange(24) % 10
    heard = []
    result = search(net, images, labels, budget=25, seed=0, algorithm="random", on_evaluated=heard.append)
    assert [e.is_parent for e in heard[:3]] == [True] * 3 and not any(e.is_parent for e in heard[3:])
    assert len(heard) == 3 + result["evaluations"] == len({e.genotype for e in heard})
    assert result["skipped_inactive"] > 0  # the random genotypes repeated some networks, and were not heard twice


def test_the_store_keeps_a_searchs_points_in_order_and_a_resumed_search_starts_over(store):
    job_id = store.add_job("evolve", "evolve:mini", "cpu", {})
    store.add_evolve_point(job_id, [0, 0, 1], 12.5, 0.004, True)
    store.add_evolve_point(job_id, [1, 0, 0], 11.0, 0.006, False)
    store.set_evolve_test_error(job_id, [1, 0, 0], 13.0)
    assert store.get_evolve_points(job_id) == [
        {"genotype": [0, 0, 1], "error": 12.5, "gmacs": 0.004, "is_parent": True, "test_error": None},
        {"genotype": [1, 0, 0], "error": 11.0, "gmacs": 0.006, "is_parent": False, "test_error": 13.0}]
    assert store.get_evolve_points(job_id + 1) == []
    store.clear_evolve_points(job_id)
    assert store.get_evolve_points(job_id) == []
