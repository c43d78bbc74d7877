"""The built-in head phantom: anatomy, contrasts, misalignment, data set files, CLI and preview."""

from __future__ import annotations

import json

import numpy as np
import pytest

from counterfeit.data import phantom_anatomy as anat
from counterfeit.data.phantom import (
    TISSUES,
    generate_dataset,
    load_dataset,
    make_subject,
    preview,
    split_subjects,
    subject_paths,
    subject_volumes,
)
from counterfeit.data.volumes import read_volume, write_volume
from counterfeit.errors import InputFileError, UserError

SMALL = (16, 32, 32)
MEDIUM = (32, 96, 96)
FULL = (64, 128, 128)  # the default: fine enough that thin layers are not all partial volume


@pytest.fixture(scope="module")
def subject():
    return make_subject(11, FULL)


def _median(subject, key, label):
    return float(np.median(subject[key][subject["labels"] == label]))


def test_subject_arrays(subject):
    for key in ("mr", "ct", "ct_ground_truth"):
        assert subject[key].shape == FULL and subject[key].dtype == np.float32
    assert subject["labels"].dtype == np.uint8 and subject["mask"].dtype == np.uint8
    assert set(np.unique(subject["labels"])) == set(TISSUES), "every tissue appears"
    assert len(subject["spacing"]) == 3 and len(subject["direction"]) == 9
    np.testing.assert_array_equal(subject["mask"], subject["labels"] != anat.AIR)
    assert subject["mr"].min() >= 0  # Rician magnitude


def test_ct_values_are_realistic(subject):
    # Medians per tissue, on voxels whose label is solid (not at a tissue border, where partial volume mixes).
    from scipy import ndimage

    labels = subject["labels"]
    ct = subject["ct_ground_truth"]

    def core_median(label):
        core = ndimage.binary_erosion(labels == label)
        return float(np.median(ct[core]))

    assert core_median(anat.AIR) == pytest.approx(-1000, abs=15)
    assert -130 < _median(subject, "ct_ground_truth", anat.FAT) < -40
    assert 20 < core_median(anat.GREY_MATTER) < 50
    assert 20 < core_median(anat.WHITE_MATTER) < 40
    assert 400 < core_median(anat.DIPLOE) < 750
    assert 900 < float(np.percentile(ct[labels == anat.CORTICAL_BONE], 90)) < 2000
    assert -1024 <= ct.min() and ct.max() <= 3071


def test_mr_is_ambiguous_where_ct_is_not(subject):
    """Bone and air are both dark on MR while their CT values are ~2000 HU apart: the MR->CT crux."""
    wm = _median(subject, "mr", anat.WHITE_MATTER)
    bone, sinus, air = (_median(subject, "mr", t) for t in (anat.CORTICAL_BONE, anat.SINUS, anat.AIR))
    assert bone < 0.3 * wm and sinus < 0.3 * wm and air < 0.1 * wm
    assert _median(subject, "ct_ground_truth", anat.CORTICAL_BONE) - _median(subject, "ct_ground_truth", anat.SINUS) > 1000
    # T1-like soft-tissue order: fat > white matter > grey matter > CSF.
    fat, gm, csf = (_median(subject, "mr", t) for t in (anat.FAT, anat.GREY_MATTER, anat.CSF))
    assert fat > wm > gm > csf


def test_deterministic_and_varied():
    a, b, c = make_subject(5, SMALL), make_subject(5, SMALL), make_subject(6, SMALL)
    for key in ("mr", "ct", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["labels"], c["labels"])
    # Per-subject intensity scale: MR levels differ between subjects, CT stays in HU.
    assert abs(np.log(np.percentile(a["mr"], 99) / np.percentile(c["mr"], 99))) > 0.05
    sizes = [make_subject(s, SMALL)["mask"].sum() for s in range(6)]
    assert np.std(sizes) / np.mean(sizes) > 0.02


def test_paired_ct_is_slightly_misaligned():
    moved = make_subject(4, MEDIUM, misalign=True)
    still = make_subject(4, MEDIUM, misalign=False)
    # Same anatomy and MR whatever the flag; only the CT moves.
    np.testing.assert_array_equal(moved["mr"], still["mr"])
    np.testing.assert_array_equal(moved["labels"], still["labels"])
    np.testing.assert_array_equal(moved["ct_ground_truth"], still["ct_ground_truth"])
    np.testing.assert_array_equal(still["ct"], still["ct_ground_truth"])
    diff = np.abs(moved["ct"] - moved["ct_ground_truth"])[moved["mask"] > 0]
    assert 5 < diff.mean() < 200  # misaligned, but only slightly
    assert np.median(diff) < 30  # most of the head still matches


def test_bad_shape():
    with pytest.raises(UserError, match="shape"):
        make_subject(0, (16, 32))


def test_round_trip_of_a_subject(tmp_path):
    vols = subject_volumes(make_subject(2, SMALL))
    for ext in (".nii.gz", ".mha"):
        for name, vol in vols.items():
            write_volume(vol, tmp_path / f"{name}{ext}")
            back = read_volume(tmp_path / f"{name}{ext}")
            np.testing.assert_array_equal(back.array, vol.array.astype(np.float32))
            np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
            np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
            np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)


