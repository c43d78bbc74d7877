"""Device selection and reproducible seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from counterfeit.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda[:N]' to a torch.device; 'auto' prefers CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine (use 'auto' or 'cpu')")
        return torch.device(name)
    raise UserError(f"--device must be one of {DEVICES} (or cuda:N), got {name!r}")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so that a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
