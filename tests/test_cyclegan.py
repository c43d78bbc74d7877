"""CycleGAN MR -> CT recipe: exact losses, all four networks train, exact resume, image pool, schedule, CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from counterfeit.data.phantom import generate_dataset
from counterfeit.errors import UserError
from counterfeit.train import checkpoint as ckpt
from counterfeit.train.image_pool import ImagePool
from counterfeit.train.loop import LoopConfig, load_run, resume_run, train
from counterfeit.losses_histogram import intensity_w1
from counterfeit.losses_structure import mind_loss
from counterfeit.train.recipes.cyclegan import PRESETS, CycleGANConfig, CycleGANRecipe, body_weight, closed_body, depth_bands
from counterfeit.train.recipes.mr2ct_common import apply_preset, crop_batch, linear_decay, resolve_d_crop

NETS = ("Syn_CT", "Syn_MR", "Dis_CT", "Dis_MR")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("phantom"), 4, shape=(8, 32, 32), seed=3, workers=1)


def tiny(phantom, **kw) -> CycleGANConfig:
    base = dict(phantom=str(phantom), image_size=32, batch_size=2, ngf=4, n_blocks=1, ndf=4, d_crop=24,
                preview_subjects=1)
    base.update(kw)
    return CycleGANConfig(**base)


def build(config: CycleGANConfig, seed: int = 0, data: bool = True) -> CycleGANRecipe:
    torch.manual_seed(seed)
    recipe = CycleGANRecipe(config, torch.device("cpu"))
    if data:
        recipe.setup_data()
    return recipe


def _crop(x: torch.Tensor, corners: np.ndarray, size: int) -> torch.Tensor:
    return torch.stack([x[i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(corners)])


@pytest.mark.parametrize("depth", [False, True])
def test_losses_match_hand_computation(phantom, depth):
    lam, lam_id, lam_s, lam_h = 7.0, 0.5, 3.0, 2.0
    recipe = build(tiny(phantom, lambda_cycle=lam, lambda_identity=lam_id, lambda_structure=lam_s,
                        lambda_histogram=lam_h, depth_channel=depth))
    before = {k: copy.deepcopy(recipe.nets[k]) for k in NETS}
    batch = recipe.sample_batch(np.random.default_rng(5))
    got = recipe.train_step(batch, 0)

    mr, ct, crops, s = torch.from_numpy(batch["mr"]), torch.from_numpy(batch["ct"]), batch["crops"], recipe.d_crop
    if depth:  # the last channel is the depth map; every network also gets the depth of the image it works on
        (mr, d_mr_map), (ct, d_ct_map) = (mr[:, :1], mr[:, 1:]), (ct[:, :1], ct[:, 1:])
        on_mr, on_ct = (lambda x: torch.cat([x, d_mr_map], 1)), (lambda x: torch.cat([x, d_ct_map], 1))
    else:
        on_mr = on_ct = lambda x: x
    g_ct, g_mr, d_ct, d_mr = (before[k] for k in NETS)
    with torch.no_grad():
        fake_ct, fake_mr = g_ct(on_mr(mr)), g_mr(on_ct(ct))
        rec_mr, rec_ct = g_mr(on_mr(fake_ct)), g_ct(on_ct(fake_mr))
        adv_ct = ((d_ct(_crop(on_mr(fake_ct), crops[:, 1], s)) - 1) ** 2).mean()
        adv_mr = ((d_mr(_crop(on_ct(fake_mr), crops[:, 3], s)) - 1) ** 2).mean()
        cycle = lam * ((rec_mr - mr).abs().mean() + (rec_ct - ct).abs().mean())
        identity = lam_id * lam * ((g_ct(on_ct(ct)) - ct).abs().mean() + (g_mr(on_mr(mr)) - mr).abs().mean())
        structure = lam_s * (mind_loss(mr, fake_ct, body_weight(mr)) + mind_loss(ct, fake_mr, body_weight(ct)))
        if depth:  # W1 per band of depth (mm edges 3, 6, 9, 12, 20, 40 below the surface; -1 outside the body)
            def bands(d):
                mm = (d + 1.0) * 30.0
                b = (mm.unsqueeze(-1) > torch.tensor([3.0, 6.0, 9.0, 12.0, 20.0, 40.0])).sum(-1)
                return torch.where(d > -1.0, b, torch.full_like(b, -1))

            def banded(x, bx, y, by):
                ks = [k for k in range(7) if (bx == k).any() and (by == k).any()]
                return sum(intensity_w1(x, bx == k, y, by == k) for k in ks) / len(ks)

            b_mr, b_ct = bands(d_mr_map), bands(d_ct_map)
            histogram = lam_h * (banded(fake_ct, b_mr, ct, b_ct) + banded(fake_mr, b_ct, mr, b_mr))
        else:
            histogram = lam_h * (intensity_w1(fake_ct, closed_body(mr), ct, closed_body(ct))
                                 + intensity_w1(fake_mr, closed_body(ct), mr, closed_body(mr)))
        # First step: the pool is still filling, so the discriminators see this step's fakes.
        d_ct_loss = (((d_ct(_crop(on_ct(ct), crops[:, 0], s)) - 1) ** 2).mean()
                     + (d_ct(_crop(on_mr(fake_ct), crops[:, 1], s)) ** 2).mean())
        d_mr_loss = (((d_mr(_crop(on_mr(mr), crops[:, 2], s)) - 1) ** 2).mean()
                     + (d_mr(_crop(on_ct(fake_mr), crops[:, 3], s)) ** 2).mean())
    expected = {"adv_ct": adv_ct, "adv_mr": adv_mr, "cycle": cycle, "identity": identity, "structure": structure,
                "histogram": histogram, "loss_g": adv_ct + adv_mr + cycle + identity + structure + histogram,
                "loss_d_ct": d_ct_loss, "loss_d_mr": d_mr_loss}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), key
    # The crops really are crops: D sees d_crop x d_crop windows at the drawn corners.
    assert s == 24 and crops.shape == (2, 4, 2) and crops.min() >= 0 and crops.max() <= 32 - 24


def test_one_step_changes_all_four_networks(phantom):
    recipe = build(tiny(phantom))
    before = {k: [p.detach().clone() for p in recipe.nets[k].parameters()] for k in NETS}
    recipe.train_step(recipe.sample_batch(np.random.default_rng(0)), 0)
    for k in NETS:
        after = list(recipe.nets[k].parameters())
        assert all(torch.isfinite(p).all() for p in after), k
        changed = sum(not torch.equal(a, b) for a, b in zip(before[k], after))
        assert changed == len(after), f"{k}: only {changed} of {len(after)} parameter tensors changed"


def test_closed_body_brings_back_the_dark_skull():
    # MR-like slice: background -1, a bright scalp ring, a 3-pixel skull ring as dark as the background, brain; the
    # head's centre sits near the right edge, so the crop cuts the rings open (a hole fill would not close them)
    y, x = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    r = ((y - 20) ** 2 + (x - 33) ** 2).sqrt()
    image = torch.full((1, 1, 40, 40), -1.0)
    image[0, 0][r < 16] = 0.8  # scalp
    image[0, 0][r < 13] = -0.95  # skull
    image[0, 0][r < 10] = 0.2  # brain
    body = closed_body(image)[0, 0]
    assert body.dtype == torch.bool and bool(body[r < 15.5].all())  # the skull ring is body again, up to the edge
    assert not bool(body[r > 17.5].any())  # the background stays out
    assert not bool((body_weight(image, margin=0)[0, 0] > 0)[(r >= 10.5) & (r < 12.5)].any())  # the threshold misses it


def test_weight_average_follows_syn_ct_and_synthesises(phantom):
    decay = 0.75
    recipe = build(tiny(phantom, ema_decay=decay))
    start = [p.detach().clone() for p in recipe.nets["Syn_CT"].parameters()]
    assert all(torch.equal(a, b) for a, b in zip(start, recipe.nets["Syn_CT_ema"].parameters()))
    for step in range(2):
        ema_before = [p.detach().clone() for p in recipe.nets["Syn_CT_ema"].parameters()]
        recipe.train_step(recipe.sample_batch(np.random.default_rng(step)), step)
        for e0, e1, p in zip(ema_before, recipe.nets["Syn_CT_ema"].parameters(), recipe.nets["Syn_CT"].parameters()):
            assert torch.allclose(e1, decay * e0 + (1 - decay) * p.detach(), atol=1e-7)
            assert not e1.requires_grad
    # after two steps the average differs from both the start and the trained generator, and synthesis uses it
    ema = list(recipe.nets["Syn_CT_ema"].parameters())
    assert not all(torch.equal(a, b) for a, b in zip(ema, start))
    assert not all(torch.equal(a, b) for a, b in zip(ema, recipe.nets["Syn_CT"].parameters()))
    assert recipe.synthesis_generator() is recipe.nets["Syn_CT_ema"]
    plain = build(tiny(phantom), data=False)
    assert "Syn_CT_ema" not in plain.nets and plain.synthesis_generator() is plain.nets["Syn_CT"]
    with pytest.raises(UserError, match="--ema-decay"):
        build(tiny(phantom, ema_decay=1.0), data=False)


def _loop(steps: int) -> LoopConfig:
    return LoopConfig(steps=steps, log_every=1, checkpoint_every=3, sample_every=0, progress=False,
                      tensorboard=False, prefetch=1)


def test_resume_equals_uninterrupted(phantom, tmp_path):
    # pool_size 2 fills after one step, so later steps exercise the random swaps (torch RNG) and the saved pool.
    # The weight average (ema_decay) is state too.
    config = tiny(phantom, pool_size=2, lr_decay_start=2, lr_decay_end=8, ema_decay=0.9)
    train(build(config), _loop(6), tmp_path / "full")
    train(build(config), _loop(3), tmp_path / "part")
    resume_run(tmp_path / "part", steps=6, device="cpu", progress=False)
    a, b = load_run(tmp_path / "full", "cpu"), load_run(tmp_path / "part", "cpu")
    assert set(a.nets) == {*NETS, "Syn_CT_ema"}
    for k in a.nets:
        for (name, x), y in zip(a.nets[k].state_dict().items(), b.nets[k].state_dict().values()):
            assert torch.allclose(x, y, rtol=0, atol=1e-6), f"{k}.{name}"
    states = [ckpt.read_state_file(p / "checkpoints" / "step_00000006" / "state.pt") for p in (tmp_path / "full", tmp_path / "part")]
    for pool in ("pool_ct", "pool_mr"):
        assert torch.allclose(states[0]["extra"][pool]["images"], states[1]["extra"][pool]["images"], atol=1e-6)
    assert states[0]["optimizers"]["G"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * (1 - 4 / 6))
    rows = [(p / "metrics.csv").read_text().splitlines() for p in (tmp_path / "full", tmp_path / "part")]
    assert [r.split(",")[0] for r in rows[0]] == [r.split(",")[0] for r in rows[1]]
    assert "val_mae_hu" in rows[0][0]


def test_image_pool_rule_and_state():
    pool = ImagePool(3)
    first = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returns its inputs
    assert len(pool) == 3
    torch.manual_seed(0)
    saved = pool.state_dict()
    new = 100 + torch.arange(200.0).reshape(200, 1, 1, 1)
    out = pool.query(new)
    swapped = out != new
    assert 60 < swapped.sum().item() < 140  # about half are answered from the history (probability 1/2)
    # A swapped answer is an earlier image: one of the first three or a new one seen before this position.
    for i in torch.nonzero(swapped.flatten()).flatten().tolist():
        assert out[i].item() < 3 or 100 <= out[i].item() < 100 + i
    assert len(pool) == 3
    # Restoring the state and the RNG replays exactly the same answers.
    other = ImagePool(3)
    other.load_state_dict(saved)
    torch.manual_seed(0)
    assert torch.equal(other.query(new), out)
    assert torch.equal(ImagePool(0).query(new), new)


def test_linear_decay_schedule():
    assert [linear_decay(10, 20, s) for s in (0, 9, 10, 15, 20, 30)] == pytest.approx([1, 1, 1, 0.5, 0, 0])
    assert linear_decay(5, 5, 100) == 1.0  # end <= start: constant


def test_crops_and_d_crop_rules(phantom):
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    corners = np.array([[0, 3], [2, 1]])
    assert torch.equal(crop_batch(x, corners, 5), torch.stack([x[0, :, 0:5, 3:8], x[1, :, 2:7, 1:6]]))
    assert crop_batch(x, corners * 0, 8) is x
    auto = {size: resolve_d_crop(CycleGANConfig(image_size=size)) for size in (64, 96, 128, 256)}
    assert auto == {64: 64, 96: 72, 128: 96, 256: 192}
    with pytest.raises(UserError, match="d-crop"):
        resolve_d_crop(CycleGANConfig(image_size=32, d_crop=16))
    with pytest.raises(UserError, match="image-size"):
        CycleGANRecipe(CycleGANConfig(image_size=30), torch.device("cpu"))


def test_old_run_configs_keep_their_losses():
    from counterfeit.train.recipe import config_from_dict

    # a run saved before the structure loss existed resumes without it; a new run keeps what it saved
    assert config_from_dict(CycleGANConfig, {"lambda_cycle": 10.0}).lambda_structure == 0.0
    assert config_from_dict(CycleGANConfig, {"lambda_structure": 1.0}).lambda_structure == 1.0
    assert CycleGANConfig().lambda_structure == 1.0
    # likewise for the depth channel (round 27), which is on for new runs
    assert config_from_dict(CycleGANConfig, {"lambda_cycle": 2.0}).depth_channel is False
    assert config_from_dict(CycleGANConfig, {"lambda_cycle": 2.0}).lambda_histogram == 0.0
    assert CycleGANConfig().lambda_histogram == 5.0
    assert CycleGANConfig().depth_channel is True
    # and the asinh CT scale (rounds 33-36): new runs use it, runs saved without the key trained on the linear one
    assert CycleGANConfig().ct_scale == "asinh"
    assert config_from_dict(CycleGANConfig, {"lambda_cycle": 2.0}).ct_scale == "linear"
    assert config_from_dict(CycleGANConfig, {"ct_scale": "asinh"}).ct_scale == "asinh"


def test_presets():
    paper = apply_preset(CycleGANConfig, PRESETS, "wolterink2017")
    assert (paper.image_size, paper.ngf, paper.n_blocks, paper.lambda_cycle, paper.lambda_identity) == (256, 64, 9, 10.0, 0.0)
    assert (paper.generator, paper.lambda_structure, paper.context, paper.lr) == ("resnet", 0.0, 1, 2e-4)
    assert (paper.depth_channel, paper.lambda_histogram, paper.ct_scale) == (False, 0.0, "linear")
    fast = apply_preset(CycleGANConfig, PRESETS, "fast", ngf=8)
    assert fast.ngf == 8 and fast.n_blocks == CycleGANConfig().n_blocks
    with pytest.raises(UserError, match="unknown preset"):
        apply_preset(CycleGANConfig, PRESETS, "huge")


def test_context_3_trains_slabs(phantom):
    recipe = build(tiny(phantom, context=3, lambda_identity=0.5))
    batch = recipe.sample_batch(np.random.default_rng(1))
    assert batch["mr"].shape == (2, 4, 32, 32) and batch["ct"].shape == (2, 4, 32, 32)  # 3 slices + the depth map
    assert recipe.nets["Syn_CT"](torch.from_numpy(batch["mr"])).shape == (2, 3, 32, 32)  # a slab out
    losses = recipe.train_step(batch, 0)
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert recipe.synthesis_spec().context == 3


def test_cli_train_and_resume(phantom, tmp_path):
    from counterfeit.cli import app

    out = tmp_path / "run"
    args = ["train", "cyclegan", "--out", str(out), "--phantom", str(phantom), "--image-size", "32", "--ngf", "4",
            "--blocks", "1", "--ndf", "4", "--d-crop", "24", "--steps", "2", "--checkpoint-every", "1",
            "--sample-every", "1", "--no-progress", "--device", "cpu", "--keep-best"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("config.json", "metrics.csv", "loss.png", "samples/step_00000002.png", "tensorboard"):
        assert (out / name).exists(), name
    from counterfeit.train.recipes.cyclegan import CycleGANRecipe
    logged = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    bookkeeping = {"step", "seconds", "data_wait_frac", "lr"}
    assert set(logged) - bookkeeping - set(CycleGANRecipe.log_labels) == set()  # loss.png says what each panel is
    assert [c.step for c in ckpt.list_checkpoints(out)] == [1, 2]  # a new best at a checkpoint step is saved once
    assert json.loads((out / "config.json").read_text())["loop"]["keep_best"] is True
    assert ckpt.read_best(out)["step"] in (1, 2) and ckpt.read_best(out)["metric"].endswith("_mae_hu")
    with pytest.warns(UserWarning, match="now ends at step 3"):  # the extension moves the LR decay's end
        result = CliRunner().invoke(app, ["train", "cyclegan", "--resume", str(out), "--steps", "3", "--no-progress",
                                          "--device", "cpu", "--ngf", "64", "--keep-best"])
    assert result.exit_code == 0, result.output
    assert ckpt.list_checkpoints(out)[-1].step == 3
    assert "--ngf, --keep-best ignored with --resume" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, ["train", "cyclegan", "--out", str(tmp_path / "x"), "--mr", str(phantom)])
    assert isinstance(bad.exception, UserError) and "--mr and --ct" in str(bad.exception)


def test_ct_scale_reaches_training_data_and_synthesis(phantom):
    from counterfeit.data.phantom import load_dataset, subject_paths
    from counterfeit.data.volumes import read_volume
    from counterfeit.medical.intensity import ct_to_unit, unit_to_ct
    from counterfeit.medical.slicing import volume_slices
    from counterfeit.medical.synthesize import normalise_mr, predict_unit_slices, synthesize_volume

    linear = build(tiny(phantom, ct_scale="linear", depth_channel=False))
    asinh = build(tiny(phantom, depth_channel=False))  # the default scale
    assert linear.synthesis_spec().ct_scale == "linear"
    for lin, asi in zip(linear.data.ct, asinh.data.ct):  # the same CTs, on the other scale
        np.testing.assert_allclose(asi, ct_to_unit(unit_to_ct(lin), scale="asinh"), atol=1e-4)
    spec = asinh.synthesis_spec()
    assert spec.ct_scale == "asinh"
    mr = read_volume(subject_paths(phantom, load_dataset(phantom)["splits"]["test"][0])["mr"], modality="mr")
    unit = predict_unit_slices(spec, volume_slices(normalise_mr(spec, mr.array), context=spec.context))
    np.testing.assert_allclose(synthesize_volume(asinh, mr).array, unit_to_ct(unit, scale="asinh"), rtol=1e-5, atol=1e-2)
    with pytest.raises(UserError, match="--ct-scale"):
        build(tiny(phantom, ct_scale="log"), data=False)
    # the asinh scale's width reaches the training data and synthesis too
    wide = build(tiny(phantom, depth_channel=False, asinh_width=400.0))
    for lin, w in zip(linear.data.ct, wide.data.ct):
        np.testing.assert_allclose(w, ct_to_unit(unit_to_ct(lin), scale="asinh", asinh_width=400.0), atol=1e-4)
    spec = wide.synthesis_spec()
    assert spec.asinh_width == 400.0
    unit = predict_unit_slices(spec, volume_slices(normalise_mr(spec, mr.array), context=spec.context))
    np.testing.assert_allclose(synthesize_volume(wide, mr).array, unit_to_ct(unit, scale="asinh", asinh_width=400.0),
                               rtol=1e-5, atol=1e-2)
    with pytest.raises(UserError, match="--asinh-width"):
        build(tiny(phantom, asinh_width=-1.0), data=False)


def test_depth_channel_feeds_every_network_and_synthesis(phantom, tmp_path):
    from counterfeit.data.phantom import load_dataset, subject_paths
    from counterfeit.data.volumes import read_volume
    from counterfeit.medical.intensity import depth_map, unit_to_ct
    from counterfeit.medical.synthesize import input_slices, normalise_mr, predict_unit_slices, synthesize_volume

    config = tiny(phantom, depth_channel=True, pool_size=2, lambda_histogram=1.0)
    recipe = build(config)
    assert all(recipe.nets[k].in_channels == 2 for k in NETS)  # image + depth, the discriminators too
    batch = recipe.sample_batch(np.random.default_rng(0))
    assert batch["mr"].shape[1] == batch["ct"].shape[1] == 2
    before = {k: [p.detach().clone() for p in recipe.nets[k].parameters()] for k in NETS}
    out = recipe.train_step(batch, 0)
    # the histogram term compares depth band by depth band: the crops hold several bands and the body's outside
    bands = depth_bands(torch.from_numpy(batch["mr"][:, -1:]))
    assert -1 in bands and len(set(bands.unique().tolist()) - {-1}) >= 3
    assert torch.isfinite(out["histogram"]) and float(out["histogram"]) > 0
    for k in NETS:
        assert all(not torch.equal(a, b) for a, b in zip(before[k], recipe.nets[k].parameters())), k
    # The pool keeps each fake with its source's depth map.
    assert recipe.pools["ct"].state_dict()["images"].shape[1] == 2
    # Synthesis computes the MR's depth map from its own body mask and spacing, as training did.
    mr = read_volume(subject_paths(phantom, load_dataset(phantom)["splits"]["test"][0])["mr"], modality="mr")
    spec = recipe.synthesis_spec()
    depth = depth_map(mr.array, "mr", mr.spacing)
    expected = unit_to_ct(predict_unit_slices(spec, input_slices(spec, normalise_mr(spec, mr.array), depth)),
                          spec.hu_window, spec.ct_scale)
    np.testing.assert_allclose(synthesize_volume(recipe, mr).array, expected, rtol=1e-5, atol=1e-2)
    with pytest.raises(ValueError, match="depth map"):
        input_slices(spec, normalise_mr(spec, mr.array))
    # Exact resume holds with the extra channel (the loop's generic test covers the rest).
    train(build(config), _loop(4), tmp_path / "full")
    train(build(config), _loop(2), tmp_path / "part")
    resume_run(tmp_path / "part", steps=4, device="cpu", progress=False)
    a, b = load_run(tmp_path / "full", "cpu"), load_run(tmp_path / "part", "cpu")
    for k in NETS:
        for x, y in zip(a.nets[k].state_dict().values(), b.nets[k].state_dict().values()):
            assert torch.allclose(x, y, rtol=0, atol=1e-6), k


def test_upsample_option_reaches_both_generators_and_old_runs_keep_transposed_convs(phantom):
    from torch import nn

    from counterfeit.train.recipe import config_from_dict
    from counterfeit.train.recipes.paired import PairedConfig, PairedRecipe

    def kinds(net: nn.Module) -> set[type]:
        return {type(m) for m in net.modules() if isinstance(m, (nn.Upsample, nn.ConvTranspose2d))}

    for upsample, expected in (("resize", {nn.Upsample}), ("transpose", {nn.ConvTranspose2d})):
        recipe = build(tiny(phantom, upsample=upsample), data=False)
        assert kinds(recipe.nets["Syn_CT"]) == kinds(recipe.nets["Syn_MR"]) == expected
        paired = PairedRecipe(PairedConfig(image_size=32, ngf=4, n_blocks=1, ndf=4, d_crop=24, upsample=upsample,
                                           preview_subjects=0), torch.device("cpu"))
        assert kinds(paired.nets["G"]) == expected
    with pytest.raises(UserError, match="--upsample"):
        build(tiny(phantom, upsample="bilinear"), data=False)
    assert CycleGANConfig().upsample == PairedConfig().upsample == "resize"  # the default since round 41
    # a run saved before the option existed was trained with the paper's transposed convolutions
    assert config_from_dict(CycleGANConfig, {"lambda_cycle": 2.0}).upsample == "transpose"
    assert config_from_dict(PairedConfig, {"lambda_l1": 100.0}).upsample == "transpose"
    assert apply_preset(CycleGANConfig, PRESETS, "wolterink2017").upsample == "transpose"


def test_d_norm_sets_the_discriminators_norm_only(phantom):
    from torch import nn

    from counterfeit.train.recipes.paired import PairedConfig, PairedRecipe

    def norms(net: nn.Module) -> set[type]:
        kinds = (nn.InstanceNorm2d, nn.GroupNorm, nn.BatchNorm2d)
        return {type(m) for m in net.modules() if isinstance(m, kinds)}

    default = build(tiny(phantom), data=False)
    assert norms(default.nets["Dis_CT"]) == norms(default.nets["Syn_CT"]) == {nn.InstanceNorm2d}
    for d_norm, expected in (("none", set()), ("layer", {nn.GroupNorm}), ("instance", {nn.InstanceNorm2d})):
        recipe = build(tiny(phantom, d_norm=d_norm), data=False)
        assert norms(recipe.nets["Dis_CT"]) == norms(recipe.nets["Dis_MR"]) == expected
        assert norms(recipe.nets["Syn_CT"]) == norms(recipe.nets["Syn_MR"]) == {nn.InstanceNorm2d}
    paired = PairedRecipe(PairedConfig(image_size=32, ngf=4, n_blocks=1, ndf=4, d_crop=24, d_norm="none",
                                       preview_subjects=0), torch.device("cpu"))
    assert norms(paired.nets["D"]) == set() and norms(paired.nets["G"]) == {nn.InstanceNorm2d}
    with pytest.raises(UserError, match="--d-norm"):
        build(tiny(phantom, d_norm="group"), data=False)


def test_help_states_each_presets_value_as_the_configs_hold_it():
    """The preset values quoted in `train cyclegan/paired --help` are the configs' and PRESETS' own."""
    import re
    import typing

    from counterfeit.cli import train_cyclegan as cli
    from counterfeit.train.recipes import paired
    from counterfeit.train.recipes.cyclegan import PRESETS, CycleGANConfig

    fields = {"ImageSize": "image_size", "Context": "context", "BatchSize": "batch_size", "Ngf": "ngf",
              "Blocks": "n_blocks", "Ndf": "ndf", "DLayers": "d_layers", "Upsample": "upsample", "Generator": "generator"}
    for option, field in fields.items():
        text = typing.get_args(getattr(cli, option))[1].help
        both = re.search(r"Both presets: (\w+)\.", text)
        fast, paper = (both.group(1),) * 2 if both else re.search(r"Preset fast: (\w+); wolterink2017: (\w+)\.", text).groups()
        for presets, config in ((PRESETS, CycleGANConfig()), (paired.PRESETS, paired.PairedConfig())):
            assert str(presets["fast"].get(field, getattr(config, field))) == fast, option
            assert str(presets["wolterink2017"].get(field, getattr(config, field))) == paper, option
