import pytest
import torch

from snnet.families import get_family


@pytest.fixture(scope="session")
def mini():
    return get_family("mini")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
