import pytest
import torch

from snnet.families import get_family


@pytest.fixture(scope="session")
def mini():
    return get_family("mini")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # lets a fixture's teardown see whether its test failed (tests/test_browser.py takes a screenshot)
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
