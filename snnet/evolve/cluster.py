"""The search's evaluations on a Dask cluster. Imported only when a scheduler is given, so that snnet
runs without dask's distributed package installed. The workers must be able to import snnet."""
import asyncio
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

import distributed.comm
from distributed import Client, WorkerPlugin
from pymoo.parallelization import DaskParallelization

from snnet.errors import SnnetError
from snnet.evolve.parallel import Dispatch, Key, OnWorker, Scores, hold, release

CONNECT_TIMEOUT_S = 10
WORKERS_TIMEOUT_S = 30


class ScorerPlugin(WorkerPlugin):
    """Gives each worker the scorer once, and drops it when the search ends.

    A plugin rather than a copy scattered with broadcast=True: pymoo's DaskParallelization submits
    f(key) alone, so a task could not name a scattered future as its input, and a plugin also
    reaches workers that join the cluster during the search.
    """

    def __init__(self, token: str, score: Callable[[Key], Scores]):
        self.token, self.score, self.name = token, score, f"snnet-evolve-{token}"

    def setup(self, worker) -> None:
        hold(self.token, self.score)

    def teardown(self, worker) -> None:
        release(self.token)


async def _probe(address: str) -> None:
    comm = await distributed.comm.connect(address, timeout=CONNECT_TIMEOUT_S)
    await comm.close()


def connect(address: str) -> Client:
    """A client of the scheduler at `address` with at least one worker, or one line saying why not."""
    # Probed first: a Client that fails to connect is left half open, and closing it when collected
    # takes 20 s more and prints tracebacks.
    try:
        asyncio.run(_probe(address))
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SnnetError(f"cannot reach the Dask scheduler at {address!r}: {reason}") from None
    client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except TimeoutError:
        client.close()
        raise SnnetError(f"the Dask scheduler at {address!r} has no workers "
                         f"(none joined in {WORKERS_TIMEOUT_S} s)") from None
    return client


@contextmanager
def on_cluster(score: Callable[[Key], Scores], address: str) -> Iterator[Dispatch]:
    client = connect(address)
    plugin = ScorerPlugin(uuid.uuid4().hex, score)
    try:
        client.register_plugin(plugin)
        runner = DaskParallelization(client)
        yield lambda keys: runner(OnWorker(plugin.token), keys)
    finally:
        try:
            client.unregister_worker_plugin(plugin.name)
        finally:
            client.close()
