"""One intra-op thread for this area's tests: the models are tiny, so on a busy 2-core machine OpenMP's
spinning threads cost far more (10-50x per step) than they save."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one torch thread (the shared ``one_thread`` fixture)."""
