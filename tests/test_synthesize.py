"""Whole-volume synthesis: geometry preserved, same as slice-by-slice, training normalisation, files, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from counterfeit.data.phantom import generate_dataset
from counterfeit.data.volumes import Volume, read_volume, write_volume
from counterfeit.errors import UserError
from counterfeit.medical.intensity import HU_WINDOW, mr_to_unit, unit_to_ct
from counterfeit.medical.synthesize import SynthesisSpec, synthesize_path, synthesize_volume
from counterfeit.nets.resnet import ResnetGenerator
from counterfeit.train.loop import LoopConfig, load_run, train
from counterfeit.train.recipes.cyclegan import CycleGANConfig, CycleGANRecipe

DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated 90 degrees about z


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mr(shape=(5, 26, 30), seed=0, direction=DIRECTION) -> Volume:
    rng = np.random.default_rng(seed)
    array = (rng.random(shape) * 500 + 20).astype(np.float32)
    return Volume(array, spacing=(0.8, 0.9, 2.5), origin=(-10.0, 4.5, 33.0), direction=direction)


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # the layout synthesis slices in: axis 0 runs inferior->superior


def _generator(in_channels=1, out_channels=1, seed=0) -> ResnetGenerator:
    torch.manual_seed(seed)
    return ResnetGenerator(in_channels, out_channels, ngf=4, n_blocks=1).train()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A CycleGAN run trained for two steps on a tiny phantom."""
    root = tmp_path_factory.mktemp("synth")
    phantom = generate_dataset(root / "phantom", 3, shape=(6, 24, 24), seed=1, workers=1)
    config = CycleGANConfig(phantom=str(phantom), image_size=24, ngf=4, n_blocks=1, ndf=4, d_crop=24,
                            mr_percentiles=(2.0, 98.0), preview_subjects=0)
    torch.manual_seed(0)
    recipe = CycleGANRecipe(config, torch.device("cpu"))
    train(recipe, LoopConfig(steps=2, checkpoint_every=0, sample_every=0, progress=False, tensorboard=False),
          root / "run")
    return root / "run"


def test_geometry_shape_and_range_preserved():
    mr = _mr()
    sct = synthesize_volume(_generator(), mr)
    assert sct.shape == mr.shape  # 26x30 is not a multiple of 4: padded, then cropped back
    assert (sct.spacing, sct.origin, sct.direction) == (mr.spacing, mr.origin, mr.direction)
    assert sct.array.dtype == np.float32
    assert HU_WINDOW[0] <= sct.array.min() and sct.array.max() <= HU_WINDOW[1]


def test_equals_slice_by_slice_computation():
    mr, gen = _mr(direction=AXIAL), _generator()
    sct = synthesize_volume(gen, mr, batch_size=2).array
    assert gen.training  # the caller's mode is restored
    unit = mr_to_unit(mr.array)
    gen.eval()
    for k in (0, 3):
        x = np.pad(unit[k], ((0, 2), (0, 2)), mode="edge")[None, None]  # 26x30 -> 28x32
        with torch.no_grad():
            y = gen(torch.from_numpy(x))[0, 0, :26, :30].numpy()
        assert np.allclose(sct[k], unit_to_ct(y), atol=1e-3), k
    # Batching does not change the answer (no batch statistics at inference).
    assert np.allclose(synthesize_volume(gen, mr, batch_size=5).array, sct, atol=1e-3)


def test_any_stored_axis_order_is_synthesised_from_axial_slices():
    """A sagittal or rotated file of the same head gives the same synthetic CT, on its own grid."""
    import SimpleITK as sitk

    from counterfeit.data.volumes import axial_view

    axial, gen = _mr(shape=(6, 12, 16), direction=AXIAL), _generator()
    expected = synthesize_volume(gen, axial)
    for code in ("PSL", "RAI", "ASL"):  # sagittal (axis 0 left-right), flipped axial, sagittal the other way
        stored = Volume.from_sitk(sitk.DICOMOrient(axial.to_sitk(), code))
        assert stored.shape != axial.shape or code == "RAI"
        sct = synthesize_volume(gen, stored)
        assert (sct.shape, sct.spacing, sct.origin, sct.direction) == (stored.shape, stored.spacing, stored.origin,
                                                                       stored.direction)
        view, _ = axial_view(sct)
        np.testing.assert_array_equal(view.array, expected.array, err_msg=code)
        np.testing.assert_allclose(view.origin, axial.origin, atol=1e-6)


