"""Where the search's evaluations run: in this process, in local worker processes, or on a Dask cluster.

A scorer is a picklable callable from an active key to (error, GMACs) that holds the supernetwork and
the evaluation set. Each worker receives it once, when it starts (local processes) or when it joins
the search (Dask); a task then carries only a key and the token naming the worker's copy. Requests
go out through pymoo's parallelisation interface (`runner(f, keys)` returns `[f(key) ...]`) and come
back in the order they were sent, so whatever runs them, the search sees the same answers in the
same order.
"""
import importlib.util
import multiprocessing
import pickle
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

import torch

from snnet.errors import SnnetError

Key = tuple[int, ...]
Scores = tuple[float, float]  # (error, GMACs)
Dispatch = Callable[[Sequence[Key]], list[Scores]]

_SCORERS: dict[str, Callable[[Key], Scores]] = {}  # a worker process's copies, by token


def hold(token: str, score: Callable[[Key], Scores]) -> None:
    _SCORERS[token] = score


def release(token: str) -> None:
    _SCORERS.pop(token, None)


class OnWorker:
    """The task function: scores a key with the copy the worker was given under `token`."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, key: Key) -> Scores:
        return _SCORERS[self.token](key)


def _load(token: str, pickled_score: bytes, threads: int) -> None:
    torch.set_num_threads(threads)
    hold(token, pickle.loads(pickled_score))


def in_process(score: Callable[[Key], Scores]) -> Dispatch:
    return lambda keys: [score(key) for key in keys]


def _check_options(workers: int, scheduler: Optional[str]) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SnnetError(f"workers must be a whole number of at least 1, got {workers!r}")
    if scheduler is not None and workers != 1:
        raise SnnetError("give a number of local workers or a Dask scheduler, not both")
    if scheduler is not None and importlib.util.find_spec("distributed") is None:
        raise SnnetError("a Dask scheduler needs the distributed package (pip install -r requirements.txt)")


def check(workers: int = 1, scheduler: Optional[str] = None) -> None:
    """Fails in one line now, not after a long preparation, where evaluations could not run as asked."""
    _check_options(workers, scheduler)
    if scheduler is not None:
        from snnet.evolve.cluster import connect

        connect(scheduler).close()


@contextmanager
def dispatcher(score: Callable[[Key], Scores], workers: int = 1, scheduler: Optional[str] = None) -> Iterator[Dispatch]:
    """A function that scores a list of keys: in process (workers=1), in `workers` local processes,
    or on the Dask cluster whose scheduler is at `scheduler`. Workers live as long as the context."""
    _check_options(workers, scheduler)
    if scheduler is not None:
        from snnet.evolve.cluster import on_cluster

        with on_cluster(score, scheduler) as dispatch:
            yield dispatch
    elif workers > 1:
        with _processes(score, workers) as dispatch:
            yield dispatch
    else:
        yield in_process(score)


def _start_method() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    # Not a fork of this process: one whose torch threads have run can hang in its first parallel op.
    # A fork server imports torch and snnet once, then forks each worker from that clean process;
    # a spawned worker imports them again, for seconds, every time.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["snnet.evolve.search"])
    return context


@contextmanager
def _processes(score: Callable[[Key], Scores], workers: int) -> Iterator[Dispatch]:
    from pymoo.parallelization import StarmapParallelization

    token = uuid.uuid4().hex
    # Each process gets its copy once, from the pool's initializer. Pickled here to bytes: passed as
    # they are, tensors would travel through shared memory (torch's multiprocessing pickler), which
    # containers often refuse. The cores are shared out so that the workers together use as many
    # threads as this process would.
    threads = max(1, torch.get_num_threads() // workers)
    with ProcessPoolExecutor(workers, mp_context=_start_method(), initializer=_load,
                             initargs=(token, pickle.dumps(score), threads)) as pool:
        def starmap(f, rows):  # one key per task: an ensemble costs twice a single path, chunks balance badly
            return [future.result() for future in [pool.submit(f, *row) for row in rows]]

        runner = StarmapParallelization(starmap)
        try:
            yield lambda keys: runner(OnWorker(token), keys)
        except BrokenProcessPool as error:
            raise SnnetError(f"a local worker process died: {error}") from None
