"""Count multiply-accumulates of a model's conv and linear layers (for achieved GFLOP/s = 2 * MACs / s)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # Every input element is scattered through a (C_out / groups) x kernel slice of the weights.
        return inp.numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        # Every output element is a dot product over (C_in / groups) x kernel inputs.
        return out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return out.numel() * module.in_features  # nn.Linear


def conv_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of all Conv*/ConvTranspose*/Linear layers for one forward pass.

    `input_shape` includes the batch dimension, e.g. (1, 1, 256, 256) or (1, 100) for a noise
    vector. Biases, norms and activations are not counted. Runs one no-grad forward pass in eval
    mode on a zero tensor of the model's device/dtype, then restores the training mode.
    """
    total = 0

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, args[0], out)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    param = next(model.parameters(), None)
    like = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    x = torch.zeros(tuple(input_shape), **like)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
