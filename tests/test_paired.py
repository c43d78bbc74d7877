"""Paired MR -> CT baseline: exact losses, both networks train, misaligned CT as target, U-Net option, resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from counterfeit.data.phantom import generate_dataset, load_dataset, subject_paths
from counterfeit.data.volumes import Volume, read_volume
from counterfeit.errors import UserError
from counterfeit.medical.intensity import ct_to_unit
from counterfeit.medical.synthesize import synthesize_volume
from counterfeit.train.loop import LoopConfig, load_run, resume_run, train
from counterfeit.train.recipes.mr2ct_common import unet_depth
from counterfeit.train.recipes.paired import PairedConfig, PairedRecipe


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("phantom"), 4, shape=(8, 32, 32), seed=5, workers=1)


def tiny(phantom, **kw) -> PairedConfig:
    base = dict(phantom=str(phantom), image_size=32, batch_size=2, ngf=4, n_blocks=1, ndf=4, d_crop=24,
                preview_subjects=1)
    base.update(kw)
    return PairedConfig(**base)


def build(config: PairedConfig, seed: int = 0) -> PairedRecipe:
    torch.manual_seed(seed)
    recipe = PairedRecipe(config, torch.device("cpu"))
    recipe.setup_data()
    return recipe


def _crop(x, corners, size):
    return torch.stack([x[i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(corners)])


def test_losses_match_hand_computation(phantom):
    recipe = build(tiny(phantom, lambda_l1=37.0))
    g, d = copy.deepcopy(recipe.nets["G"]), copy.deepcopy(recipe.nets["D"])
    batch = recipe.sample_batch(np.random.default_rng(2))
    got = recipe.train_step(batch, 0)
    mr, ct, crops, s = torch.from_numpy(batch["mr"]), torch.from_numpy(batch["ct"]), batch["crops"], recipe.d_crop
    with torch.no_grad():
        fake = g(mr)
        adv = ((d(_crop(torch.cat([mr, fake], 1), crops[:, 1], s)) - 1) ** 2).mean()
        l1 = (fake - ct).abs().mean()
        loss_d = ((d(_crop(torch.cat([mr, ct], 1), crops[:, 0], s)) - 1) ** 2).mean() + \
            (d(_crop(torch.cat([mr, fake], 1), crops[:, 1], s)) ** 2).mean()
    expected = {"adv": adv, "l1": l1, "loss_g": adv + 37.0 * l1, "loss_d": loss_d}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), key


def test_one_step_changes_both_networks(phantom):
    recipe = build(tiny(phantom))
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in recipe.nets.items()}
    recipe.train_step(recipe.sample_batch(np.random.default_rng(0)), 0)
    for k, net in recipe.nets.items():
        assert all(not torch.equal(a, b) for a, b in zip(before[k], net.parameters())), k
    assert recipe.nets["D"].in_channels == 3  # conditional: MR and its depth map stacked with a CT


def test_trains_on_the_misaligned_ct_never_the_ground_truth(phantom):
    recipe = build(tiny(phantom))
    info = load_dataset(phantom)
    first = subject_paths(info["root"], info["splits"]["train"][0])
    scale = recipe.config.ct_scale
    ct = ct_to_unit(read_volume(first["ct"], modality="ct").array, scale=scale)
    truth = ct_to_unit(read_volume(first["ct_aligned"], modality="ct").array, scale=scale)
    assert np.allclose(recipe.data.ct[0], ct)
    assert not np.allclose(recipe.data.ct[0], truth)
    # Paired batches: MR and CT from the same subject and slice (same crop); structure must correlate.
    mr, ct_batch = recipe.sampler.sample(np.random.default_rng(0), 4)
    assert mr.shape == (4, 2, 32, 32) and ct_batch.shape == (4, 1, 32, 32)  # MR + its depth map; CT
    for a, b in zip(mr, ct_batch):
        assert np.corrcoef((a[:1] > -0.9).ravel(), (b > -0.9).ravel())[0, 1] > 0.5


def test_unet_generator_and_inference_padding(phantom):
    assert unet_depth(PairedConfig(image_size=96)) == 5 and unet_depth(PairedConfig(image_size=32)) == 5
    recipe = build(tiny(phantom, generator="unet", unet_depth=3))
    assert recipe.size_multiple == 8
    losses = recipe.train_step(recipe.sample_batch(np.random.default_rng(0)), 0)
    assert all(np.isfinite(float(v)) for v in losses.values())
    mr = Volume(np.random.default_rng(0).random((3, 27, 30)).astype(np.float32), spacing=(0.9, 0.8, 3.0))
    sct = synthesize_volume(recipe, mr)
    assert sct.shape == mr.shape and sct.spacing == mr.spacing
    with pytest.raises(UserError, match="U-Net"):
        PairedRecipe(PairedConfig(generator="unet", unet_depth=4, image_size=40, d_crop=24), torch.device("cpu"))
    with pytest.raises(UserError, match="--generator"):
        PairedRecipe(PairedConfig(generator="vit"), torch.device("cpu"))


def test_resume_equals_uninterrupted(phantom, tmp_path):
    config = tiny(phantom, lr_decay_start=1, lr_decay_end=5)
    loop = dict(log_every=1, checkpoint_every=2, sample_every=0, progress=False, tensorboard=False)
    train(build(config), LoopConfig(steps=4, **loop), tmp_path / "full")
    train(build(config), LoopConfig(steps=2, **loop), tmp_path / "part")
    resume_run(tmp_path / "part", steps=4, device="cpu", progress=False)
    a, b = load_run(tmp_path / "full", "cpu"), load_run(tmp_path / "part", "cpu")
    for k in ("G", "D"):
        for (name, x), y in zip(a.nets[k].state_dict().items(), b.nets[k].state_dict().values()):
            assert torch.allclose(x, y, rtol=0, atol=1e-6), f"{k}.{name}"


def test_extending_a_run_stretches_its_decay_and_trains_on(phantom, tmp_path):
    """`--resume --steps` past a run's total: the decay that reached 0 at the old total moves to the new one."""
    from safetensors.torch import load_file

    from counterfeit.train import checkpoint as ckpt

    run = tmp_path / "run"
    loop = dict(log_every=1, checkpoint_every=1, keep_checkpoints=10, sample_every=0, progress=False, tensorboard=False)
    train(build(tiny(phantom, lr_decay_start=2, lr_decay_end=4)), LoopConfig(steps=4, **loop), run)
    with pytest.warns(UserWarning, match="now ends at step 8"):
        resume_run(run, steps=8, device="cpu", progress=False)
    saved = json.loads((run / "config.json").read_text())
    assert (saved["config"]["lr_decay_start"], saved["config"]["lr_decay_end"], saved["loop"]["steps"]) == (4, 8, 8)
    assert saved["total_changes"] == [{"at_step": 4, "steps_from": 4, "steps_to": 8}]
    rows = (run / "metrics.csv").read_text().splitlines()
    lr_column = rows[0].split(",").index("lr")
    factors = [float(r.split(",")[lr_column]) / 2e-4 for r in rows[1:]]  # the rate after each step
    # steps 1-4 decay over (2, 4]; steps 5-8 over (4, 8], not at the 0 the run had decayed to
    assert factors == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.75, 0.5, 0.25, 0.0])
    step = {c.step: c.path for c in ckpt.list_checkpoints(run)}
    g4, g5 = load_file(str(step[4] / "G.safetensors")), load_file(str(step[5] / "G.safetensors"))
    assert any(not g4[k].equal(g5[k]) for k in g4)  # step 5 trained at the full rate, not at 0
    with pytest.raises(UserError, match="below the step the run has reached"):
        resume_run(run, steps=6, device="cpu", progress=False)


