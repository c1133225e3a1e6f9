"""The losses' tensors are tiny: one thread avoids thread start-up and spin-wait costs on a busy CI host."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
