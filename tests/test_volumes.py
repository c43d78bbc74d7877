"""Volume I/O: formats, geometry round trips, atomic writes, DICOM, and one-line input errors."""

from __future__ import annotations

import copy
import gzip

import numpy as np
import pytest

from counterfeit.data.volumes import Volume, check_same_grid, list_volumes, read_volume, write_volume
from counterfeit.errors import InputFileError, UserError

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

GEOMETRY = dict(spacing=(0.8, 1.25, 3.0), origin=(-12.5, 40.0, 7.25), direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def _volume(shape=(5, 6, 7), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(0, 300, shape).astype(np.float32), **GEOMETRY)


def _one_line(err: pytest.ExceptionInfo, *words: str) -> str:
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, ext):
    vol = _volume()
    write_volume(vol, tmp_path / f"v{ext}")
    back = read_volume(tmp_path / f"v{ext}")
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name], "temporary files left behind"


def test_sheared_grid_is_kept_or_refused_never_changed(tmp_path):
    tilt = np.deg2rad(15)  # a CT acquired with gantry tilt: slice axis not perpendicular to the rows
    sheared = Volume(_volume().array, (0.8, 1.25, 3.0), (1.0, 2.0, 3.0),
                     (1.0, 0.0, 0.0, 0.0, 1.0, np.sin(tilt), 0.0, 0.0, np.cos(tilt)))
    back = read_volume(write_volume(sheared, tmp_path / "tilt.mha"))
    np.testing.assert_allclose(back.direction, sheared.direction, atol=1e-9)
    with pytest.raises(UserError, match="sheared grid.*write .mha"):
        write_volume(sheared, tmp_path / "tilt.nii.gz")
    assert not (tmp_path / "tilt.nii.gz").exists()


def test_mhd_writes_raw_sidecar_named_in_header(tmp_path):
    write_volume(_volume(), tmp_path / "ct.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.mhd", "ct.raw"]
    assert "ElementDataFile = ct.raw" in (tmp_path / "ct.mhd").read_text()


def test_mhd_with_missing_sidecar_is_reported(tmp_path):
    write_volume(_volume(), tmp_path / "ct.mhd")
    (tmp_path / "ct.raw").unlink()
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "ct.mhd")
    _one_line(err, "ct.mhd", "ct.raw", "missing")


def test_int16_output_rounds_hu(tmp_path):
    vol = Volume(np.array([[[-1000.4, 12.6], [3000.2, -0.5]]] * 2, dtype=np.float32))
    write_volume(vol, tmp_path / "ct.nii.gz", dtype="int16")
    back = read_volume(tmp_path / "ct.nii.gz", modality="ct")
    np.testing.assert_array_equal(back.array, np.rint(vol.array))


def test_failed_write_leaves_previous_file_untouched(tmp_path, monkeypatch):
    import SimpleITK as sitk

    dest = tmp_path / "out.nii.gz"
    write_volume(_volume(seed=1), dest)
    before = dest.read_bytes()

    def crash(img, path, *args):
        with open(path, "wb") as fh:
            fh.write(b"half a volume")
        raise RuntimeError("disk exploded")

    monkeypatch.setattr(sitk, "WriteImage", crash)
    with pytest.raises(UserError):
        write_volume(_volume(seed=2), dest)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii", "out.mha", "out.nrrd", "out.mhd"])
