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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # lets a fixture's teardown see whether its test failed (tests/test_browser.py takes a screenshot)
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
