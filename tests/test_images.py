"""Image I/O for the DCGAN data: 8/16-bit PNG and TIFF, gray/RGB, crops, grids, built-in sets, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from counterfeit.data.images import (
    builtin_dataset,
    center_crop_resize,
    digits_dataset,
    load_image_folder,
    make_grid,
    phantom_slices_dataset,
    read_image,
    read_image_raw,
    save_image,
    save_image_grid,
    split_holdout,
)
from counterfeit.errors import InputFileError, UserError


def _gradient16(h: int = 32, w: int = 48, lo: int = 0, hi: int = 65535) -> np.ndarray:
    """A left-to-right 16-bit ramp (distinct per column), with a faint vertical ramp so rows differ."""
    ramp = np.linspace(lo, hi, w)[None, :] + np.linspace(0, 50, h)[:, None]
    return np.clip(np.round(ramp), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("suffix, writer", [
    (".png", "pillow"), (".tif", "pillow"), (".tif", "tifffile"),
])
def test_16bit_gray_round_trip_is_exact_and_not_black(tmp_path, suffix, writer):
    ramp = _gradient16()
    path = tmp_path / f"ramp{suffix}"
    if writer == "pillow":
        Image.fromarray(ramp).save(path)  # mode "I;16": a genuine 16-bit file
    else:
        tifffile.imwrite(path, ramp)
    raw = read_image_raw(path)
    assert raw.dtype.kind == "u" and raw.dtype.itemsize == 2
    np.testing.assert_array_equal(raw, ramp)

    img = read_image(path, size=32, channels=1)  # center crop 32x32 of the 32x48 ramp
    assert img.shape == (1, 32, 32)
    assert img.max() > 0.5 and img.min() < -0.5  # the full range survives: not all black, not all white
    row = img[0, 16]
    assert np.all(np.diff(row) > 0)  # the left-to-right order of intensities is preserved
    # Values map linearly: the crop starts at column 8 of 48.
    expected_first = ramp[16, 8] / 65535 * 2 - 1
    assert row[0] == pytest.approx(expected_first, abs=0.02)


def test_16bit_bright_data_is_not_saturated(tmp_path):
    """Values 40000..60050 must land at 0.61..0.92 of the range, not collapse to white as an 8-bit clip would."""
    ramp = _gradient16(32, 32, lo=40000, hi=60000)
    Image.fromarray(ramp).save(tmp_path / "a.png")
    x = load_image_folder(tmp_path, size=32, channels=1)
    unit = (x + 1) / 2
    assert unit.min() == pytest.approx(40000 / 65535, abs=1e-4) and unit.max() == pytest.approx(60050 / 65535, abs=1e-4)
    assert unit.std() > 0.05


def test_16bit_rgb_tiff_and_rgb_to_gray(tmp_path):
    ramp = _gradient16(32, 32)
    rgb = np.stack([ramp, ramp // 2, np.zeros_like(ramp)], axis=-1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    color = read_image(tmp_path / "rgb.tif", size=32, channels=3)
    unit = (color + 1) / 2
    np.testing.assert_allclose(unit[0], ramp / 65535, atol=1e-5)
    np.testing.assert_allclose(unit[1], (ramp // 2) / 65535, atol=1e-5)
    gray = (read_image(tmp_path / "rgb.tif", size=32, channels=1) + 1) / 2
    np.testing.assert_allclose(gray[0], 0.299 * unit[0] + 0.587 * unit[1] + 0.114 * unit[2], atol=1e-5)


def test_dark_12bit_data_warns_and_minmax_stretches(tmp_path):
    ramp = _gradient16(32, 32, lo=0, hi=4000)  # 12-bit data in a 16-bit file
    Image.fromarray(ramp).save(tmp_path / "ct.png")
    with pytest.warns(UserWarning, match="minmax"):
        dark = load_image_folder(tmp_path, size=32)
    assert (dark + 1).max() / 2 < 0.07
    stretched = load_image_folder(tmp_path, size=32, scale="minmax")
    assert stretched.max() > 0.9 and stretched.min() < -0.9


def test_8bit_gray_rgb_and_jpeg(tmp_path):
    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    Image.fromarray(gray).save(tmp_path / "g.png")
    g = read_image(tmp_path / "g.png", 32, channels=1)
    np.testing.assert_allclose((g[0] + 1) / 2, gray / 255, atol=1e-6)
    g3 = read_image(tmp_path / "g.png", 32, channels=3)
    assert g3.shape == (3, 32, 32) and np.array_equal(g3[0], g3[2])
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 10  # alpha is dropped, not multiplied in
    Image.fromarray(rgba, "RGBA").save(tmp_path / "red.png")
    red = (read_image(tmp_path / "red.png", 32, channels=3) + 1) / 2
    assert red[0].min() == 1.0 and red[1].max() == 0.0
    Image.fromarray(gray).save(tmp_path / "g.jpg", quality=95)
    j = read_image(tmp_path / "g.jpg", 32)
    assert np.abs(j - g).mean() < 0.05


def test_center_crop_and_resize():
    img = np.zeros((1, 20, 40), np.float32)
    img[:, :, 10:30] = 1.0  # the central square is all ones, the sides zero
    out = center_crop_resize(img, 10)
    assert out.shape == (1, 10, 10)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)
    small = center_crop_resize(np.ones((2, 1, 8, 8), np.float32), 32)
    assert small.shape == (2, 1, 32, 32)


def test_folder_loads_every_image_sorted_and_recursive(tmp_path):
    for i, value in enumerate([50, 150, 250]):
        sub = tmp_path / ("sub" if i == 2 else "")
        sub.mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 16), value, np.uint8)).save(sub / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"skipped")
    x = load_image_folder(tmp_path, size=32, channels=1)
    assert x.shape == (3, 1, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose((x.mean(axis=(1, 2, 3)) + 1) / 2 * 255, [50, 150, 250], atol=1e-3)


def test_colour_read_as_grayscale_is_named(tmp_path):
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[..., 0] = 200  # red
    Image.fromarray(colour).save(tmp_path / "red.png")
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "grey_rgb.png")  # RGB file, grey picture
    with pytest.warns(UserWarning, match=r"1 of 2 images \(e.g. red.png\) are in colour .* --channels 3"):
        load_image_folder(tmp_path, size=16, channels=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image_folder(tmp_path, size=16, channels=3).shape == (2, 3, 16, 16)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(InputFileError, match="folder not found"):
        load_image_folder(tmp_path / "missing", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no images found"):
        load_image_folder(tmp_path / "empty", 32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(InputFileError, match="broken.png.*cannot read image"):
        load_image_folder(bad, 32)
    with pytest.raises(UserError, match="channels"):
        read_image(tmp_path / "x.png", 32, channels=2)
    with pytest.raises(UserError, match="scale"):
        load_image_folder(bad, 32, scale="log")


def test_grid_layout_and_atomic_write(tmp_path):
    images = np.stack([np.full((1, 4, 4), v, np.float32) for v in np.linspace(-1, 1, 5)])
    grid = make_grid(images, nrow=3, padding=1)
    assert grid.shape == (1, 2 * 5 + 1, 3 * 5 + 1)
    assert grid[0, 1, 1] == 0.0 and grid[0, 1 + 5, 1 + 5] == pytest.approx(1.0)  # first image black, 5th white
    path = save_image_grid(images, tmp_path / "grid.png", nrow=3, padding=1)
    assert np.asarray(Image.open(path)).shape == (11, 16)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary left behind


def test_16bit_save_round_trip(tmp_path):
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    for name in ("x.png", "x.tif"):
        save_image(values, tmp_path / name, bit_depth=16)
        raw = read_image_raw(tmp_path / name)
        assert raw.dtype.itemsize == 2
        np.testing.assert_array_equal(raw, np.round(values[0] * 65535).astype(np.uint16))


def test_builtin_datasets():
    digits = digits_dataset(32)
    assert digits.shape == (1797, 1, 32, 32) and digits.min() == -1.0 and digits.max() > 0.9
    mr = phantom_slices_dataset(32, "mr", n_subjects=1, seed=3)
    ct = builtin_dataset("phantom-ct", 32, channels=3, n_subjects=1, seed=3)
    assert mr.shape[1:] == (1, 32, 32) and len(mr) >= 10
    assert ct.shape == (len(mr), 3, 32, 32)
    assert -1.0 <= mr.min() and mr.max() <= 1.0 and mr.std() > 0.2
    # Background is air (-1 in both), the head is brighter.
    assert mr[:, 0, 0, 0].max() < -0.9 and ct[:, 0, 16, 16].mean() > -0.8
    np.testing.assert_array_equal(mr, phantom_slices_dataset(32, "mr", n_subjects=1, seed=3))
    with pytest.raises(UserError, match="unknown built-in"):
        builtin_dataset("cifar", 32)


def test_holdout_split_is_seeded_and_capped():
    images = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1)
    train, hold = split_holdout(images, 100, seed=1)
    assert len(hold) == 5 and len(train) == 15  # capped at a quarter
    assert sorted(np.concatenate([train, hold]).ravel().tolist()) == list(range(20))
    train2, hold2 = split_holdout(images, 100, seed=1)
    assert np.array_equal(hold, hold2)
