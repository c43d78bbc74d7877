"""Cascaded Refinement Network (Chen & Koltun 2017): a semantic layout in, k images out.

A cascade of refinement modules M_0 ... M_{n-1}. M_0 works at the base resolution (4x8 in
the paper; any base, so any aspect ratio), each next module at twice the previous one's.
Module i's input is the bilinearly upsampled output of module i-1 concatenated with the
layout downsampled to module i's resolution (M_0 sees the layout alone). Each module is
two 3x3 convolutions, each followed by layer normalisation and LeakyReLU(0.2). A final
1x1 convolution maps the last features to k*C channels: k candidate images.

Details follow the released code (github.com/CQFIO/PhotographicImageSynthesis):
- the layout is downsampled by area averaging (`tf.image.resize_area`), so a coarse pixel
  holds the fractions of the classes it covers (one-hot at full resolution);
- upsampling is bilinear with aligned corners (`resize_bilinear(align_corners=True)`);
- layer norm normalises over (C, H, W) with a per-channel scale and shift (slim.layer_norm),
  i.e. GroupNorm(1, C); the convolutions before it carry no bias;
- weights start Xavier-uniform (slim's default), norms at scale 1 / shift 0;
- the output is linear (no tanh): the code maps it with (x + 1) / 2 * 255, so [-1, 1] is
  the nominal image range here too.
Paper widths are 1024 up to 64x128, 512 at 128x256 and 256x512, then 128 and 32 at 512x1024
and 1024x2048; `default_widths` is a CPU-sized version of that taper.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from counterfeit.errors import UserError
from counterfeit.nets.norm import make_norm
from counterfeit.nets.shapes import check_image_batch


def cascade_sizes(height: int, width: int, base_height: int = 4) -> list[tuple[int, int]]:
    """Resolutions of the modules for a height x width output whose first module is base_height tall.

    height / base_height must be a power of two and width divisible by the same factor:
    64x128 with base 4 -> [(4, 8), (8, 16), (16, 32), (32, 64), (64, 128)].
    """
    if base_height < 1 or height < base_height:
        raise UserError(f"CRN: need height >= base height >= 1, got height {height}, base {base_height}")
    factor = height // base_height
    if height % base_height or factor & (factor - 1):
        raise UserError(f"CRN: height {height} must be the base height {base_height} times a power of two "
                        f"(e.g. {base_height * 2 ** max(0, round(math.log2(height / base_height)))})")
    if width % factor:
        raise UserError(f"CRN: width {width} must be divisible by {factor} (= height / base height), "
                        f"e.g. {factor * max(1, round(width / factor))}")
    n = factor.bit_length()  # factor = 2^(n-1)
    return [(height >> (n - 1 - i), (width // factor) << i) for i in range(n)]


def default_widths(sizes: Sequence[tuple[int, int]], top: int = 256, floor: int = 32) -> tuple[int, ...]:
    """Feature widths per module: `top` up to 16 rows, then halved per doubling (never below `floor`).

    Keeps the cost per module roughly constant, like the paper's taper (1024 ... 512 ... 32),
    at a size a CPU can train: 64x128 -> (256, 256, 256, 128, 64).
    """
    return tuple(max(floor, top >> max(0, int(math.log2(max(h, 1))) - 4)) for h, _ in sizes)


class RefinementModule(nn.Module):
    """Two (3x3 conv -> layer norm -> LeakyReLU(0.2)) layers at one resolution."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            make_norm("layer", out_channels),
            nn.LeakyReLU(negative_slope),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            make_norm("layer", out_channels),
            nn.LeakyReLU(negative_slope),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CascadedRefinementNetwork(nn.Module):
    """Layout (B, num_classes, H, W) -> k images (B, k, out_channels, H, W), nominally in [-1, 1].

    `widths[i]` is module i's feature width; there are len(widths) modules, so the network
    upsamples 2^(len(widths)-1) times from its base resolution. Any H, W divisible by that
    factor work (fully convolutional); `height`/`width` record the training size.
    """

    def __init__(self, num_classes: int, out_channels: int = 3, k: int = 1, widths: Sequence[int] = (256, 256, 256, 128, 64),
                 height: int = 64, width: int = 128) -> None:
        super().__init__()
        if num_classes < 1 or out_channels < 1 or k < 1:
            raise UserError(f"CRN: num_classes, out_channels and k must be >= 1, got {num_classes}, {out_channels}, {k}")
        if not widths or min(widths) < 1:
            raise UserError(f"CRN: widths must be a non-empty list of positive ints, got {list(widths)}")
        self.num_classes, self.out_channels, self.k = num_classes, out_channels, k
        self.widths = tuple(int(w) for w in widths)
        self.height, self.width = height, width
        modules, prev = [], 0
        for w in self.widths:
            modules.append(RefinementModule(prev + num_classes, w))
            prev = w
        self.stages = nn.ModuleList(modules)
        self.to_image = nn.Conv2d(prev, k * out_channels, 1)
        self._init()

    @property
    def factor(self) -> int:
        """Upsampling factor from the first module to the output."""
        return 2 ** (len(self.widths) - 1)

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def layout_pyramid(self, layout: torch.Tensor) -> list[torch.Tensor]:
        """The layout at every module's resolution, coarsest first (area averages of the one-hot map)."""
        pyramid = [layout]
        for _ in range(len(self.widths) - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        return pyramid[::-1]

    def forward(self, layout: torch.Tensor, return_sizes: bool = False):
        check_image_batch(layout, self.num_classes, multiple=self.factor, network="CascadedRefinementNetwork")
        features: torch.Tensor | None = None
        sizes = []
        for module, lay in zip(self.stages, self.layout_pyramid(layout)):
            if features is None:
                x = lay
            else:
                up = F.interpolate(features, size=lay.shape[-2:], mode="bilinear", align_corners=True)
                x = torch.cat([up, lay], dim=1)
            features = module(x)
            sizes.append(tuple(features.shape[-2:]))
        out = self.to_image(features)
        b, _, h, w = out.shape
        out = out.view(b, self.k, self.out_channels, h, w)
        return (out, sizes) if return_sizes else out


__all__ = ["CascadedRefinementNetwork", "RefinementModule", "cascade_sizes", "default_widths"]