def test_depth_channel_is_an_input_of_g_and_d(phantom):
    assert PairedConfig().depth_channel is True  # the default, as for the CycleGAN
    from counterfeit.train.recipe import config_from_dict

    assert config_from_dict(PairedConfig, {"lambda_l1": 100.0}).depth_channel is False  # a run saved before it existed
    # likewise the asinh CT scale (round 36)
    assert PairedConfig().ct_scale == "asinh"
    assert config_from_dict(PairedConfig, {"lambda_l1": 100.0}).ct_scale == "linear"
    recipe = build(tiny(phantom, depth_channel=True))
    c = recipe.config.context
    assert recipe.nets["G"].in_channels == c + 1 and recipe.nets["D"].in_channels == c + 2  # (MR, depth) + CT
    batch = recipe.sample_batch(np.random.default_rng(0))
    assert batch["mr"].shape[1] == c + 1 and batch["ct"].shape[1] == 1
    before = {k: [p.detach().clone() for p in recipe.nets[k].parameters()] for k in ("G", "D")}
    recipe.train_step(batch, 0)
    for k in ("G", "D"):
        assert all(not torch.equal(a, b) for a, b in zip(before[k], recipe.nets[k].parameters())), k
    mr = read_volume(subject_paths(phantom, load_dataset(phantom)["splits"]["test"][0])["mr"], modality="mr")
    sct = synthesize_volume(recipe, mr)
    assert sct.array.shape == mr.array.shape and np.isfinite(sct.array).all()


