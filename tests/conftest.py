"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: CPU reductions split across threads can round differently from run to run on a
    loaded machine, and tests that compare runs bit for bit (or train in a subprocess beside them) need one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