def test_context_3_uses_neighbours_and_middle_output():
    mr = _mr(direction=AXIAL)
    gen = _generator(3, 3)
    spec = SynthesisSpec(gen, context=3)
    sct = synthesize_volume(spec, mr).array
    unit = mr_to_unit(mr.array)
    gen.eval()
    stack = np.stack([unit[0], unit[0], unit[1]])  # the first slice repeats at the edge
    x = np.pad(stack, ((0, 0), (0, 2), (0, 2)), mode="edge")[None]
    with torch.no_grad():
        y = gen(torch.from_numpy(x))[0, 1, :26, :30].numpy()  # middle output channel
    assert np.allclose(sct[0], unit_to_ct(y), atol=1e-3)


def test_recipe_normalises_as_in_training(run_dir):
    recipe = load_run(run_dir, "cpu")
    spec = recipe.synthesis_spec()
    assert spec.mr_percentiles == (2.0, 98.0) and spec.generator is recipe.nets["Syn_CT"]
    mr = _mr(seed=1)
    assert spec.depth_channel  # the default: the MR's depth map is an input channel
    assert spec.ct_scale == "asinh"  # the default: outputs go back to HU through sinh
    expected = synthesize_volume(SynthesisSpec(recipe.nets["Syn_CT"], mr_percentiles=(2.0, 98.0), depth_channel=True,
                                               ct_scale="asinh"), mr).array
    assert np.array_equal(synthesize_volume(recipe, mr).array, expected)
    other = synthesize_volume(SynthesisSpec(recipe.nets["Syn_CT"], depth_channel=True, ct_scale="asinh"),
                              mr).array  # default percentiles differ
    assert not np.allclose(other, expected)


def test_synthesize_path_file_and_folder(run_dir, tmp_path):
    mr = _mr()
    src = write_volume(mr, tmp_path / "in" / "sub-a.nii.gz")
    write_volume(_mr(seed=2), tmp_path / "in" / "sub-b.mha")
    [(out, seconds)] = synthesize_path(run_dir, src, tmp_path / "sct.mha", "cpu")
    assert out == tmp_path / "sct.mha" and seconds > 0
    back = read_volume(out, modality="ct")
    assert back.shape == mr.shape
    assert np.allclose(back.spacing, mr.spacing) and np.allclose(back.origin, mr.origin)
    assert np.allclose(back.direction, mr.direction)
    assert np.allclose(back.array, synthesize_volume(load_run(run_dir, "cpu"), mr).array, atol=1e-3)
    results = synthesize_path(run_dir, tmp_path / "in", tmp_path / "folder", "cpu", suffix=".nii")
    assert [p.name for p, _ in results] == ["sub-a.nii", "sub-b.nii"]
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["sub-a.nii", "sub-b.nii"]  # no temp files left
    with pytest.raises(UserError, match="must be a folder"):
        synthesize_path(run_dir, tmp_path / "in", tmp_path / "x.nii.gz", "cpu")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="must be a folder"):  # an existing file of another kind
        synthesize_path(run_dir, tmp_path / "in", tmp_path / "notes.txt", "cpu")
    with pytest.raises(UserError, match="cannot create output folder"):  # before any volume is computed
        synthesize_path(run_dir, tmp_path / "in", tmp_path / "notes.txt" / "sub", "cpu")
    # one file into an existing folder: named after the input, with the output suffix
    [(into, _)] = synthesize_path(run_dir, src, tmp_path / "folder", "cpu")
    assert into == tmp_path / "folder" / "sub-a.nii.gz" and into.is_file()
    with pytest.raises(UserError, match="needs a volume extension"):  # a new name without one is still refused
        synthesize_path(run_dir, src, tmp_path / "not_there", "cpu")
    # an output that would replace an input MR is refused before anything is written: a file into its own folder,
    # a folder into itself, a file onto itself
    before = (tmp_path / "in" / "sub-a.nii.gz").read_bytes()
    for args in ((src, tmp_path / "in"), (tmp_path / "in", tmp_path / "in"), (src, src)):
        with pytest.raises(UserError, match="would overwrite the input MR"):
            synthesize_path(run_dir, *args, "cpu")
    assert (tmp_path / "in" / "sub-a.nii.gz").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["sub-a.nii.gz", "sub-b.mha"]
    # a bad input anywhere in a folder is found before anything is written
    mixed = tmp_path / "mixed"
    write_volume(_mr(), mixed / "sub-a.nii.gz")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(mixed / "sub-z.nii.gz"))  # a 2D image, last by name
    with pytest.raises(UserError, match=r"sub-z.nii.gz: is a 2D image"):
        synthesize_path(run_dir, mixed, tmp_path / "mixed_out", "cpu")
    assert not (tmp_path / "mixed_out").exists()
    flat = tmp_path / "flat.nii.gz"
    write_volume(_mr().with_array(np.full(_mr().shape, 7.0, np.float32)), flat)
    with pytest.raises(UserError, match=r"flat\.nii\.gz: MR normalisation: the volume is constant"):
        synthesize_path(run_dir, flat, tmp_path / "flat_sct.nii.gz", "cpu")


