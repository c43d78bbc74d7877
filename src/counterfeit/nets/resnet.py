"""ResNet image-to-image generator of Johnson et al. / CycleGAN (the MR<->CT synthesis generator)."""

from __future__ import annotations

import torch
from torch import nn

from counterfeit.nets.init import init_weights
from counterfeit.nets.norm import conv_bias, make_norm
from counterfeit.nets.shapes import check_image_batch
from counterfeit.nets.thin_conv import ThinOutputConv2d


class ResnetBlock(nn.Module):
    """x + [reflect-pad, 3x3 conv, norm, ReLU, reflect-pad, 3x3 conv, norm](x); channels unchanged."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        bias = conv_bias(norm)
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# How the generator doubles the resolution twice on the way up:
# - "transpose": 3x3 transposed convolutions with stride 2 (the CycleGAN's). A 3x3 kernel with stride 2 gives
#   alternate output pixels 4, 2 or 1 taps, which shows as a checkerboard until training evens the weights out.
# - "transpose4": 4x4 transposed convolutions; every output pixel gets 4 taps (kernel divisible by the stride,
#   Odena et al. 2016, "Deconvolution and checkerboard artifacts"). 16/9 of the FLOPs of those two layers.
# - "resize": nearest-neighbour x2, then a 3x3 convolution; no uneven overlap at all, 4x the FLOPs of those layers.
UPSAMPLE_KINDS = ("transpose", "transpose4", "resize")


def upsample_layer(kind: str, in_channels: int, out_channels: int, bias: bool) -> list[nn.Module]:
    """Layers that double height and width and map `in_channels` to `out_channels` (see UPSAMPLE_KINDS)."""
    if kind == "transpose":
        return [nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=bias)]
    if kind == "transpose4":
        return [nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=bias)]
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect", bias=bias)]
    raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_KINDS)}, got {kind!r}")


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, n_blocks x R4ngf, u2ngf, ungf, c7s1-out + tanh (CycleGAN appendix).

    `upsample` chooses how u2ngf and ungf double the resolution (UPSAMPLE_KINDS; default the paper's).

    `in_channels` > 1 feeds 2.5D input (neighbouring slices stacked as channels). Output is in
    [-1, 1] with the input's height and width, which must be divisible by 4 (two stride-2 stages)
    and at least 8 (the 3x3 reflection padding needs >= 2 pixels at the bottleneck).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        self.in_channels = in_channels
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            make_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for mult in (1, 2):  # d2ngf, d4ngf
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                make_norm(norm, ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)]
        for mult in (4, 2):  # u2ngf, ungf
            layers += [
                *upsample_layer(upsample, ngf * mult, ngf * mult // 2, bias),
                make_norm(norm, ngf * mult // 2),
                nn.ReLU(True),
            ]
        # one output channel (a CT or MR slice): the layer oneDNN runs slowest, so it gets the tap-sum form
        out_conv = ThinOutputConv2d(ngf, 7) if out_channels == 1 else nn.Conv2d(ngf, out_channels, 7)
        layers += [nn.ReflectionPad2d(3), out_conv, nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_channels, multiple=4, min_size=8, network="ResnetGenerator")
        return self.model(x)
