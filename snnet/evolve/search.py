"""Search a supernetwork's offspring for the best trade-offs of error and cost.

Two objectives, both minimised: error (100 - top-1 %, on an evaluation set) and GMACs (exact, of
what the offspring runs). NSGA-II (pymoo) searches genotypes under a budget of requests; random
search with the same budget and seed is its baseline. Many genotypes run the same network (a switch
no trace reads changes nothing), so evaluations are cached by the supernetwork's active key: a
request whose key was seen costs nothing. Requests are answered a generation at a time: the new keys
among them go out at once, to worker processes or a Dask cluster where asked (snnet.evolve.parallel),
and the answers, the counts and so the search are the same wherever they ran. The result is the
non-dominated set of everything evaluated, the parents and their ensemble included (they are always
evaluated, outside the budget).
"""
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from snnet.errors import SnnetError
from snnet.evolve.parallel import Dispatch, dispatcher, in_process
from snnet.evolve.supernet import ENSEMBLE, OUTPUTS, Supernet
from snnet.pareto import pareto_front as front_of_rows

ALGORITHMS = ("nsga2", "random")
GENERATION = 20  # genotypes NSGA-II breeds at a time; random search asks in batches of as many


@dataclass(frozen=True)
class Evaluated:
    genotype: tuple[int, ...]  # an active key: the canonical genotype of what runs
    error: float
    gmacs: float
    is_parent: bool = False

    def json(self) -> dict:
        return {**asdict(self), "genotype": list(self.genotype)}


def parent_genotypes(net: Supernet) -> dict[str, tuple[int, ...]]:
    """Every switch off, and the output A, B or both: the parents and their ensemble."""
    off = (0,) * (net.genome.length - 1)
    return {name: off + (output,) for output, name in enumerate(OUTPUTS)}


@torch.no_grad()
def top1_error(net: Supernet, genotype: Sequence[int], images: torch.Tensor, labels: torch.Tensor,
               batch_size: int = 300) -> float:
    """100 - top-1 accuracy (%) of a genotype's offspring."""
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        correct += int((net.forward_genotype(x.to(device), genotype).argmax(1).cpu() == y).sum())
    return 100.0 - 100.0 * correct / len(labels)


class Scorer:
    """(error, GMACs) of an active key, on one copy of the supernetwork and the evaluation set: what
    a worker holds. Picklable, so that it can be shipped to one."""

    def __init__(self, net: Supernet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 300):
        self.net, self.images, self.labels, self.batch_size = net, images, labels, batch_size
        # the net adds a path to its space when it first meets one: threads sharing a copy (a Dask
        # worker with several threads, or workers inside this process) take turns
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {name: value for name, value in self.__dict__.items() if name != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, key: tuple[int, ...]) -> tuple[float, float]:
        with self._lock:
            return (top1_error(self.net, key, self.images, self.labels, self.batch_size),
                    self.net.offspring_cost(key).gmacs)


class Evaluator:
    """(error, GMACs) of genotypes, cached by active key; counts what the cache saved. Keys are
    scored by `dispatch` (snnet.evolve.parallel.dispatcher), by default here, one after another.

    `on_evaluated` hears of every network measured (the parents first), as its batch comes back, so
    a job can publish a search while it runs; a request answered from the cache is not news."""

    def __init__(self, net: Supernet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 300,
                 dispatch: Optional[Dispatch] = None, on_evaluated: Optional[Callable[[Evaluated], None]] = None):
        self.net = net
        self.dispatch = dispatch or in_process(Scorer(net, images, labels, batch_size))
        self.on_evaluated = on_evaluated
        self.results: dict[tuple[int, ...], Evaluated] = {}
        self.parents = {key: name for name, key in parent_genotypes(net).items()}
        self.requests = 0  # every genotype asked for
        self.skipped_inactive = 0  # requests answered from the cache, or by another request of the batch
        self._evaluate(list(self.parents))

    @property
    def evaluations(self) -> int:
        """Distinct networks evaluated on requests (the parents' own evaluations not counted)."""
        return self.requests - self.skipped_inactive

    def _evaluate(self, keys: list[tuple[int, ...]]) -> None:
        for key, (error, gmacs) in zip(keys, self.dispatch(keys)):
            found = self.results[key] = Evaluated(key, error, gmacs, key in self.parents)
            if self.on_evaluated is not None:
                self.on_evaluated(found)

    def batch(self, genotypes: Sequence[Sequence[int]]) -> list[Evaluated]:
        """Answers to many requests, each new key scored once; the counts are those of asking one by one."""
        keys = [self.net.active_key(genotype) for genotype in genotypes]
        new = [key for key in dict.fromkeys(keys) if key not in self.results]
        self.requests += len(keys)
        self.skipped_inactive += len(keys) - len(new)
        self._evaluate(new)
        return [self.results[key] for key in keys]

    def __call__(self, genotype: Sequence[int]) -> Evaluated:
        return self.batch([genotype])[0]


def pareto_front(entries: Sequence[Evaluated]) -> list[Evaluated]:
    """Entries no other entry beats on both error and cost, cheapest first (snnet.pareto's rule)."""
    rows = [{"gmacs": e.gmacs, "top1": 100.0 - e.error, "entry": e} for e in entries]
    return [row["entry"] for row in front_of_rows(rows)]


