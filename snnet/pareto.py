"""Choosing among configurations: the accuracy/cost frontier and the best one under a budget.

Rows are the dicts of `snnet.api.results` (id, gmacs, top1, latency_ms, ...); rows without a
measured top-1 take no part. This is SN-Net's run-time adaptation: when the budget changes, the
network switches to another configuration, with no retraining and no reloading.
"""
from typing import Optional

from snnet.errors import SnnetError

BUDGET_KEYS = {"gmacs": "GMACs", "latency_ms": "ms"}


def pareto_front(rows: list[dict], cost: str = "gmacs") -> list[dict]:
    """Rows no other row beats on both cost and top-1, cheapest first."""
    measured = sorted((r for r in rows if r.get("top1") is not None and r.get(cost) is not None),
                      key=lambda r: (r[cost], -r["top1"]))
    front, best = [], float("-inf")
    for row in measured:
        if row["top1"] > best:
            front.append(row)
            best = row["top1"]
    return front


def best_under_budget(rows: list[dict], budget: float, cost: str = "gmacs") -> Optional[dict]:
    """The most accurate row costing at most `budget` (the cheaper one on a tie); None if none fits."""
    if cost not in BUDGET_KEYS:
        raise SnnetError(f"a budget is in {' or '.join(BUDGET_KEYS)}, not {cost!r}")
    fitting = [r for r in rows if r.get("top1") is not None and r.get(cost) is not None and r[cost] <= budget]
    return max(fitting, key=lambda r: (r["top1"], -r[cost]), default=None)
