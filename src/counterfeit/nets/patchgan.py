"""PatchGAN discriminator of pix2pix / CycleGAN: one real-vs-fake score per overlapping input patch."""

from __future__ import annotations

import torch
from torch import nn

from counterfeit.nets.init import init_weights
from counterfeit.nets.norm import conv_bias, make_norm
from counterfeit.nets.shapes import check_image_batch
from counterfeit.nets.thin_conv import ThinOutputConv2d

KERNEL = 4
PADDING = 1


def conv_strides(n_layers: int) -> list[int]:
    """Strides of the discriminator's 4x4 convs in order: n_layers stride-2, then two stride-1."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return [2] * n_layers + [1, 1]


def receptive_field(n_layers: int = 3) -> int:
    """Side length in input pixels seen by one output score (70 for n_layers=3).

    Walks the conv stack from the output back: a field of r units after a layer with kernel k and
    stride s covers (r - 1) * s + k units before it.
    """
    r = 1
    for stride in reversed(conv_strides(n_layers)):
        r = (r - 1) * stride + KERNEL
    return r


def min_input_size(n_layers: int = 3) -> int:
    """Smallest input side that still yields at least one output score."""
    size = 1
    while True:
        out = size
        for stride in conv_strides(n_layers):
            out = (out + 2 * PADDING - KERNEL) // stride + 1
            if out < 1:
                break
        if out >= 1:
            return size
        size += 1


class PatchDiscriminator(nn.Module):
    """C64 (no norm) - C128 - C256 - C512 (stride 1) - 1-channel conv, LeakyReLU(0.2), 4x4 kernels.

    Returns raw scores (B, 1, H', W'), no sigmoid: the loss decides (least squares for CycleGAN,
    BCE-with-logits for pix2pix). With n_layers=3 each score sees a 70x70 input patch.
    """

    def __init__(self, in_channels: int = 1, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        strides = conv_strides(n_layers)
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, KERNEL, stride=strides[0], padding=PADDING),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        # Channel multiplier doubles per layer up to 8 (reference: nf_mult = min(2**n, 8)).
        for n, stride in enumerate(strides[1:-1], start=1):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, KERNEL, stride=stride, padding=PADDING, bias=bias),
                make_norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(ThinOutputConv2d(ndf * mult, KERNEL, padding=PADDING))  # the score map; strides[-1] is 1
        self.model = nn.Sequential(*layers)
        self.n_layers = n_layers
        self.in_channels = in_channels
        init_weights(self)

    @property
    def receptive_field(self) -> int:
        """Patch side length seen by one output score."""
        return receptive_field(self.n_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        min_size = min_input_size(self.n_layers)
        check_image_batch(x, self.in_channels, multiple=1, min_size=min_size, network="PatchDiscriminator")
        return self.model(x)
