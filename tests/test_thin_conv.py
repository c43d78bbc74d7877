"""ThinOutputConv2d computes exactly what nn.Conv2d computes (values, gradients, second derivatives, state dict)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from counterfeit.nets import PatchDiscriminator, ResnetGenerator
from counterfeit.nets.thin_conv import ThinOutputConv2d


def _pair(in_channels: int, kernel: int, padding: int, bias: bool, padding_mode: str) -> tuple[nn.Module, nn.Module]:
    thin = ThinOutputConv2d(in_channels, kernel, padding=padding, bias=bias, padding_mode=padding_mode).double()
    reference = nn.Conv2d(in_channels, 1, kernel, padding=padding, bias=bias, padding_mode=padding_mode).double()
    reference.load_state_dict(thin.state_dict())  # same keys and shapes, or this raises
    if bias:
        with torch.no_grad():
            thin.bias.fill_(0.3)
            reference.bias.fill_(0.3)
    return thin, reference


@pytest.mark.parametrize("in_channels,kernel,padding,bias,padding_mode,size,batch", [
    (16, 7, 0, True, "zeros", 20, 1),     # the ResNet generator's output layer (after its reflection padding)
    (8, 4, 1, True, "zeros", 11, 2),      # the PatchGAN's score map
    (3, 3, 1, False, "reflect", 9, 2),
    (5, 2, 0, True, "zeros", 7, 3),       # even kernel, non-square use of the offsets
])
def test_matches_conv2d_values_and_gradients(in_channels, kernel, padding, bias, padding_mode, size, batch):
    torch.manual_seed(0)
    thin, reference = _pair(in_channels, kernel, padding, bias, padding_mode)
    x = torch.randn(batch, in_channels, size, size + 3, dtype=torch.float64, requires_grad=True)
    out, expected = thin(x), reference(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, *thin.parameters()), grad_out)
    want = torch.autograd.grad(expected, (x, *reference.parameters()), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_second_derivatives_for_gradient_penalties():
    # WGAN-GP differentiates the critic's input gradient again, so the double backward must be right too.
    torch.manual_seed(0)
    thin = ThinOutputConv2d(3, 3, padding=1).double()
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)

    def layer(inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(thin, {"weight": weight, "bias": bias}, (inp,))

    assert torch.autograd.gradgradcheck(layer, (x, thin.weight, thin.bias))


def test_generator_and_discriminator_use_it_and_match_plain_convolutions():
    torch.manual_seed(0)
    g = ResnetGenerator(2, 1, ngf=4, n_blocks=1, upsample="resize").double()
    d = PatchDiscriminator(2, ndf=4, n_layers=2).double()
    for net, size in ((g, 16), (d, 40)):
        last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
        assert isinstance(last, ThinOutputConv2d)
        x = torch.randn(2, 2, size, size, dtype=torch.float64)
        out = net(x)
        plain = nn.Conv2d(last.in_channels, 1, last.kernel_size, padding=last.padding).double()
        plain.load_state_dict(last.state_dict())
        parent = net.model
        parent[len(parent) - 1 - [type(m) for m in reversed(parent)].index(ThinOutputConv2d)] = plain
        torch.testing.assert_close(out, net(x), rtol=1e-12, atol=1e-12)


def test_generators_with_several_output_channels_keep_nn_conv2d():
    g = ResnetGenerator(1, 3, ngf=4, n_blocks=1)
    assert not any(isinstance(m, ThinOutputConv2d) for m in g.modules())
