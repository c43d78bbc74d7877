"""A stride-1 convolution to a single output channel, computed so that CPU kernels run it at a useful rate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ThinOutputConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same state dict) for layers such as a generator's 1-channel image or a PatchGAN's
    score map: stride 1, no dilation or groups.

    With one output channel, oneDNN's CPU convolution runs far below the matmul rate, its backward above all: the
    ResNet generator's 7x7 16 -> 1 output layer at 128x128 ran at 6 % of it and took a fifth of the generator's
    convolution time. On CPU this layer is therefore computed as the same sums in another order: a 1x1 convolution
    from C_in to one plane per kernel tap (a matrix product with k*k outputs per pixel instead of 1), then the sum of
    those planes, each shifted by its tap's offset. Forward and backward of that 7x7 layer were 4x faster
    (docs/performance.md). Results agree with nn.Conv2d to float rounding. Other devices use nn.Conv2d's kernel.
    """

    def __init__(self, in_channels: int, kernel_size: int, padding: int = 0, bias: bool = True,
                 padding_mode: str = "zeros") -> None:
        super().__init__(in_channels, 1, kernel_size, padding=padding, bias=bias, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        if any(self.padding):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=mode)
        return shifted_tap_sum(x, self.weight, self.bias)


def shifted_tap_sum(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.conv2d(x, weight, bias) for stride 1 and no padding, as a 1x1 convolution to C_out * kh * kw tap planes
    and a sum of the planes shifted by their taps' offsets."""
    c_out, c_in, kh, kw = weight.shape
    n, _, hp, wp = x.shape
    h, w = hp - kh + 1, wp - kw + 1
    # plane (o, i, j) holds sum_c weight[o, c, i, j] * x[c]
    taps = F.conv2d(x, weight.permute(0, 2, 3, 1).reshape(c_out * kh * kw, c_in, 1, 1)).contiguous()
    # out[o, p, q] = sum_{i,j} taps[o, i, j, p + i, q + j]. In memory, the tap (i, j) at pixel (p + i, q + j) sits at
    # (i * kw + j) * plane + (p + i) * wp + (q + j), which is linear in (p, q, i, j): one strided view, no copies,
    # and its elements do not overlap, so autograd's backward of the view is a single strided copy.
    plane = hp * wp
    view = taps.as_strided((n, c_out, h, w, kh, kw),
                           (c_out * kh * kw * plane, kh * kw * plane, wp, 1, kw * plane + wp, plane + 1))
    out = view.sum((4, 5))
    return out if bias is None else out + bias.view(1, -1, 1, 1)