def _folders(phantom, tmp_path):
    """--mr/--ct folders (one file per subject) from the phantom: MR and its registered (aligned) CT."""
    import shutil

    mr_dir, ct_dir = tmp_path / "mr", tmp_path / "ct"
    mr_dir.mkdir()
    ct_dir.mkdir()
    for sid in load_dataset(phantom)["subjects"]:
        paths = subject_paths(phantom, sid)
        shutil.copy(paths["mr"], mr_dir / f"{sid}.nii.gz")
        shutil.copy(paths["ct_aligned"], ct_dir / f"{sid}.nii.gz")
    return mr_dir, ct_dir


def test_folder_data_holds_out_val_subjects_for_the_validation_mae(phantom, tmp_path):
    from counterfeit.train.recipe import validation_mae
    from counterfeit.train.recipes.cyclegan import CycleGANConfig, CycleGANRecipe

    mr_dir, ct_dir = _folders(phantom, tmp_path)
    folders = dict(phantom=None, mr_dir=str(mr_dir), ct_dir=str(ct_dir))
    def on_folders(**kw) -> PairedConfig:
        return PairedConfig(**{**tiny(phantom).__dict__, **folders, **kw})

    plain = build(on_folders())
    assert plain.data.preview_split == "train" and len(plain.data.mr) == 4
    assert validation_mae(plain.metrics(0)) is None  # a training subject's MAE never selects checkpoints

    held = build(on_folders(val_subjects=1))
    assert held.data.preview_split == "val" and [c.name for c in held.data.preview] == ["sub-003"]
    assert len(held.data.mr) == len(held.data.ct) == 3
    assert validation_mae(held.metrics(0))[0] == "val_mae_hu"

    def cyclegan(**kw) -> CycleGANRecipe:
        small = dict(image_size=32, ngf=4, n_blocks=1, ndf=4, d_crop=24, preview_subjects=1)
        return CycleGANRecipe(CycleGANConfig(**small, **folders, **kw), torch.device("cpu"))

    cyc = cyclegan(val_subjects=2)
    cyc.setup_data()  # unpaired: the held-out subjects' CTs leave the CT pool too
    assert len(cyc.data.mr) == len(cyc.data.ct) == 2 and cyc.data.preview_split == "val"

    with pytest.raises(UserError, match="leaves no subject to train on"):
        build(on_folders(val_subjects=4))
    (ct_dir / "sub-003.nii.gz").unlink()
    (ct_dir / "sub-002.nii.gz").unlink()
    with pytest.raises(UserError, match="only 2 subject"):
        cyclegan(val_subjects=3).setup_data()
    with pytest.raises(UserError, match="a phantom has its own val split"):
        build(tiny(phantom, val_subjects=1))
    (tmp_path / "nested" / "sub-000").mkdir(parents=True)  # a phantom-like layout: the hint must fit `train`
    with pytest.raises(UserError, match="sub-folders are not searched") as err:
        build(on_folders(ct_dir=str(tmp_path / "nested")))
    assert "--pred-name" not in str(err.value)


def test_folder_data_scores_only_cts_on_the_mrs_grid(phantom, tmp_path):
    """A same-named CT of the right shape but shifted by 25 mm is not scored: not held out, not previewed."""
    import SimpleITK as sitk
    from counterfeit.train.recipes.cyclegan import CycleGANConfig, CycleGANRecipe

    mr_dir, ct_dir = _folders(phantom, tmp_path)
    path = ct_dir / "sub-003.nii.gz"
    img = sitk.ReadImage(str(path))
    img.SetOrigin([o + 25.0 for o in img.GetOrigin()])
    sitk.WriteImage(img, str(path))
    small = dict(image_size=32, ngf=4, n_blocks=1, ndf=4, d_crop=24, preview_subjects=4,
                 phantom=None, mr_dir=str(mr_dir), ct_dir=str(ct_dir))
    held = CycleGANRecipe(CycleGANConfig(**small, val_subjects=1), torch.device("cpu"))
    held.setup_data()  # unpaired: the shifted CT may train, but it cannot be the validation reference
    assert [c.name for c in held.data.preview] == ["sub-002"]
    plain = CycleGANRecipe(CycleGANConfig(**small), torch.device("cpu"))
    plain.setup_data()
    scored = {c.name: c.ct_hu is not None for c in plain.data.preview}
    assert scored == {"sub-000": True, "sub-001": True, "sub-002": True, "sub-003": False}
    with pytest.raises(UserError, match=r"only 3 subject.*sub-003.nii.gz: origin"):
        CycleGANRecipe(CycleGANConfig(**small, val_subjects=4), torch.device("cpu")).setup_data()


