"""Fully connected network for the 2D toy GAN: generator z -> x and discriminator x -> logit."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("relu", "leaky_relu", "tanh")


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


class MLP(nn.Module):
    """`depth` Linear layers (depth - 1 hidden layers of width `hidden`), activation between them.

    The output is linear (raw points for a generator, a raw logit for a discriminator), so the loss
    or the caller decides any squashing. Weights keep PyTorch's default init: the N(0, 0.02) image
    convention would shrink a small MLP's initial outputs to nearly zero.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3, activation: str = "relu") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth (number of linear layers) must be >= 1, got {depth}")
        if hidden < 1 or in_dim < 1 or out_dim < 1:
            raise ValueError(f"in_dim, out_dim and hidden must be >= 1, got {in_dim}, {out_dim}, {hidden}")
        _activation(activation)  # validate even when depth == 1
        widths = [in_dim] + [hidden] * (depth - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i > 0:
                layers.append(_activation(activation))
            layers.append(nn.Linear(a, b))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
