"""The recipe: a small object that wires networks, losses, optimisers and data for one kind of training.

The shared loop (`counterfeit.train.loop`) drives any recipe: it owns seeding, the
progress bar, logging, checkpoints, resume, wall-clock budgets, Ctrl-C and
distributed training. A recipe owns only the science of one step.

Data contract: `sample_batch(rng)` must be a pure function of the numpy Generator it
is given (and of the recipe's fixed data). The loop makes that generator from
(seed, step), so resuming at step N replays exactly the batches an uninterrupted run
would have seen, and data-parallel ranks can slice one global batch between them.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from counterfeit.errors import UserError

# Recipe name -> module that defines it (imported lazily so the CLI starts fast).
RECIPE_MODULES: dict[str, str] = {
    "toy": "counterfeit.train.recipes.toy",
    "dcgan": "counterfeit.train.recipes.dcgan",
    "cyclegan": "counterfeit.train.recipes.cyclegan",
    "paired": "counterfeit.train.recipes.paired",
    "crn": "counterfeit.train.recipes.crn",
}
_REGISTRY: dict[str, type["Recipe"]] = {}


def register_recipe(cls: type["Recipe"]) -> type["Recipe"]:
    """Class decorator: make a recipe findable by its `name` (used to rebuild runs from config.json)."""
    _REGISTRY[cls.name] = cls
    return cls


def recipe_class(name: str) -> type["Recipe"]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in RECIPE_MODULES:
        raise UserError(f"unknown recipe {name!r}; choose one of {sorted(RECIPE_MODULES)}")
    if name not in _REGISTRY:
        importlib.import_module(RECIPE_MODULES[name])
    return _REGISTRY[name]


def config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict (e.g. a run's config.json), rejecting unknown keys.

    A key missing from `values` takes the class's `ABSENT_IN_OLD_RUNS` value if it has one (an
    option added after older runs were saved, whose new default would change what those runs
    did), else the field's default.
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{config_cls.__name__}: unknown option(s) {unknown}")
    absent = getattr(config_cls, "ABSENT_IN_OLD_RUNS", {})
    kwargs = {}
    for f in dataclasses.fields(config_cls):
        if f.name in values:
            v = values[f.name]
            # JSON has no tuples: restore them where the default is a tuple.
            default = f.default if f.default is not dataclasses.MISSING else None
            kwargs[f.name] = tuple(v) if isinstance(default, tuple) and isinstance(v, list) else v
        elif f.name in absent:
            kwargs[f.name] = absent[f.name]
    return config_cls(**kwargs)


class Recipe(abc.ABC):
    """Base class of all training recipes.

    Subclasses set `name` and `Config` (a dataclass), build `self.nets`,
    `self.optimizers` and `self.schedulers` in `__init__`, and implement
    `sample_batch` and `train_step`. Schedulers are stepped by the loop once per
    step, after `train_step`.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    # Keys of train_step's result shown on the progress bar (all are logged).
    progress_keys: ClassVar[tuple[str, ...]] = ()
    # What the logged keys (train_step's and metrics') are, in words: the titles of loss.png's panels.
    log_labels: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.checkpoint: Path | None = None  # the checkpoint `load_run` took the weights from (inference)
        self.checkpoint_choice = ""  # and why that one, in words

    # --- data -------------------------------------------------------------
    def setup_data(self) -> None:
        """Load training data. Called by the loop before training, never for inference."""

    @abc.abstractmethod
    def sample_batch(self, rng: np.random.Generator) -> Any:
        """One global training batch (numpy arrays or tensors, batch on axis 0), a pure function of `rng`."""

    # --- one step ---------------------------------------------------------
    @abc.abstractmethod
    def train_step(self, batch: Any, step: int) -> dict[str, float | torch.Tensor]:
        """Forward, backward and optimiser steps for one batch; return scalar losses for logging."""

    # --- optional hooks ---------------------------------------------------
    def metrics(self, step: int) -> dict[str, float]:
        """Evaluation numbers computed every `metrics_every` steps and logged beside the losses."""
        return {}

    def write_samples(self, step: int, out_dir: Path) -> None:
        """Write pictures of the current model (grids, figures) into `out_dir`."""

    @classmethod
    def retotal_config(cls, config: dict[str, Any], old_steps: int, new_steps: int) -> dict[str, Any]:
        """The config (as in config.json) of a run whose step total changes from `old_steps` to `new_steps`
        (`--resume --steps`). Recipes whose learning-rate schedule is planned to end at the total move it;
        the default changes nothing."""
        return config

    def extra_state(self) -> dict[str, Any]:
        """Training state beyond nets/optimisers/schedulers (e.g. an image pool), saved in checkpoints."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    # --- helpers for subclasses ----------------------------------------------
    def train_mode(self, train: bool = True) -> None:
        for net in self.nets.values():
            net.train(train)

    def to_device(self, x: Any) -> Any:
        """Move a batch (arrays, tensors, or nested tuples/lists/dicts of them) to the recipe's device."""
        return to_device(x, self.device)


VALIDATION_MAE = "val_mae_hu"  # the MR->CT recipes' MAE (HU) on held-out cases; `train_mae_hu` is on training ones


def validation_mae(metrics: dict[str, float]) -> tuple[str, float] | None:
    """The metric that selects among checkpoints and candidates, as (key, value): the held-out cases' MAE in HU.
    None when there is none; never the training cases' MAE, which would reward memorising them."""
    return (VALIDATION_MAE, float(metrics[VALIDATION_MAE])) if VALIDATION_MAE in metrics else None


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def shard_batch(x: Any, rank: int, world: int) -> Any:
    """This rank's share of a global batch: rows rank, rank+world, ... of every array (batch on axis 0)."""
    if world == 1:
        return x
    if isinstance(x, (np.ndarray, torch.Tensor)):
        if x.shape[0] % world:
            raise UserError(f"global batch size {x.shape[0]} is not divisible by the {world} processes")
        return x[rank::world]
    if isinstance(x, dict):
        return {k: shard_batch(v, rank, world) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(shard_batch(v, rank, world) for v in x)
    return x
