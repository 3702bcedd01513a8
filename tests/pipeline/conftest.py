"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """The test machine's cores are shared; one thread is faster than fighting for two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