def test_a_write_that_silently_falls_short_is_an_error(tmp_path, monkeypatch, name):
    """ITK's NIfTI writer prints a full disk's error and returns: the incomplete file must not be renamed into place."""
    import SimpleITK as sitk

    real = sitk.WriteImage

    def disk_full(img, path, *args):
        real(img, path, *args)
        target = path[: -len(".mhd")] + ".raw" if path.endswith(".mhd") else path
        with open(target, "r+b") as fh:
            fh.truncate(max(0, len(open(target, "rb").read()) // 2))

    monkeypatch.setattr(sitk, "WriteImage", disk_full)
    with pytest.raises(UserError, match="incomplete: is the disk full"):
        write_volume(_volume(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["u.MHA", "u.Mhd", "u.NII.GZ", "u.Nrrd"])
def test_upper_case_extensions_write_whole_volumes(tmp_path, name):
    vol = _volume()
    write_volume(vol, tmp_path / name)
    np.testing.assert_array_equal(read_volume(tmp_path / name).array, vol.array)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_unsupported_output_format(tmp_path):
    with pytest.raises(UserError) as err:
        write_volume(_volume(), tmp_path / "v.png")
    _one_line(err, "v.png", "unsupported output format")


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "nope.nii.gz")
    _one_line(err, "nope.nii.gz", "file not found")


def test_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a volume" * 20)
    with pytest.raises(InputFileError) as err:
        read_volume(garbage)
    _one_line(err, "garbage.nii.gz", "corrupt")

    empty = tmp_path / "empty.mha"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError) as err:
        read_volume(empty)
    _one_line(err, "empty.mha", "empty")

    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputFileError) as err:
        read_volume(other)
    _one_line(err, "notes.txt", "unsupported file type")


def test_truncated_nifti_is_caught(tmp_path):
    # ITK itself would silently zero-fill the missing voxels.
    write_volume(_volume(), tmp_path / "v.nii")
    data = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "v.nii").write_bytes(data[:-40])
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "v.nii")
    _one_line(err, "v.nii", "truncated")

    (tmp_path / "v.nii.gz").write_bytes(gzip.compress(data[:-40]))
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "v.nii.gz")
    _one_line(err, "v.nii.gz", "truncated")

    full = gzip.compress(data)
    (tmp_path / "cut.nii.gz").write_bytes(full[: len(full) // 2])
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "cut.nii.gz")
    _one_line(err, "cut.nii.gz", "truncated")


def test_2d_image_where_3d_expected(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.ones((6, 7), np.float32)), str(tmp_path / "flat.nii"))
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "flat.nii")
    _one_line(err, "flat.nii", "2D", "3D volume is expected")
    assert read_volume(tmp_path / "flat.nii", require_3d=False).shape == (1, 6, 7)


def test_single_dicom_slice_in_hounsfield_units():
    path = get_testdata_file("CT_small.dcm")
    with pytest.raises(InputFileError) as err:
        read_volume(path)
    _one_line(err, "CT_small.dcm", "2D")
    vol = read_volume(path, modality="ct", require_3d=False)
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) != 0  # the test is meaningless without a rescale
    np.testing.assert_array_equal(vol.array[0], expected.astype(np.float32))
    np.testing.assert_allclose(vol.spacing[:2], [float(s) for s in ds.PixelSpacing][::-1], rtol=1e-5)


def test_mr_dicom_slice_reads_as_float():
    vol = read_volume(get_testdata_file("MR_small.dcm"), modality="mr", require_3d=False)
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array[0], ds.pixel_array.astype(np.float32))


def _write_ct_series(folder, n=4, step=2.5):
    folder.mkdir()
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    slices = []
    for k in range(n):
        ds = copy.deepcopy(src)
        pixels = (src.pixel_array.astype(np.int32) + 37 * k).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ds.ImagePositionPatient = [src.ImagePositionPatient[0], src.ImagePositionPatient[1], float(src.ImagePositionPatient[2]) + step * k]
        ds.InstanceNumber = k + 1
        ds.SliceThickness = step
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # Written in reverse order: the reader must sort slices by position.
        ds.save_as(folder / f"img{n - k:03d}.dcm")
        slices.append(pixels * float(src.RescaleSlope) + float(src.RescaleIntercept))
    return np.stack(slices)


