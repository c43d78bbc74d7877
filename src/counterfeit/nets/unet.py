"""U-Net generator of pix2pix: encoder-decoder with skip connections between mirrored levels."""

from __future__ import annotations

import torch
from torch import nn

from counterfeit.nets.init import init_weights
from counterfeit.nets.norm import conv_bias, make_norm
from counterfeit.nets.shapes import check_image_batch


class UNetLevel(nn.Module):
    """One level: down (4x4 stride-2 conv) -> inner levels -> up (4x4 stride-2 transposed conv).

    Inner levels return cat([x, up(inner(down(x)))]) so the decoder sees the encoder's features
    (the skip); the outermost level returns the tanh image instead.
    """

    def __init__(
        self,
        outer: int,
        inner: int,
        inner_level: nn.Module | None = None,
        *,
        in_channels: int | None = None,
        outermost: bool = False,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        innermost = inner_level is None
        bias = conv_bias(norm)
        down_in = in_channels if in_channels is not None else outer
        down_conv = nn.Conv2d(down_in, inner, 4, stride=2, padding=1, bias=bias)
        up_in = inner if innermost else inner * 2  # the inner level concatenated its skip
        if outermost:
            down = [down_conv]
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1), nn.Tanh()]
        else:
            # No norm right after the innermost conv: its output is 1x1 for the reference sizes.
            down = [nn.LeakyReLU(0.2, True), down_conv] + ([] if innermost else [make_norm(norm, inner)])
            up = [
                nn.ReLU(True),
                nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias),
                make_norm(norm, outer),
            ]
            if dropout > 0:
                up.append(nn.Dropout(dropout))
        middle = [] if innermost else [inner_level]
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UNetGenerator(nn.Module):
    """pix2pix U-Net with `depth` stride-2 levels (depth 8 = unet_256: a 256x256 input reaches 1x1).

    Level i (from the top) has ngf * min(2**i, 8) channels. Encoder: LeakyReLU(0.2) + conv + norm
    (no norm on the first and innermost levels); decoder: ReLU + transposed conv + norm; tanh output.
    `dropout` (default 0, off) goes where the pix2pix code puts it: on the decoder of every level
    except the innermost whose input and output both have 8*ngf channels (these exist for
    depth >= 6). Input height and width must be divisible by 2**depth.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        depth: int = 8,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        channels = [ngf * min(2**i, 8) for i in range(depth)]
        dropout_levels = {i for i in range(1, depth - 1) if channels[i - 1] == channels[i] == ngf * 8}
        if dropout > 0 and not dropout_levels:
            raise ValueError(
                f"dropout sits on the decoder levels between two {ngf * 8}-channel levels (pix2pix), "
                f"which need depth >= 6; got depth={depth}"
            )
        self.in_channels = in_channels
        self.depth = depth
        level: nn.Module | None = None
        for i in range(depth - 1, 0, -1):  # build from the bottleneck outwards
            level = UNetLevel(
                channels[i - 1],
                channels[i],
                level,
                norm=norm,
                dropout=dropout if i in dropout_levels else 0.0,
            )
        self.model = UNetLevel(out_channels, channels[0], level, in_channels=in_channels, outermost=True, norm=norm)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_channels, multiple=2**self.depth, network="UNetGenerator")
        return self.model(x)
