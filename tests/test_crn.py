"""Cascaded Refinement Network: cascade shapes, VGG19 weight loading, hindsight diversity loss, training."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from counterfeit.errors import InputFileError, UserError
from counterfeit.losses_perceptual import PerceptualLoss, diversity_loss, hindsight_reduce
from counterfeit.nets.crn import CascadedRefinementNetwork, cascade_sizes, default_widths
from counterfeit.nets.vgg import VGG19Features, load_vgg19_weights

# torchvision's vgg19().features: (index, in_channels, out_channels) of every conv, written out by hand.
TORCHVISION_VGG19_CONVS = [
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256), (16, 256, 256),
    (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512),
    (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512),
]
IMAGENET_STD = (0.229, 0.224, 0.225)


class NotATensor:
    """Any pickled object: must be refused."""


def _torchvision_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, cin, cout in TORCHVISION_VGG19_CONVS:
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.1
    # torchvision also ships the classifier (ignored on load); tiny stand-ins keep the test light.
    for j in (0, 3, 6):
        state[f"classifier.{j}.weight"] = torch.zeros(2, 2)
        state[f"classifier.{j}.bias"] = torch.zeros(2)
    return state


# --- network ------------------------------------------------------------------------------------


def test_cascade_doubles_resolution_from_4x8():
    assert cascade_sizes(64, 128) == [(4, 8), (8, 16), (16, 32), (32, 64), (64, 128)]
    assert cascade_sizes(256, 512)[0] == (4, 8) and len(cascade_sizes(256, 512)) == 7
    assert cascade_sizes(32, 32) == [(4, 4), (8, 8), (16, 16), (32, 32)]  # square images: 4x4 base
    assert default_widths(cascade_sizes(64, 128)) == (256, 256, 256, 128, 64)
    for bad in [(60, 128), (64, 100)]:
        with pytest.raises(UserError):
            cascade_sizes(*bad)


def test_crn_shapes_and_module_resolutions():
    torch.manual_seed(0)
    net = CascadedRefinementNetwork(num_classes=5, out_channels=3, k=2, widths=(8, 8, 4), height=16, width=32)
    labels = torch.randint(0, 5, (2, 16, 32))
    layout = F.one_hot(labels, 5).permute(0, 3, 1, 2).float()
    out, sizes = net(layout, return_sizes=True)
    assert out.shape == (2, 2, 3, 16, 32)
    assert sizes == [(4, 8), (8, 16), (16, 32)]
    # Each module sees the layout at its own resolution, as area averages that still sum to one.
    pyramid = net.layout_pyramid(layout)
    assert [tuple(p.shape[-2:]) for p in pyramid] == sizes
    assert torch.allclose(pyramid[0].sum(1), torch.ones(2, 4, 8))
    assert torch.allclose(pyramid[0][:, :, 0, 0], layout[:, :, :4, :4].mean((2, 3)))
    # The k outputs differ (separate channels of the last 1x1 conv), and a different layout changes them.
    assert not torch.allclose(out[:, 0], out[:, 1])
    other = net(F.one_hot((labels + 1) % 5, 5).permute(0, 3, 1, 2).float())
    assert not torch.allclose(out, other)
    with pytest.raises(UserError, match="divisible by 4"):
        net(layout[..., :30])
    with pytest.raises(UserError, match="5 input channel"):
        net(layout[:, :4])


# --- VGG19 ----------------------------------------------------------------------------------------


def test_vgg19_loads_torchvision_state_dict(tmp_path):
    state = _torchvision_state_dict()
    pth = tmp_path / "vgg19-test.pth"
    torch.save(state, pth)
    deep = load_vgg19_weights(VGG19Features(("conv5_4",)), pth)  # builds all of torchvision's `features`
    assert deep.weights_loaded and len(deep.features) == 36
    assert torch.equal(deep.features[28].weight, state["features.28.weight"])
    assert torch.equal(deep.features[34].bias, state["features.34.bias"])
    model = load_vgg19_weights(VGG19Features(("conv1_2", "conv2_2")), pth)  # a prefix: up to features.8
    assert len(model.features) == 9 and torch.equal(model.features[7].weight, state["features.7.weight"])
    # Activations: post-ReLU conv1_2 on ImageNet-normalised input (grayscale replicated), by hand.
    x = torch.rand(1, 1, 8, 8) * 2 - 1
    conv1_2, conv2_2 = model(x)
    rgb = (x.expand(-1, 3, -1, -1) + 1) / 2
    norm = (rgb - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    h = F.relu(F.conv2d(norm, state["features.0.weight"], state["features.0.bias"], padding=1))
    h = F.relu(F.conv2d(h, state["features.2.weight"], state["features.2.bias"], padding=1))
    assert torch.allclose(conv1_2, h, atol=1e-5)
    assert conv2_2.shape == (1, 128, 4, 4)
    # The same weights as a safetensors copy load identically.
    from safetensors.torch import save_file

    st = tmp_path / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    other = load_vgg19_weights(VGG19Features(("conv1_2",)), st)
    assert torch.equal(other.features[2].weight, state["features.2.weight"])


def test_vgg19_rejects_wrong_state_dicts(tmp_path):
    state = _torchvision_state_dict()
    vgg16_like = dict(state)
    vgg16_like["features.17.weight"] = vgg16_like.pop("features.16.weight")
    torch.save(vgg16_like, tmp_path / "a.pth")
    with pytest.raises(InputFileError, match=r"missing \['features.16.weight'\].*unexpected \['features.17.weight'\]"):
        load_vgg19_weights(VGG19Features(("conv1_1",)), tmp_path / "a.pth")
    bad_shape = dict(state)
    bad_shape["features.34.weight"] = torch.zeros(512, 512, 1, 1)  # deeper than the model: still checked
    torch.save(bad_shape, tmp_path / "b.pth")
    with pytest.raises(InputFileError, match=r"features.34.weight has shape \(512, 512, 1, 1\)"):
        load_vgg19_weights(VGG19Features(("conv1_1",)), tmp_path / "b.pth")
    torch.save({"net": NotATensor()}, tmp_path / "c.pth")  # a weights-only load refuses it
    with pytest.raises(InputFileError, match="cannot read VGG19 weights"):
        load_vgg19_weights(VGG19Features(("conv1_1",)), tmp_path / "c.pth")
    with pytest.raises(InputFileError, match="not found"):
        load_vgg19_weights(VGG19Features(("conv1_1",)), tmp_path / "missing.pth")


def test_random_vgg_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = VGG19Features(("conv1_2",)), VGG19Features(("conv1_2",))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.features[2].weight, b.features[2].weight)
    assert not any(p.requires_grad for p in a.parameters())


# --- losses -----------------------------------------------------------------------------------------


def test_hindsight_reduce_takes_min_per_class_plus_small_mean():
    per_class = torch.tensor([[[1.0, 5.0], [3.0, 2.0], [4.0, 4.0]]])  # (B=1, k=3, classes=2)
    expected = 0.999 * (1.0 + 2.0) + 0.001 * ((1 + 3 + 4) / 3 + (5 + 2 + 4) / 3)
    assert hindsight_reduce(per_class).item() == pytest.approx(expected, rel=1e-6)


def test_diversity_loss_picks_best_output_per_class_hand_checked():
    # Pixel term only (VGG layer weight 0): class 0 = left half, class 1 = right half, target 0.
    # Output 0 is exact on the left and off by 0.4 on the right; output 1 off by 0.8 on the left,
    # 0.6 on the right. Per class the best: class 0 -> output 0 (0), class 1 -> output 0 (0.4).
    perceptual = PerceptualLoss(VGG19Features(("conv1_1",)), layer_weights=(0.0,), pixel_weight=1.0)
    H, W = 4, 8
    layout = torch.zeros(1, 2, H, W)
    layout[:, 0, :, : W // 2] = 1
    layout[:, 1, :, W // 2 :] = 1
    target = torch.zeros(1, 1, H, W)
    out = torch.zeros(1, 2, 1, H, W)
    out[0, 0, :, :, W // 2 :] = 0.4
    out[0, 1, :, :, : W // 2] = 0.8
    out[0, 1, :, :, W // 2 :] = 0.6
    out.requires_grad_(True)
    loss = diversity_loss(out, target, layout, perceptual)
    s = float(np.mean([0.5 / sd for sd in IMAGENET_STD]))  # [-1, 1] difference -> normalised-input difference
    half = 0.5  # each class covers half of the image; the mean runs over the whole image
    per_class = {(0, 0): 0.0, (0, 1): 0.4 * s * half, (1, 0): 0.8 * s * half, (1, 1): 0.6 * s * half}
    expected = sum(0.999 * min(per_class[(0, c)], per_class[(1, c)]) + 0.001 * (per_class[(0, c)] + per_class[(1, c)]) / 2
                   for c in (0, 1))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    # Class 1's gradient goes (almost) only to its winner, output 0.
    g_win = out.grad[0, 0, :, :, W // 2 :].abs().mean()
    g_lose = out.grad[0, 1, :, :, W // 2 :].abs().mean()
    assert g_win / g_lose == pytest.approx((0.999 + 0.0005) / 0.0005, rel=1e-3)


def test_diversity_loss_with_k1_is_the_plain_perceptual_loss():
    torch.manual_seed(0)
    perceptual = PerceptualLoss(VGG19Features(("conv1_2", "conv2_2")), layer_weights=(0.5, 2.0))
    labels = torch.randint(0, 3, (2, 8, 16))
    layout = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    fake, real = torch.rand(2, 1, 3, 8, 16) * 2 - 1, torch.rand(2, 3, 8, 16) * 2 - 1
    plain = perceptual(fake[:, 0], real)
    assert diversity_loss(fake, real, layout, perceptual).item() == pytest.approx(plain.item(), rel=1e-5)


# --- recipe through the shared loop ------------------------------------------------------------------


def _tiny_config(**kw):
    from counterfeit.train.recipes.crn import CRNConfig

    base = dict(dataset="street", height=16, width=32, widths=(8, 8, 8), k=2, n_train=6, n_val=2,
                vgg_layers=("conv1_2", "conv2_2"), layer_weights=(1.0, 1.0))
    base.update(kw)
    return CRNConfig(**base)


def _loop(steps):
    from counterfeit.train.loop import LoopConfig

    return LoopConfig(steps=steps, log_every=1, sample_every=0, checkpoint_every=0, progress=False, tensorboard=False, prefetch=0)


def test_training_resume_and_synthesize(tmp_path):
    """A few steps through the shared loop; resuming is exact; the run synthesizes from layout PNGs."""
    from PIL import Image

    from counterfeit.data.layouts import labels_to_colors
    from counterfeit.data.street_scenes import STREET_PALETTE
    from counterfeit.layout_synthesis import synthesize_from_layouts
    from counterfeit.train.loop import load_run, resume_run, train
    from counterfeit.train.recipes.crn import CRNRecipe

    def fresh():
        torch.manual_seed(0)
        return CRNRecipe(_tiny_config(), torch.device("cpu"))

    recipe = fresh()
    before = {k: v.clone() for k, v in recipe.nets["G"].state_dict().items()}
    with pytest.warns(UserWarning, match="RANDOM"):
        full = train(recipe, _loop(3), tmp_path / "full")
    assert full.steps_done == 3 and np.isfinite(full.last_losses["loss"])
    assert "val_l1" in full.last_metrics and "val_l1_best_of_k" in full.last_metrics
    assert any(not torch.equal(before[k], v) for k, v in recipe.nets["G"].state_dict().items())
    assert list((tmp_path / "full" / "samples").glob("step_*.png"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(fresh(), _loop(1), tmp_path / "part")
        resume_run(tmp_path / "part", steps=3, device="cpu", progress=False)
    a, b = load_run(tmp_path / "full", "cpu").nets["G"], load_run(tmp_path / "part", "cpu").nets["G"]
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name

    # Synthesis from a colour layout (street palette) and the same layout as label ids.
    scene = recipe.val_pairs.labels[0]
    Image.fromarray(labels_to_colors(scene, STREET_PALETTE)).save(tmp_path / "colour.png")
    Image.fromarray(scene.astype(np.uint8)).save(tmp_path / "ids.png")
    written = synthesize_from_layouts(tmp_path / "full", [tmp_path / "colour.png", tmp_path / "ids.png"], tmp_path / "out", "cpu")
    names = sorted(p.name for p in written)
    assert names == ["colour_k0.png", "colour_k1.png", "colour_montage.png", "ids_k0.png", "ids_k1.png", "ids_montage.png"]
    a, b = (np.asarray(Image.open(tmp_path / "out" / f"{n}_k0.png")) for n in ("colour", "ids"))
    assert a.shape == (16, 32, 3) and np.array_equal(a, b)
    expected = load_run(tmp_path / "full", "cpu").generate(scene[None])[0, 0]
    assert np.abs(a.astype(float) - np.clip((expected.transpose(1, 2, 0) + 1) * 127.5, 0, 255)).max() <= 0.51
    montage = np.asarray(Image.open(tmp_path / "out" / "colour_montage.png"))
    assert montage.shape[1] > 3 * 32  # the layout and both variants side by side
    # a square layout is stretched to the trained 32x16 with a warning; a bad one after it leaves no partial output
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "square.png")
    Image.fromarray(np.full((16, 32), 250, np.uint8)).save(tmp_path / "bad_ids.png")
    with pytest.raises(UserError, match="label id 250"), pytest.warns(UserWarning, match="stretched"):
        synthesize_from_layouts(tmp_path / "full", [tmp_path / "square.png", tmp_path / "bad_ids.png"],
                                tmp_path / "out2", "cpu")
    assert not (tmp_path / "out2").exists()


def test_adversarial_term_runs(tmp_path):
    from counterfeit.train.recipes.crn import CRNRecipe

    torch.manual_seed(0)
    recipe = CRNRecipe(_tiny_config(adv_weight=0.1), torch.device("cpu"))
    assert "D" in recipe.nets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe.setup_data()
    d_before = [p.clone() for p in recipe.nets["D"].parameters()]
    losses = recipe.train_step(recipe.sample_batch(np.random.default_rng(0)), 0)
    assert {"loss_d", "loss_adv"} <= set(losses) and all(np.isfinite(float(v)) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, recipe.nets["D"].parameters()))


def test_config_errors_are_clear():
    from counterfeit.train.recipes.crn import CRNRecipe

    with pytest.raises(UserError, match="3 widths for 5 refinement modules"):
        CRNRecipe(_tiny_config(height=64, width=128, widths=(8, 8, 8)), torch.device("cpu"))
    with pytest.raises(UserError, match="dataset must be one of"):
        CRNRecipe(_tiny_config(dataset="cityscapes"), torch.device("cpu"))
    with pytest.raises(UserError, match="needs --num-classes"):
        CRNRecipe(_tiny_config(dataset="folder", channels=3), torch.device("cpu"))


def test_folder_config_reads_classes_and_channels(tmp_path):
    from PIL import Image

    from counterfeit.train.recipes.crn import CRNRecipe, complete_folder_config

    (tmp_path / "layouts").mkdir()
    (tmp_path / "images").mkdir()
    for stem, top in (("a", 2), ("b", 4)):
        Image.fromarray(np.full((16, 32), top, dtype=np.uint8)).save(tmp_path / "layouts" / f"{stem}.png")
        Image.fromarray(np.zeros((16, 32), dtype=np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    config = complete_folder_config(_tiny_config(dataset="folder", layouts=str(tmp_path / "layouts"),
                                                 images=str(tmp_path / "images")))
    assert (config.num_classes, config.channels) == (5, 1)
    recipe = CRNRecipe(config, torch.device("cpu"))
    assert recipe.nets["G"].num_classes == 5 and recipe.nets["G"].out_channels == 1
