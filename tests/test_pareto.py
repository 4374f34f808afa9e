import random

import pytest

from snnet.errors import SnnetError
from snnet.pareto import best_under_budget, pareto_front


def _rows(seed: int, count: int = 60) -> list[dict]:
    rng = random.Random(seed)
    rows = [{"id": i, "gmacs": round(rng.uniform(0.1, 5), 1), "latency_ms": rng.uniform(1, 9),
             "top1": round(rng.uniform(40, 90), 0)} for i in range(count)]
    rows.append({"id": count, "gmacs": 1.0, "latency_ms": 1.0, "top1": None})  # not measured: never chosen
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_frontier_holds_exactly_the_rows_nothing_dominates(seed):
    rows = [r for r in _rows(seed) if r["top1"] is not None]

    def dominated(r):
        return any(o["gmacs"] <= r["gmacs"] and o["top1"] >= r["top1"] and (o["gmacs"], o["top1"]) != (r["gmacs"], r["top1"])
                   for o in rows)

    undominated = {(r["gmacs"], r["top1"]) for r in rows if not dominated(r)}
    front = pareto_front(_rows(seed))
    assert {(r["gmacs"], r["top1"]) for r in front} == undominated
    assert [r["gmacs"] for r in front] == sorted(r["gmacs"] for r in front)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cost", ["gmacs", "latency_ms"])
def test_budget_picks_the_most_accurate_row_that_fits(seed, cost):
    rows = _rows(seed)
    for budget in (0.05, 0.5, 2.0, 4.0, 100.0):
        fitting = [r for r in rows if r["top1"] is not None and r[cost] <= budget]
        best = best_under_budget(rows, budget, cost)
        if not fitting:
            assert best is None
            continue
        assert best[cost] <= budget and best["top1"] == max(r["top1"] for r in fitting)
        assert best[cost] == min(r[cost] for r in fitting if r["top1"] == best["top1"])


def test_budget_in_an_unknown_unit_is_one_clear_error():
    with pytest.raises(SnnetError, match="a budget is in gmacs or latency_ms, not 'params_m'"):
        best_under_budget(_rows(0), 1.0, "params_m")
