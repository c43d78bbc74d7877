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


@pytest.fixture
def signal_at_step(monkeypatch):
    """`signal_at_step(RecipeClass, step, signum)`: the recipe's train_step sends this process `signum` as it starts
    `step` (0-based), as Ctrl-C or `docker stop` would; the loop's handler lets the step finish."""
    import os

    def arm(recipe_cls: type, step: int, signum: int) -> None:
        step_once = recipe_cls.train_step

        def train_step(self, batch, at):
            if at == step:
                os.kill(os.getpid(), signum)
            return step_once(self, batch, at)

        monkeypatch.setattr(recipe_cls, "train_step", train_step)

    return arm