def test_dicom_series_folder(tmp_path):
    expected = _write_ct_series(tmp_path / "series")
    vol = read_volume(tmp_path / "series", modality="ct")
    assert vol.shape == expected.shape
    np.testing.assert_array_equal(vol.array, expected.astype(np.float32))
    assert vol.spacing[2] == pytest.approx(2.5, rel=1e-4)
    assert list_volumes(tmp_path) == [tmp_path / "series"]


def test_dicom_series_with_a_rescale_slope_per_slice(tmp_path):
    """Exports may give each slice its own RescaleSlope: a slope of 0.5 holds half-HU values, which must survive."""
    expected = _write_ct_series(tmp_path / "series").astype(np.float32)
    for path in sorted((tmp_path / "series").iterdir())[:2]:
        ds = pydicom.dcmread(path)
        k = int(ds.InstanceNumber) - 1
        ds.RescaleSlope = 0.5
        ds.RescaleIntercept = -1024
        ds.PixelData = np.rint((expected[k] + 1024.5) / 0.5).astype(np.int16).tobytes()
        expected[k] = np.rint((expected[k] + 1024.5) / 0.5) * 0.5 - 1024
        ds.save_as(path)
    vol = read_volume(tmp_path / "series", modality="ct")
    np.testing.assert_array_equal(vol.array, expected)
    assert (vol.array % 1 == 0.5).any()


def test_dicom_series_with_a_missing_slice_or_two_series_is_refused(tmp_path):
    _write_ct_series(tmp_path / "gap", n=5)
    (tmp_path / "gap" / "img003.dcm").unlink()  # a slice lost in transfer: 2.5, 5, 2.5 mm apart
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "gap", modality="ct")
    _one_line(err, "gap", "not evenly spaced", "2.5 mm apart", "5 mm")
    _write_ct_series(tmp_path / "two")  # two series of 4 slices (another series UID) in one folder
    second = _write_ct_series(tmp_path / "other")
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / "two" / f"b_{path.name}")
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "two", modality="ct")
    _one_line(err, "two", "2 DICOM series", "a folder of its own")
    assert second.shape[0] == 4


def test_dicom_series_with_an_absurd_header_is_refused_before_allocation(tmp_path):
    # Rows and Columns claim 65535 x 65535 (4.3e9 voxels per slice, 34 GB for the series as int16);
    # the pixel data stays small. Without the header check ITK would try to allocate all of it.
    _write_ct_series(tmp_path / "series")
    for path in sorted((tmp_path / "series").iterdir()):
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = 65535
        ds.save_as(path)
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "series", modality="ct")
    _one_line(err, "series", "65535x65535x4")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "empty_series").mkdir()
    (tmp_path / "empty_series" / "readme.txt").write_text("nothing here")
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "empty_series")
    _one_line(err, "empty_series", "no DICOM series")


def test_mask_reading_and_empty_mask(tmp_path):
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 1:3, 2:4] = 7
    write_volume(Volume(labels), tmp_path / "mask.nii.gz")
    mask = read_volume(tmp_path / "mask.nii.gz", modality="mask")
    assert mask.array.dtype == np.uint8
    np.testing.assert_array_equal(mask.array, (labels > 0).astype(np.uint8))

    write_volume(Volume(np.zeros((3, 4, 5), np.uint8)), tmp_path / "blank.nii.gz")
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / "blank.nii.gz", modality="mask")
    _one_line(err, "blank.nii.gz", "mask is empty")
    # SynthRAD2023's rule, mask > 0: a background of -1 is outside, not inside
    write_volume(Volume(np.where(labels > 0, 1.0, -1.0).astype(np.float32)), tmp_path / "signed.mha")
    np.testing.assert_array_equal(read_volume(tmp_path / "signed.mha", modality="mask").array, labels > 0)
    with_nan = np.where(labels > 0, 1.0, np.nan).astype(np.float32)
    write_volume(Volume(with_nan), tmp_path / "nan_mask.mha")
    with pytest.raises(InputFileError, match="NaN"):
        read_volume(tmp_path / "nan_mask.mha", modality="mask")


