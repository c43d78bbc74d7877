"""Reading `.pt`/`.pth` files safely: weights only, never arbitrary pickled objects.

A torch file is a pickle, and unpickling can run any code the file's author chose. Every
torch file this package reads (checkpoint state, VGG19 and Inception weights) goes through
`load_weights_only`, i.e. `torch.load(weights_only=True)`: tensors, numbers, strings and
dicts/lists/tuples of them load; a file naming any other Python object is refused with one
line that says why, instead of torch's multi-paragraph advice to turn the protection off.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch

from counterfeit.errors import InputFileError

WEIGHTS_ONLY_HINT = "only weights-only torch files (tensors, numbers and strings in dicts/lists) are accepted"


def load_weights_only(path: str | os.PathLike, map_location: Any = "cpu",
                      failure: str = "refused or unreadable torch file") -> Any:
    """`torch.load(path, weights_only=True)`; else InputFileError "<path>: <failure> (<why>)" on one line."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            why = (f"a pickled Python object ({found.group(1)}) is not allowed: {WEIGHTS_ONLY_HINT}, "
                   "as unpickling objects can run code")
        else:
            why = f"corrupt, or not weights only: {WEIGHTS_ONLY_HINT}"
        raise InputFileError(path, f"{failure} ({why})") from None
    except Exception as err:  # zip, EOF and storage errors of damaged files
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise InputFileError(path, f"{failure} ({type(err).__name__}: {first})") from None
