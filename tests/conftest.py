import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from snnet.families import get_family


@pytest.fixture(scope="session")
def mini():
    return get_family("mini")


@pytest.fixture(scope="session", autouse=True)
def _own_store(tmp_path_factory):
    """The suite never reads or writes the user's store (~/.cache/snnet): tests that need a store
    of their own still set SNNET_HOME themselves."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SNNET_HOME", str(tmp_path_factory.mktemp("snnet_home")))
        yield


def _workers_under(root: Path) -> list[int]:
    """Job workers (`python -m snnet job --store STORE ...`) whose store lies under `root`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            args = [arg.decode() for arg in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:  # it ended meanwhile
            continue
        if "snnet" in args and "job" in args and "--store" in args[:-1]:
            if args[args.index("--store") + 1].startswith(str(root)):
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _no_stray_workers(tmp_path_factory):
    """A job a test queued and left (a worker starts the next queued job when its own ends) must
    not go on training beside later tests: on two cores it starved the load test. Only workers of
    the suite's own stores are stopped."""
    yield
    for pid in _workers_under(tmp_path_factory.getbasetemp()):
        try:
            os.kill(pid, signal.SIGKILL)
            print(f"stopped a job worker the test left running (pid {pid})", file=sys.stderr)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # lets a fixture's teardown see whether its test failed (tests/test_browser.py takes a screenshot)
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
