"""DCGAN generator and discriminator (Radford et al. 2016) for 32, 64 or 128 pixel square images.

The architecture rules of the paper: no pooling (strided convs in D, fractional-strided convs in G),
batch norm in G and D except D's first layer (and G's output), ReLU in G with a tanh output,
LeakyReLU(0.2) in D, no fully connected hidden layers (G's first layer is a 4x4 transposed conv of
the 1x1 noise, D's last a 4x4 valid conv to one logit).
"""

from __future__ import annotations

import torch
from torch import nn

from counterfeit.errors import UserError
from counterfeit.nets.init import init_weights
from counterfeit.nets.norm import check_norm, conv_bias, make_norm

IMAGE_SIZES = (32, 64, 128)
CRITIC_NORMS = ("batch", "layer", "none")


def _n_stride2(image_size: int) -> int:
    """Number of stride-2 stages between the 4x4 core and the image (3, 4, 5)."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    return image_size.bit_length() - 1 - 2  # log2(size / 4)


class DCGANGenerator(nn.Module):
    """z (B, z_dim) -> image (B, out_channels, image_size, image_size) in [-1, 1].

    Channels halve at each doubling of resolution, ending at ngf before the output layer
    (64 px: 8ngf@4 -> 4ngf@8 -> 2ngf@16 -> ngf@32 -> out@64).
    """

    def __init__(self, z_dim: int = 100, out_channels: int = 1, image_size: int = 64, ngf: int = 64) -> None:
        super().__init__()
        n = _n_stride2(image_size)
        self.z_dim = z_dim
        ch = ngf * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ch, 4, stride=1, padding=0, bias=False),  # 1x1 -> 4x4 projection
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, out_channels, 4, stride=2, padding=1), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]
        if z.ndim != 4 or z.shape[1:] != (self.z_dim, 1, 1):
            raise UserError(f"DCGANGenerator: expected noise of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return self.model(z)


class DCGANDiscriminator(nn.Module):
    """image (B, in_channels, image_size, image_size) -> one raw logit / critic score per image, (B,).

    `norm`: "batch" (DCGAN), or "layer" / "none" for a WGAN-GP critic, whose per-sample gradient
    penalty is invalid with batch norm (each output would depend on the whole batch).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 64, ndf: int = 64, norm: str = "batch") -> None:
        super().__init__()
        n = _n_stride2(image_size)
        check_norm(norm, CRITIC_NORMS)
        self.in_channels = in_channels
        self.image_size = image_size
        ch = ndf
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ch, 4, stride=2, padding=1),  # no norm on D's input layer
            nn.LeakyReLU(0.2, True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1, bias=conv_bias(norm)),
                make_norm(norm, ch * 2),
                nn.LeakyReLU(0.2, True),
            ]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=0))  # 4x4 -> 1x1 logit
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise UserError(
                f"DCGANDiscriminator: expected images of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        return self.model(x).flatten()
