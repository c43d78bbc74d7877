"""Tests for counterfeit.nets and counterfeit.flops: shapes, architecture rules, init, receptive field, MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from counterfeit.errors import UserError
from counterfeit.flops import conv_macs
from counterfeit.nets import (
    MLP,
    DCGANDiscriminator,
    DCGANGenerator,
    PatchDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    init_weights,
    make_norm,
    receptive_field,
)
from counterfeit.nets.resnet import UPSAMPLE_KINDS, upsample_layer

POOLING = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- ResnetGenerator -------------------------------------------------------------------------


@pytest.mark.parametrize("n_blocks", [6, 9])
@pytest.mark.parametrize(("cin", "cout"), [(1, 1), (3, 1)])  # 3 = 2.5D: neighbouring slices as channels
def test_resnet_generator_shape_and_range(n_blocks, cin, cout):
    g = ResnetGenerator(cin, cout, ngf=8, n_blocks=n_blocks)
    y = g(torch.randn(2, cin, 32, 36))
    assert y.shape == (2, cout, 32, 36)
    assert y.abs().max() <= 1.0
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in g.modules()) == 2 + 2 * n_blocks


def test_resnet_block_count_changes_depth():
    six, nine = ResnetGenerator(ngf=8, n_blocks=6), ResnetGenerator(ngf=8, n_blocks=9)
    per_block = 2 * (32 * 32 * 9 + 32)  # two 3x3 convs at 4*ngf=32 channels, with bias (instance norm)
    assert n_params(nine) - n_params(six) == 3 * per_block


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


@pytest.mark.parametrize("n_blocks", [9, 6])
def test_resnet_generator_parameter_count_matches_reference(n_blocks):
    # CycleGAN resnet generator, instance norm (no affine params, convs keep their bias), 1 -> 1 channels:
    #   c7s1-64: 1*64*49+64            = 3,200
    #   d128:    64*128*9+128          = 73,856
    #   d256:    128*256*9+256         = 295,168
    #   R256 x n: n * 2*(256*256*9+256) = n * 1,180,160
    #   u128:    256*128*9+128         = 295,040
    #   u64:     128*64*9+64           = 73,792
    #   c7s1-1:  64*1*49+1             = 3,137
    # => 11,365,633 for 9 blocks, 7,825,153 (the "~7.8M") for 6 blocks.
    ngf = 64
    expected = (
        _conv(1, ngf, 7)
        + _conv(ngf, 2 * ngf, 3)
        + _conv(2 * ngf, 4 * ngf, 3)
        + n_blocks * 2 * _conv(4 * ngf, 4 * ngf, 3)
        + _conv(4 * ngf, 2 * ngf, 3)
        + _conv(2 * ngf, ngf, 3)
        + _conv(ngf, 1, 7)
    )
    assert n_params(ResnetGenerator(1, 1, ngf=ngf, n_blocks=n_blocks)) == expected


@pytest.mark.parametrize("size", [(30, 32), (32, 34), (4, 4)])
def test_resnet_generator_rejects_bad_sizes(size):
    g = ResnetGenerator(ngf=4, n_blocks=1)
    with pytest.raises(ValueError, match="ResnetGenerator"):
        g(torch.randn(1, 1, *size))


def test_resnet_generator_rejects_wrong_channels():
    with pytest.raises(UserError, match="3 input channel"):
        ResnetGenerator(3, 1, ngf=4, n_blocks=1)(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize("kind", UPSAMPLE_KINDS)
def test_resnet_generator_upsampling_kinds_keep_the_shape(kind):
    g = ResnetGenerator(2, 1, ngf=8, n_blocks=1, upsample=kind)
    assert g(torch.randn(2, 2, 16, 20)).shape == (2, 1, 16, 20)


@pytest.mark.parametrize(("kind", "even"), [("transpose", False), ("transpose4", True), ("resize", True)])
def test_upsampling_checkerboard(kind, even):
    # All-ones weights on an all-ones image: an output pixel's value counts the kernel taps that reach it. A 3x3
    # transposed convolution with stride 2 gives alternate pixels 4, 2 or 1 taps (the checkerboard); a 4x4 one and
    # nearest x2 + 3x3 convolution give every interior pixel the same count.
    layers = nn.Sequential(*upsample_layer(kind, 1, 1, bias=False))
    for m in layers.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.ones_(m.weight)
    with torch.no_grad():
        y = layers(torch.ones(1, 1, 8, 8))
    assert y.shape == (1, 1, 16, 16)
    interior = y[0, 0, 2:-2, 2:-2]
    assert bool(interior.max() == interior.min()) is even
    if not even:
        assert set(interior.unique().tolist()) == {1.0, 2.0, 4.0}


def test_resnet_generator_rejects_unknown_upsampling():
    with pytest.raises(ValueError, match="upsample must be one of"):
        ResnetGenerator(ngf=4, n_blocks=1, upsample="bilinear")


# --- PatchGAN --------------------------------------------------------------------------------


def test_receptive_field_arithmetic():
    # Backwards through the stack: 1 -(4,s1)-> 4 -(4,s1)-> 7 -(4,s2)-> 16 -(4,s2)-> 34 -(4,s2)-> 70.
    assert receptive_field(3) == 70
    assert receptive_field(1) == 16  # 1 -> 4 -> 7 -> 16
    assert receptive_field(2) == 34
    assert receptive_field(4) == 142
    assert PatchDiscriminator(ndf=4).receptive_field == 70


@pytest.mark.parametrize("n_layers", [1, 3])
def test_receptive_field_empirical(n_layers):
    # Gradient of one central output score w.r.t. the input: its nonzero support is the field.
    # norm="none" because instance norm would couple every pixel of the image.
    d = PatchDiscriminator(1, ndf=4, n_layers=n_layers, norm="none").double()
    x = torch.randn(1, 1, 160, 160, dtype=torch.double, requires_grad=True)
    out = d(x)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    out[0, 0, i, j].backward()
    support = x.grad[0, 0].abs() > 0
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    assert 0 < rows.min() and rows.max() < 159 and 0 < cols.min() and cols.max() < 159  # not clipped
    assert rows.max() - rows.min() + 1 == receptive_field(n_layers)
    assert cols.max() - cols.min() + 1 == receptive_field(n_layers)
    assert support[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a full square


def test_patch_discriminator_architecture_and_shape():
    d = PatchDiscriminator(2, ndf=8, n_layers=3)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs)
    modules = list(d.model)
    assert isinstance(modules[1], nn.LeakyReLU)  # no norm after the first conv
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())
    y = d(torch.randn(3, 2, 64, 64))
    assert y.shape == (3, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    assert (y < 0).any() and (y > 0).any()  # raw scores, not probabilities


def test_patch_discriminator_channel_cap_and_small_input():
    convs = [m for m in PatchDiscriminator(ndf=2, n_layers=5).modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [2, 4, 8, 16, 16, 16, 1]  # capped at 8 * ndf
    with pytest.raises(ValueError, match="at least"):
        PatchDiscriminator(ndf=2)(torch.randn(1, 1, 16, 16))


# --- U-Net -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "size"), [(5, 32), (3, 24), (6, 64)])
def test_unet_shape(depth, size):
    g = UNetGenerator(3, 1, ngf=4, depth=depth)
    y = g(torch.randn(2, 3, size, size))
    assert y.shape == (2, 1, size, size)
    assert y.abs().max() <= 1.0
    downs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(downs) == len(ups) == depth
    assert all(c.stride == (2, 2) and c.kernel_size == (4, 4) for c in downs + ups)
    assert not any(isinstance(m, nn.Dropout) for m in g.modules())  # off by default


def test_unet_skip_connections_and_dropout():
    g = UNetGenerator(1, 1, ngf=4, depth=8, dropout=0.5)
    ups = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    # modules() visits the innermost decoder first; every level above it reads cat(skip, up) = 2x channels,
    # ending with the outermost at 2*ngf.
    assert [u.in_channels for u in ups] == [32, 64, 64, 64, 64, 32, 16, 8]
    assert [u.out_channels for u in ups] == [32, 32, 32, 32, 16, 8, 4, 1]
    assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == 3  # pix2pix unet_256: 3 dropout levels
    with pytest.raises(ValueError, match="depth >= 6"):
        UNetGenerator(ngf=4, depth=5, dropout=0.5)


def test_unet_rejects_indivisible_size():
    with pytest.raises(ValueError, match="divisible by 32"):
        UNetGenerator(ngf=4, depth=5)(torch.randn(1, 1, 48, 48))


# --- DCGAN -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(image_size, channels):
    g = DCGANGenerator(z_dim=16, out_channels=channels, image_size=image_size, ngf=4)
    d = DCGANDiscriminator(channels, image_size, ndf=4)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, channels, image_size, image_size)
    assert x.abs().max() <= 1.0
    assert d(x).shape == (5,)


def test_dcgan_128():
    g = DCGANGenerator(z_dim=8, image_size=128, ngf=2)
    d = DCGANDiscriminator(1, 128, ndf=2)
    assert d(g(torch.randn(2, 8))).shape == (2,)


def test_dcgan_generator_follows_the_rules():
    g = DCGANGenerator(z_dim=16, out_channels=3, image_size=64, ngf=4)
    mods = list(g.modules())
    assert not any(isinstance(m, POOLING + (nn.Linear, nn.Upsample)) for m in mods)
    tconvs = [m for m in mods if isinstance(m, nn.ConvTranspose2d)]
    assert len(tconvs) == 5 and all(t.stride == (2, 2) for t in tconvs[1:])
    assert [t.out_channels for t in tconvs] == [32, 16, 8, 4, 3]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in mods) == 4  # every layer but the output
    assert any(isinstance(m, nn.ReLU) for m in mods)
    assert not any(isinstance(m, nn.LeakyReLU) for m in mods)
    assert isinstance(list(g.model)[-1], nn.Tanh)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_dcgan_discriminator_follows_the_rules(norm):
    d = DCGANDiscriminator(3, 64, ndf=4, norm=norm)
    seq = list(d.model)
    assert not any(isinstance(m, POOLING + (nn.Linear,)) for m in d.modules())
    convs = [m for m in seq if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (2, 2) for c in convs[:-1]) and len(convs) == 5
    assert isinstance(seq[0], nn.Conv2d) and isinstance(seq[1], nn.LeakyReLU)  # no norm on the first layer
    assert all(m.negative_slope == 0.2 for m in seq if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, (nn.ReLU, nn.Sigmoid)) for m in seq)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in seq)
    n_gn = sum(isinstance(m, nn.GroupNorm) for m in seq)
    assert (n_bn, n_gn) == {"batch": (3, 0), "layer": (0, 3), "none": (0, 0)}[norm]


def test_dcgan_critic_without_batchnorm_is_per_sample():
    # A WGAN-GP critic's score for one image must not depend on the rest of the batch.
    d = DCGANDiscriminator(1, 32, ndf=4, norm="layer").train()
    x = torch.randn(4, 1, 32, 32)
    assert torch.allclose(d(x)[:1], d(x[:1]), atol=1e-6)


def test_dcgan_validation():
    with pytest.raises(ValueError, match="image_size"):
        DCGANGenerator(image_size=48)
    with pytest.raises(ValueError, match="image_size"):
        DCGANDiscriminator(1, 256)
    with pytest.raises(ValueError, match="norm"):
        DCGANDiscriminator(1, 32, norm="instance")
    with pytest.raises(ValueError, match="shape"):
        DCGANDiscriminator(1, 32, ndf=2)(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="noise"):
        DCGANGenerator(z_dim=8, image_size=32, ngf=2)(torch.randn(2, 9))


# --- MLP, norm, init -------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
def test_mlp(activation):
    m = MLP(2, 1, hidden=16, depth=3, activation=activation)
    assert m(torch.randn(7, 2)).shape == (7, 1)
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(2, 16), (16, 16), (16, 1)]
    assert not isinstance(list(m.model)[-1], (nn.ReLU, nn.Tanh, nn.LeakyReLU))  # linear output
    with pytest.raises(ValueError, match="activation"):
        MLP(2, 2, activation="gelu")
    with pytest.raises(ValueError, match="depth"):
        MLP(2, 2, depth=0)


def test_make_norm():
    assert isinstance(make_norm("instance", 4), nn.InstanceNorm2d)
    assert isinstance(make_norm("batch", 4), nn.BatchNorm2d)
    ln = make_norm("layer", 4)
    x = torch.randn(2, 4, 5, 5) * 3 + 1
    y = ln(x)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)  # normalised over C, H, W
    assert isinstance(make_norm("none", 4), nn.Identity)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("group", 4)


def test_init_weights_statistics():
    g = ResnetGenerator(ngf=32, n_blocks=2, norm="batch")
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn.std().item() == pytest.approx(0.02, rel=0.2)
    biases = [m.bias for m in g.modules() if getattr(m, "bias", None) is not None]
    assert biases and all((b == 0).all() for b in biases)
    lin = init_weights(nn.Linear(200, 300), std=0.05)
    assert lin.weight.std().item() == pytest.approx(0.05, rel=0.03)


# --- flops -----------------------------------------------------------------------------------


def test_conv_macs_hand_counts():
    # Conv2d 3->8, 3x3, stride 1, pad 1 on 10x10: 8*10*10 outputs x 3*3*3 MACs each = 21,600.
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert conv_macs(conv, (1, 3, 10, 10)) == 8 * 10 * 10 * 27
    # Batch scales linearly; stride 2 quarters the outputs: 8*5*5*27 per image.
    assert conv_macs(nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 10, 10)) == 2 * 8 * 5 * 5 * 27
    # Grouped: each output sees only in_channels/groups inputs.
    assert conv_macs(nn.Conv2d(4, 8, 3, padding=1, groups=2), (1, 4, 6, 6)) == 8 * 36 * 2 * 9
    # Transposed: each of the 4*5*5 inputs scatters into 6 outputs x 4x4 kernel.
    assert conv_macs(nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1), (1, 4, 5, 5)) == 4 * 25 * 6 * 16
    # Linear in a container with a non-counted activation.
    seq = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    assert conv_macs(seq, (4, 10)) == 4 * (10 * 20 + 20 * 3)


def test_conv_macs_restores_mode_and_matches_param_structure():
    d = DCGANDiscriminator(1, 32, ndf=4).train()
    macs = conv_macs(d, (1, 1, 32, 32))
    # 1->4 @16x16, 4->8 @8x8, 8->16 @4x4, 16->1 @1x1, all 4x4 kernels.
    assert macs == 16 * (4 * 256 * 1 + 8 * 64 * 4 + 16 * 16 * 8 + 1 * 1 * 16)
    assert d.training
    assert not any(m._forward_hooks for m in d.modules())