@pytest.mark.parametrize("ext", [".mha", ".nii", ".nii.gz"])
def test_non_finite_voxels_rejected(tmp_path, ext):
    vol = _volume()
    vol.array[2, 3, 4] = np.nan
    write_volume(vol, tmp_path / f"nan{ext}")  # ITK reads a NIfTI's NaN as 0: the file itself must be checked
    for modality in ("ct", "mask", None):
        with pytest.raises(InputFileError) as err:
            read_volume(tmp_path / f"nan{ext}", modality=modality)
        _one_line(err, f"nan{ext}", "NaN")
    # an MR's NaN is a masked background (FSL, SPM): read as 0, with a warning where ITK lets us see it
    import contextlib
    with pytest.warns(UserWarning, match="read as 0") if ext == ".mha" else contextlib.nullcontext():
        mr = read_volume(tmp_path / f"nan{ext}", modality="mr")
    assert mr.array[2, 3, 4] == 0 and np.isfinite(mr.array).all()
    vol.array[2, 3, 4] = np.inf
    write_volume(vol, tmp_path / f"inf{ext}")
    for modality in ("ct", "mr") if ext == ".mha" else ("ct",):  # an MR NIfTI is not scanned: ITK reads inf as 0
        with pytest.raises(InputFileError, match="infinite"):
            read_volume(tmp_path / f"inf{ext}", modality=modality)


def test_unknown_modality():
    with pytest.raises(UserError, match="unknown modality"):
        read_volume("whatever.nii", modality="pet")


def test_check_same_grid():
    mr, ct = _volume((4, 5, 6)), _volume((4, 5, 7))
    with pytest.raises(InputFileError) as err:
        check_same_grid(mr, ct, ("mr.nii.gz", "ct.nii.gz"))
    _one_line(err, "ct.nii.gz", "4x5x7", "4x5x6", "mr.nii.gz")
    other_spacing = Volume(mr.array.copy(), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputFileError, match="spacing"):
        check_same_grid(mr, other_spacing)
    check_same_grid(mr, mr.with_array(mr.array * 2))  # same grid: no error
    shifted = Volume(mr.array.copy(), mr.spacing, (mr.origin[0] + 25.0, *mr.origin[1:]), mr.direction)
    with pytest.raises(InputFileError) as err:
        check_same_grid(mr, shifted, ("mr.nii.gz", "ct.nii.gz"))
    _one_line(err, "ct.nii.gz", "origin (12.5, 40, 7.25)", "mr.nii.gz")
    flipped = Volume(mr.array.copy(), mr.spacing, mr.origin, tuple(-d for d in mr.direction))
    with pytest.raises(InputFileError, match="direction"):
        check_same_grid(mr, flipped)
    # rounding in a header (well under a voxel) is the same grid
    check_same_grid(mr, Volume(mr.array, mr.spacing, tuple(o + 1e-4 for o in mr.origin), mr.direction))


@pytest.mark.parametrize("code", ["LPS", "PSL", "LSP", "RAI", "AIR", "SLA"])
def test_axial_view_undoes_any_stored_axis_order(code):
    import SimpleITK as sitk

    from counterfeit.data.volumes import axial_view

    axial = Volume(_volume().array, spacing=(0.8, 1.25, 3.0), origin=(-12.5, 40.0, 7.25))
    stored = Volume.from_sitk(sitk.DICOMOrient(axial.to_sitk(), code))
    view, back = axial_view(stored)
    np.testing.assert_array_equal(view.array, axial.array)
    np.testing.assert_allclose(view.spacing, axial.spacing)
    np.testing.assert_allclose(view.origin, axial.origin, atol=1e-9)
    np.testing.assert_allclose(view.direction, axial.direction, atol=1e-12)
    np.testing.assert_array_equal(back(view.array), stored.array)
    assert view.array.flags.c_contiguous


