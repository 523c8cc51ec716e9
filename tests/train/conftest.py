"""One intra-op thread for this area's tests: the models are tiny, so on a busy 2-core machine OpenMP's
spinning threads cost far more (10-50x per step) than they save."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
