"""Shared test fixtures."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny networks run fastest, and most repeatably, on one torch thread (far faster on a busy machine).

    Test modules of tiny networks opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