def test_axial_view_of_an_oblique_volume_keeps_every_voxel_in_place():
    import SimpleITK as sitk

    from counterfeit.data.volumes import axial_view

    a = np.deg2rad(20)
    tilt = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    direction = tilt @ np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]])  # stored sagittally, and 20 degrees oblique
    stored = Volume(_volume().array, (0.8, 1.25, 3.0), (1.0, 2.0, 3.0), tuple(direction.reshape(-1)))
    view, back = axial_view(stored)
    np.testing.assert_allclose(np.asarray(view.direction).reshape(3, 3), tilt, atol=1e-12)  # only the tilt is left
    src, dst = stored.to_sitk(), view.to_sitk()
    for index in [(0, 0, 0), (6, 5, 4), (3, 1, 2), (0, 5, 4)]:
        moved = dst.TransformPhysicalPointToIndex(src.TransformIndexToPhysicalPoint(index))
        assert src[index] == dst[moved]
    np.testing.assert_array_equal(back(view.array), stored.array)


def test_with_array_keeps_geometry_and_checks_shape():
    vol = _volume()
    new = vol.with_array(np.zeros(vol.shape, np.float32))
    assert (new.spacing, new.origin, new.direction) == (vol.spacing, vol.origin, vol.direction)
    with pytest.raises(ValueError):
        vol.with_array(np.zeros((1, 2, 3)))


def test_list_volumes_sorted_and_filtered(tmp_path):
    for name in ["b.nii.gz", "a.mha", "c.nrrd"]:
        write_volume(_volume((2, 3, 4)), tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.nii").write_text("x")
    (tmp_path / "not_dicom").mkdir()
    assert [p.name for p in list_volumes(tmp_path)] == ["a.mha", "b.nii.gz", "c.nrrd"]
    with pytest.raises(InputFileError, match="folder not found"):
        list_volumes(tmp_path / "absent")


@pytest.mark.parametrize("ext", [".mha", ".nii.gz"])
def test_4d_with_one_time_point_reads_as_3d_and_more_is_refused(tmp_path, ext):
    import SimpleITK as sitk

    one = np.random.default_rng(0).random((1, 4, 5, 6)).astype(np.float32)
    img = sitk.GetImageFromArray(one, isVector=False)
    img.SetSpacing((0.5, 0.6, 0.7, 1.0))
    img.SetOrigin((1.0, 2.0, 3.0, 0.0))
    sitk.WriteImage(img, str(tmp_path / f"t1{ext}"))
    vol = read_volume(tmp_path / f"t1{ext}")
    np.testing.assert_array_equal(vol.array, one[0])
    np.testing.assert_allclose(vol.spacing, (0.5, 0.6, 0.7), rtol=1e-6)
    np.testing.assert_allclose(vol.origin, (1.0, 2.0, 3.0))
    two = sitk.GetImageFromArray(np.zeros((2, 4, 5, 6), np.float32), isVector=False)
    sitk.WriteImage(two, str(tmp_path / f"t2{ext}"))
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path / f"t2{ext}")
    _one_line(err, f"t2{ext}", "4D", "a 3D volume is expected")


def test_a_ct_without_any_value_below_zero_is_flagged_as_not_in_hu(tmp_path):
    ct = Volume(np.full((4, 6, 6), 24.0, np.float32))  # 0 ... 4095 storage: air at 24 after a +1024 offset
    ct.array[1:3, 2:4, 2:4] = 1064.0
    write_volume(ct, tmp_path / "offset.nii.gz")
    with pytest.warns(UserWarning, match="probably not in Hounsfield units.*offset of \\+1024"):
        read_volume(tmp_path / "offset.nii.gz", modality="ct")
    ct.array[0] = -1000.0  # air in HU: read without a word
    write_volume(ct, tmp_path / "hu.nii.gz")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volume(tmp_path / "hu.nii.gz", modality="ct")