def test_folder_data_is_sliced_axially_whatever_the_files_axis_order(phantom, tmp_path):
    """One subject stored sagittally (and its CT too) trains on the same axial slices as when stored axially."""
    import SimpleITK as sitk

    mr_dir, ct_dir = _folders(phantom, tmp_path)
    folders = dict(phantom=None, mr_dir=str(mr_dir), ct_dir=str(ct_dir), depth_channel=True)
    axial = build(PairedConfig(**{**tiny(phantom).__dict__, **folders}))
    for folder in (mr_dir, ct_dir):
        path = folder / "sub-001.nii.gz"
        sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(path)), "PSL"), str(path))
    sagittal = build(PairedConfig(**{**tiny(phantom).__dict__, **folders}))
    assert sitk.ReadImage(str(mr_dir / "sub-001.nii.gz")).GetSize()[2] == 32  # stored with left-right as axis 0
    for name in ("mr", "ct", "mr_depth"):
        for a, b in zip(getattr(axial.data, name), getattr(sagittal.data, name)):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_cli_keep_best_on_folders_needs_val_subjects(phantom, tmp_path):
    from typer.testing import CliRunner

    from counterfeit.cli import app

    mr_dir, ct_dir = _folders(phantom, tmp_path)
    args = ["train", "paired", "--mr", str(mr_dir), "--ct", str(ct_dir), "--image-size", "32", "--ngf", "4",
            "--blocks", "1", "--ndf", "4", "--d-crop", "24", "--steps", "2", "--no-progress", "--keep-best"]
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert isinstance(bad.exception, UserError) and "--val-subjects" in str(bad.exception)
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--val-subjects", "1", "--metrics-every", "1"])
    assert res.exit_code == 0, res.output
    best = json.loads((tmp_path / "b" / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "val_mae_hu"


def test_an_image_size_beyond_every_slice_warns(phantom):
    with pytest.warns(UserWarning, match="larger than every training slice \\(at most 32x32"):
        build(tiny(phantom, image_size=64, d_crop=48))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(tiny(phantom))  # 32 on 32x32 slices: no warning


def test_torchrun_batch_that_does_not_split_is_refused_before_anything_starts(phantom, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the check comes before joining a process group
    recipe = PairedRecipe(tiny(phantom, batch_size=3), torch.device("cpu"))
    with pytest.raises(UserError, match=r"--batch-size 3 is the global batch.*2 processes.*--batch-size 2\)"):
        train(recipe, LoopConfig(steps=1, progress=False), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_learning_rate_of_nan_is_an_option_error(phantom):
    from counterfeit.train.recipes.mr2ct_common import validate_common

    with pytest.raises(UserError, match="--lr must be a finite number > 0, got nan"):
        validate_common(tiny(phantom, lr=float("nan")))


def test_train_without_data_regenerates_its_phantom_when_the_options_change(tmp_path):
    from typer.testing import CliRunner

    from counterfeit.cli import app

    tiny_args = ["train", "paired", "--out", str(tmp_path / "run"), "--phantom-shape", "8,32,32", "--image-size", "32",
                 "--ngf", "4", "--blocks", "1", "--ndf", "4", "--d-crop", "24", "--steps", "1", "--no-progress",
                 "--device", "cpu"]
    first = CliRunner().invoke(app, [*tiny_args, "--phantom-subjects", "3"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*tiny_args, "--phantom-subjects", "4", "--overwrite"])
    assert again.exit_code == 0, again.output
    assert "generating it again" in again.output
    assert len(load_dataset(tmp_path / "run" / "phantom")["subjects"]) == 4  # it trained on the phantom asked for


def test_an_image_too_small_for_the_patchgan_names_the_options_given(phantom):
    from counterfeit.train.recipes.mr2ct_common import resolve_d_crop

    with pytest.raises(UserError, match=r"--image-size 12 is smaller than the smallest input of a 3-layer PatchGAN"):
        resolve_d_crop(tiny(phantom, image_size=12, d_crop=None))
    with pytest.raises(UserError, match=r"--d-crop must be between"):  # a crop given is still the one blamed
        resolve_d_crop(tiny(phantom, image_size=32, d_crop=40))
