"""One CPU thread for small models, every thread for large ones; the count is restored."""

import pytest
import torch
from torch import nn

from landscape.threads import single_thread, small_model_threads


@pytest.fixture
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_small_model_runs_on_one_thread_and_restores_the_count(two_threads):
    with small_model_threads(nn.Linear(10, 10)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_large_model_keeps_every_thread(two_threads):
    with small_model_threads(nn.Linear(10, 10), limit=100):  # 110 parameters
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


def test_single_thread_restores_the_count_after_an_error(two_threads):
    with pytest.raises(RuntimeError), single_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError("stop")
    assert torch.get_num_threads() == 2