def test_splits():
    ids = [f"s{i}" for i in range(10)]
    s = split_subjects(ids, (0.6, 0.2, 0.2))
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (6, 2, 2)
    assert sorted(s["train"] + s["val"] + s["test"]) == sorted(ids)
    assert split_subjects(["a"], (0.6, 0.2, 0.2))["train"] == ["a"]
    # the demo's fractions on 4 heads: val would round to 0, and then nothing could choose a checkpoint
    small = split_subjects(ids[:4], (0.625, 0.125, 0.25))
    assert (len(small["train"]), len(small["val"]), len(small["test"])) == (2, 1, 1)
    assert [len(v) for v in split_subjects(ids[:4], (0.8, 0.0, 0.2)).values()] == [3, 0, 1]  # none asked for
    assert [len(v) for v in split_subjects(ids[:2], (0.6, 0.2, 0.2)).values()] == [2, 0, 0]
    with pytest.raises(UserError):
        split_subjects(ids, (0.5, 0.5))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    generate_dataset(root, 3, shape=SMALL, seed=9, workers=1)
    return root


def test_dataset_files_and_json(dataset):
    info = load_dataset(dataset)
    assert info["subjects"] == ["sub-000", "sub-001", "sub-002"]
    assert info["shape"] == list(SMALL) and info["seed"] == 9
    members = sum(info["splits"].values(), [])
    assert sorted(members) == info["subjects"]
    paths = subject_paths(dataset, "sub-001")
    assert set(paths) == {"mr", "ct", "ct_aligned", "mask", "labels"}
    mr = read_volume(paths["mr"], modality="mr")
    ct = read_volume(paths["ct"], modality="ct")
    truth = read_volume(paths["ct_aligned"], modality="ct")
    mask = read_volume(paths["mask"], modality="mask")
    assert mr.shape == ct.shape == mask.shape == SMALL
    assert mr.spacing == ct.spacing == truth.spacing and mr.origin == ct.origin
    assert ct.array.min() >= -1024 and ct.array.max() > 500
    assert np.all(ct.array == np.rint(ct.array))  # stored as int16 HU
    assert not np.array_equal(ct.array, truth.array)  # paired CT is misaligned by default


def test_dataset_is_deterministic_across_worker_counts(dataset, tmp_path):
    generate_dataset(tmp_path, 3, shape=SMALL, seed=9, workers=2)
    for sid in ("sub-000", "sub-002"):
        for name, path in subject_paths(tmp_path, sid).items():
            np.testing.assert_array_equal(read_volume(path).array, read_volume(subject_paths(dataset, sid)[name]).array)


def test_load_dataset_errors(tmp_path, dataset):
    with pytest.raises(InputFileError, match="dataset.json: file not found"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        load_dataset(tmp_path)
    info = json.loads((dataset / "dataset.json").read_text())
    info["splits"]["test"] = ["sub-999"]
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(InputFileError, match="unknown subject 'sub-999'"):
        load_dataset(tmp_path)
    with pytest.raises(InputFileError, match="subject folder not found"):
        subject_paths(tmp_path, "sub-000")


def test_preview_png(dataset, tmp_path):
    from PIL import Image

    png = preview(dataset, tmp_path / "p.png", n_subjects=2)
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 100
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 20  # not a blank canvas


def _cli():
    import typer

    from counterfeit.cli.phantom import phantom

    app = typer.Typer()
    app.callback()(lambda: None)  # keep `phantom` a sub-command, as in the real app
    app.command("phantom")(phantom)
    return app


def test_cli_phantom_with_preview(tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        _cli(), ["phantom", "--out", str(tmp_path / "ds"), "--subjects", "2", "--shape", "16,32,32", "--seed", "3", "--workers", "1", "--preview"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ds" / "preview.png").stat().st_size > 1000
    assert load_dataset(tmp_path / "ds")["seed"] == 3

    # a second data set in the same folder: refused, or with --overwrite the old subjects go (not other files)
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    smaller = ["phantom", "--out", str(tmp_path / "ds"), "--subjects", "1", "--shape", "8,16,16", "--workers", "1"]
    again = CliRunner().invoke(_cli(), smaller)
    assert isinstance(again.exception, UserError) and "--overwrite" in str(again.exception)
    assert load_dataset(tmp_path / "ds")["shape"] == [16, 32, 32]
    result = CliRunner().invoke(_cli(), [*smaller, "--overwrite"])
    assert result.exit_code == 0, result.output
    info = load_dataset(tmp_path / "ds")
    assert info["subjects"] == ["sub-000"] and info["shape"] == [8, 16, 16]
    assert not (tmp_path / "ds" / "sub-001").exists() and not (tmp_path / "ds" / "preview.png").exists()
    assert (tmp_path / "ds" / "notes.txt").read_text() == "mine"


def test_cli_rejects_bad_shape(tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_cli(), ["phantom", "--out", str(tmp_path), "--shape", "64,128"])
    assert isinstance(result.exception, UserError)
    assert "--shape" in str(result.exception)
