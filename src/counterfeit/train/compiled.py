"""Optional `torch.compile` of a recipe's networks for training (`--compile`).

`torch.compile(net)` returns a wrapper whose state_dict keys gain an `_orig_mod.` prefix, and
recipes, checkpoints and inference all expect the plain modules. So each network keeps its
identity: only its `forward` is routed through a compiled copy, and only while it trains with
gradients. Evaluation, sample pictures and inference (eval mode or no_grad) stay eager, so
they neither trigger recompiles nor pay a compile. `restore` puts the eager forwards back.

On a CPU the first step costs a compile of about a minute per network (inductor generates
and builds C++; seconds when its on-disk cache already holds the graphs). The steps after it
were ~4 % faster for the paper-size generator and 7-11 % for the default CycleGAN step in
benchmarks/train_speed.py: the convolutions run in the same oneDNN kernels either way, and
only the small ops around them get fused (see docs/performance.md).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


def compile_for_training(nets: dict[str, nn.Module], backend: str | Callable = "inductor") -> Callable[[], None]:
    """Route each network's training-mode forward through `torch.compile`; return a function undoing it."""
    originals: dict[str, Any] = {}
    for name, net in nets.items():
        originals[name] = net.__dict__.get("forward")  # normally absent: forward comes from the class
        eager = net.forward
        compiled = torch.compile(eager, backend=backend)

        def forward(*args: Any, _net: nn.Module = net, _eager: Any = eager, _compiled: Any = compiled,
                    **kwargs: Any) -> Any:
            if _net.training and torch.is_grad_enabled():
                return _compiled(*args, **kwargs)
            return _eager(*args, **kwargs)

        net.forward = forward  # an instance attribute: the module, its class and its state_dict are unchanged

    def restore() -> None:
        for name, net in nets.items():
            if originals[name] is None:
                net.__dict__.pop("forward", None)
            else:
                net.forward = originals[name]

    return restore
