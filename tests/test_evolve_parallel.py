"""The search's evaluations in worker processes and on a Dask cluster.

Oracle: the same search in this process, one evaluation after another (the search before evaluations
ran in parallel): for one seed, every backend gives the same front, evaluations and skipped counts.
"""
import pytest
import torch

from snnet.errors import SnnetError
from snnet.evolve import Supernet
from snnet.evolve.search import search
from snnet.families.recombined import mini_vit_resnet
from snnet.stitching import least_squares_init

RUNS = [("nsga2", 30, 0), ("random", 30, 1)]  # (algorithm, budget, seed)


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(3)
    family = mini_vit_resnet()
    anchors = [family.build_anchor(i).eval() for i in range(2)]
    with torch.no_grad():  # non-trivial values everywhere (timm starts some heads and scales near zero)
        for p in (p for anchor in anchors for p in anchor.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    net = Supernet(family, anchors, ((3, 1), (6, 2), (9, 3))).eval()
    least_squares_init(net, [torch.randn(16, *family.input_size, generator=torch.Generator().manual_seed(1))])
    images = torch.randn(48, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():  # labels the two parents disagree on now and then: errors tell networks apart
        labels = (net.anchors[0](images) + 0.5 * net.anchors[1](images)).argmax(1)
    return net, images, labels


def _runs(problem, **where) -> list[dict]:
    net, images, labels = problem
    results = [search(net, images, labels, budget=budget, seed=seed, algorithm=algorithm, **where)
               for algorithm, budget, seed in RUNS]
    for result in results:
        del result["search_s"]
    return results


@pytest.fixture(scope="module")
def in_process(problem):
    results = _runs(problem)
    assert all(r["skipped_inactive"] > 0 and r["evaluations"] + r["skipped_inactive"] == 30 for r in results)
    return results


@pytest.mark.slow  # the pool's fork server imports torch and snnet first
def test_worker_processes_give_the_in_process_search(problem, in_process):
    assert _runs(problem, workers=2) == in_process


@pytest.mark.parametrize("processes", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_local_dask_cluster_gives_the_in_process_search(problem, in_process, processes):
    from distributed import LocalCluster

    # over TCP even with the workers in this process, so that what they get is a copy sent once
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert _runs(problem, scheduler=cluster.scheduler_address) == in_process
        # the search took its copy of the supernetwork off the workers when it ended
        with cluster.get_client() as client:
            plugins = client.run(lambda dask_worker: list(dask_worker.plugins))
        assert len(plugins) == 2 and not any(name.startswith("snnet") for names in plugins.values() for name in names)


def test_a_bad_scheduler_address_fails_in_one_line(problem, monkeypatch, capsys):
    from snnet.cli import main
    from snnet.evolve import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 0.5)
    net, images, labels = problem
    for address in ("tcp://127.0.0.1:1", "no-port-given"):
        with pytest.raises(SnnetError, match=f"cannot reach the Dask scheduler at '{address}'") as error:
            search(net, images, labels, budget=5, scheduler=address)
        assert "\n" not in str(error.value)
    # the command says it in one line, before any supernetwork is prepared
    monkeypatch.setattr("snnet.evolve.presets.run_preset", lambda *args, **kwargs: pytest.fail("prepared"))
    assert main(["evolve", "--evaluations", "5", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_workers_are_a_whole_number_and_exclude_a_scheduler(problem):
    net, images, labels = problem
    with pytest.raises(SnnetError, match="at least 1"):
        search(net, images, labels, budget=5, workers=0)
    with pytest.raises(SnnetError, match="not both"):
        search(net, images, labels, budget=5, workers=2, scheduler="tcp://127.0.0.1:8786")