def test_cli(run_dir, tmp_path):
    from counterfeit.cli import app

    src = write_volume(_mr(), tmp_path / "mr.nii.gz")
    result = CliRunner().invoke(app, ["synthesize", "--model", str(run_dir), "--input", str(src),
                                      "--output", str(tmp_path / "sct.nii.gz"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "s per volume" in result.output and (tmp_path / "sct.nii.gz").is_file()
    # which weights, and why: this run kept no best checkpoint
    assert f"model: {run_dir / 'checkpoints' / 'step_00000002'} (newest: the run kept no best checkpoint)" in result.output
    phantom = run_dir.parent / "phantom"
    result = CliRunner().invoke(app, ["synthesize", "--model", str(run_dir), "--input", str(phantom),
                                      "--input-name", "mr.nii.gz", "--output", str(tmp_path / "all"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["sub-000.nii.gz", "sub-001.nii.gz", "sub-002.nii.gz"]
    wrong = CliRunner().invoke(app, ["synthesize", "--model", str(run_dir), "--layout", str(src), "--output", str(tmp_path)])
    assert isinstance(wrong.exception, UserError) and "crn" in str(wrong.exception)
    latest = CliRunner().invoke(app, ["synthesize", "--model", str(run_dir), "--input", str(src), "--weights", "latest",
                                      "--output", str(tmp_path / "latest.nii.gz"), "--device", "cpu"])
    assert latest.exit_code == 0, latest.output  # a run without --keep-best: best and latest are the same checkpoint
    assert "(newest)" in latest.output
    from counterfeit.data.volumes import read_volume

    assert np.array_equal(read_volume(tmp_path / "latest.nii.gz").array, read_volume(tmp_path / "sct.nii.gz").array)
    as_int = CliRunner().invoke(app, ["synthesize", "--model", str(run_dir), "--input", str(src), "--dtype", "int16",
                                      "--output", str(tmp_path / "sct16.nii.gz"), "--device", "cpu"])
    assert as_int.exit_code == 0, as_int.output
    import SimpleITK as sitk

    assert sitk.ReadImage(str(tmp_path / "sct16.nii.gz")).GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(read_volume(tmp_path / "sct16.nii.gz").array,
                                  np.rint(read_volume(tmp_path / "sct.nii.gz").array))
    bad_type = CliRunner().invoke(app, ["synthesize", "--model", str(run_dir), "--input", str(src), "--dtype", "uint8",
                                        "--output", str(tmp_path / "u8.nii.gz")])
    assert isinstance(bad_type.exception, UserError) and "--dtype must be one of" in str(bad_type.exception)
    bogus = CliRunner().invoke(app, ["synthesize", "--model", str(run_dir), "--input", str(src), "--weights", "last",
                                     "--output", str(tmp_path / "x.nii.gz")])
    assert isinstance(bogus.exception, UserError) and "--weights" in str(bogus.exception)
    no_run = CliRunner().invoke(app, ["synthesize", "--model", str(tmp_path), "--input", str(src), "--output", str(tmp_path / "o.nii")])
    assert isinstance(no_run.exception, UserError) and "not a run directory" in str(no_run.exception)
    a_file = CliRunner().invoke(app, ["train", "paired", "--resume", str(src)])  # a file, not a folder
    assert isinstance(a_file.exception, UserError) and "not a run directory" in str(a_file.exception)


def test_a_hand_edited_config_is_a_one_line_error(run_dir, tmp_path):
    import json
    import shutil

    from counterfeit.train.loop import load_run

    edited = tmp_path / "run"
    shutil.copytree(run_dir, edited)
    config_path = edited / "config.json"
    original = json.loads(config_path.read_text())
    cases = [
        ([1], "not a run's config"),
        ({"recipe": "cyclegan"}, "not a run's config"),
        ({**original, "config": {**original["config"], "n_blocks": None}}, "cannot be built from its \"config\""),
        ({**original, "config": {**original["config"], "ngf": 8}}, "weights do not fit the network its config.json"),
    ]
    for content, message in cases:
        config_path.write_text(json.dumps(content))
        with pytest.raises(UserError, match=message):
            load_run(edited, "cpu")