def roles(points: Sequence[dict]) -> list[dict]:
    """Each measured network with its role ("parent A", "parent B", "ensemble" or "offspring"),
    whether it is on the Pareto front of everything measured, whether it dominates a parent (no
    worse on error and cost, better on one), and whether no parent dominates it (a trade-off
    neither parent has)."""
    def role(point: dict) -> str:
        if not point["is_parent"]:
            return "offspring"
        output = point["genotype"][-1]  # a parent's switches are all off: its output says which it is
        return OUTPUTS[output] if output == ENSEMBLE else f"parent {OUTPUTS[output]}"

    def dominates(a: dict, b: dict) -> bool:
        return a["error"] <= b["error"] and a["gmacs"] <= b["gmacs"] and (a["error"], a["gmacs"]) != (b["error"], b["gmacs"])

    rows = [{**point, "role": role(point), "top1": 100.0 - point["error"]} for point in points]
    parents = [row for row in rows if row["role"].startswith("parent")]
    front = {tuple(row["genotype"]) for row in front_of_rows(rows)}
    for row in rows:
        row["on_front"] = tuple(row["genotype"]) in front
        offspring = row["role"] == "offspring"
        row["dominates_parent"] = offspring and any(dominates(row, parent) for parent in parents)
        row["new_tradeoff"] = offspring and bool(parents) and not any(dominates(parent, row) for parent in parents)
    return rows


def random_search(evaluator: Evaluator, budget: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    length = evaluator.net.genome.length
    genotypes = [tuple(int(g) for g in rng.integers(0, 2, length - 1)) + (int(rng.integers(0, len(OUTPUTS))),)
                 for _ in range(budget)]
    for start in range(0, budget, GENERATION):
        evaluator.batch(genotypes[start:start + GENERATION])


def nsga2_search(evaluator: Evaluator, budget: int, seed: int, pop_size: int = GENERATION) -> None:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    length = evaluator.net.genome.length

    class Offspring(Problem):
        def __init__(self):
            upper = np.array([1] * (length - 1) + [len(OUTPUTS) - 1])
            super().__init__(n_var=length, n_obj=2, xl=np.zeros(length), xu=upper, vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            # a whole generation at once, so that its new keys are scored side by side
            found = evaluator.batch([tuple(int(g) for g in np.round(row)) for row in x])
            out["F"] = np.array([[entry.error, entry.gmacs] for entry in found])

    pop_size = max(2, min(pop_size, budget))
    algorithm = NSGA2(pop_size=pop_size, n_offsprings=pop_size, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                      mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algorithm.setup(Offspring(), termination=("n_eval", budget), seed=seed, verbose=False)
    # ask and tell, so that the last generation is cut to what is left of the budget
    while algorithm.has_next() and evaluator.requests < budget:
        infills = algorithm.ask()
        if infills is None or len(infills) == 0:  # no new genotype was found: the space is spent
            break
        infills = infills[: budget - evaluator.requests]
        algorithm.evaluator.eval(algorithm.problem, infills)
        algorithm.tell(infills=infills)


def search(net: Supernet, images: torch.Tensor, labels: torch.Tensor, budget: int, seed: int = 0,
           algorithm: str = "nsga2", test_set: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
           batch_size: int = 300, workers: int = 1, scheduler: Optional[str] = None,
           on_evaluated: Optional[Callable[[Evaluated], None]] = None) -> dict:
    """Search the offspring of `net` on (images, labels); returns the front and the counts, and with
    `test_set` the front's entries evaluated again there (how well the choice generalises).
    Evaluations run here (workers=1), in `workers` local processes, or on the Dask cluster whose
    scheduler is at `scheduler`; the result is the same. `on_evaluated` is called with each network
    measured (see Evaluator)."""
    if algorithm not in ALGORITHMS:
        raise SnnetError(f"unknown search algorithm {algorithm!r}: choose from {', '.join(ALGORITHMS)}")
    if budget < 1:
        raise SnnetError(f"the evaluation budget must be at least 1, got {budget}")
    started = time.perf_counter()
    with dispatcher(Scorer(net, images, labels, batch_size), workers, scheduler) as dispatch:
        evaluator = Evaluator(net, images, labels, batch_size, dispatch, on_evaluated)
        (nsga2_search if algorithm == "nsga2" else random_search)(evaluator, budget, seed)
    front = pareto_front(list(evaluator.results.values()))
    by_name = {name: evaluator.results[key] for name, key in parent_genotypes(net).items()}
    standing = {tuple(row["genotype"]): row for row in roles([entry.json() for entry in evaluator.results.values()])}
    result = {
        "algorithm": algorithm, "budget": budget, "seed": seed,
        "parents": [{"name": net.family.anchor_names[i], "error": by_name[name].error, "gmacs": by_name[name].gmacs}
                    for i, name in enumerate(OUTPUTS[:2])],
        "ensemble": {"error": by_name["ensemble"].error, "gmacs": by_name["ensemble"].gmacs},
        "front": [entry.json() for entry in front],
        "requests": evaluator.requests,
        "evaluations": evaluator.evaluations,
        "skipped_inactive": evaluator.skipped_inactive,
        # offspring on the front that dominate a parent, and those no parent dominates (new trade-offs)
        "dominates_parent": [list(e.genotype) for e in front if standing[e.genotype]["dominates_parent"]],
        "no_parent_dominates": [list(e.genotype) for e in front if standing[e.genotype]["new_tradeoff"]],
        "search_s": time.perf_counter() - started,
    }
    if test_set is not None:
        result["test_front"] = [{**entry.json(), "error": top1_error(net, entry.genotype, *test_set, batch_size)}
                                for entry in front]
    return result
