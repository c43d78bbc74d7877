"""CT/MR normalisation to [-1, 1] and body masks."""

from __future__ import annotations

import numpy as np
import pytest

from counterfeit.data.phantom import make_subject
from counterfeit.errors import UserError
from counterfeit.medical.intensity import HU_WINDOW, body_mask, ct_to_unit, mr_range, mr_to_unit, unit_to_ct


def test_ct_window_maps_to_unit_interval_and_clips():
    hu = np.array([-2000.0, HU_WINDOW[0], 988.0, HU_WINDOW[1], 5000.0], dtype=np.float32)
    x = ct_to_unit(hu)
    np.testing.assert_allclose(x, [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)  # 988 is the window's centre
    assert x.dtype == np.float32


def test_unit_to_ct_is_exact_inverse_on_window():
    rng = np.random.default_rng(0)
    hu = rng.uniform(*HU_WINDOW, size=1000)
    np.testing.assert_allclose(unit_to_ct(ct_to_unit(hu)), hu, atol=1e-9)
    window = (-200.0, 400.0)
    hu = rng.uniform(*window, size=100).astype(np.float32)
    np.testing.assert_allclose(unit_to_ct(ct_to_unit(hu, window), window), hu, atol=1e-3)
    # Outside the window the round trip clips to the window's edges.
    assert unit_to_ct(ct_to_unit(np.array([-3000.0, 4000.0]))).tolist() == list(HU_WINDOW)


def test_ct_conversion_accepts_int16_and_torch():
    hu = np.array([-1024, 0, 3000], dtype=np.int16)
    assert ct_to_unit(hu).dtype == np.float32
    torch = pytest.importorskip("torch")
    t = torch.tensor([-1024.0, 0.0, 3000.0])
    out = unit_to_ct(ct_to_unit(t))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), [-1024.0, 0.0, 3000.0], atol=1e-3)


def test_asinh_scale_round_trip_edges_and_soft_tissue_slope():
    torch = pytest.importorskip("torch")
    hu = np.array([-3000.0, HU_WINDOW[0], -1000.0, -100.0, 0.0, 40.0, 550.0, 1400.0, HU_WINDOW[1], 5000.0])
    x = ct_to_unit(hu, scale="asinh")
    np.testing.assert_allclose(x[[0, 1, -2, -1]], [-1.0, -1.0, 1.0, 1.0], atol=1e-6)  # the window's edges, clipped beyond
    assert np.all(np.diff(x[1:-1]) > 0)  # monotonic: every HU has its own unit value
    np.testing.assert_allclose(unit_to_ct(x, scale="asinh"), np.clip(hu, *HU_WINDOW), rtol=1e-6, atol=1e-6)
    t = unit_to_ct(torch.tensor(x), scale="asinh")
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), np.clip(hu, *HU_WINDOW), rtol=1e-4, atol=1e-3)
    # The point of the scale: 30 HU of soft-tissue contrast (CSF 10 vs grey matter 40) spans about 5.6x more of
    # [-1, 1] than on the linear scale, and bone 2.4x less.
    gain = lambda a, b: (ct_to_unit(b, scale="asinh") - ct_to_unit(a, scale="asinh")) / (ct_to_unit(b) - ct_to_unit(a))
    assert 5.0 < gain(10.0, 40.0) < 6.0
    assert 0.35 < gain(1350.0, 1450.0) < 0.5


def test_asinh_width_trades_soft_tissue_range_for_bone_range():
    hu = np.array([HU_WINDOW[0], -100.0, 10.0, 40.0, 800.0, 1500.0, HU_WINDOW[1]])
    spans = {}
    for width in (100.0, 400.0):
        x = ct_to_unit(hu, scale="asinh", asinh_width=width)
        np.testing.assert_allclose(x[[0, -1]], [-1.0, 1.0], atol=1e-6)
        np.testing.assert_allclose(unit_to_ct(x, scale="asinh", asinh_width=width), hu, rtol=1e-6, atol=1e-6)
        spans[width] = (x[3] - x[2], x[5] - x[4])  # CSF -> grey matter, diploe -> cortical bone
    assert spans[400.0][0] < spans[100.0][0] and spans[400.0][1] > spans[100.0][1]
    # the default width is the one the scale always had, and a wrong width is an error, not a silent NaN
    np.testing.assert_array_equal(ct_to_unit(hu, scale="asinh"), ct_to_unit(hu, scale="asinh", asinh_width=100.0))
    with pytest.raises(UserError, match="width must be > 0"):
        ct_to_unit(hu, scale="asinh", asinh_width=0.0)


def test_unknown_ct_scale():
    with pytest.raises(UserError, match="unknown CT scale 'log'"):
        unit_to_ct(np.zeros(3), scale="log")


def test_bad_window():
    with pytest.raises(UserError, match="low < high"):
        ct_to_unit(np.zeros(3), window=(100.0, -100.0))


def test_mr_percentile_normalisation_is_scale_and_offset_free():
    rng = np.random.default_rng(1)
    mr = rng.gamma(2.0, 100.0, size=(8, 16, 16)).astype(np.float32)
    x = mr_to_unit(mr)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    lo, hi = mr_range(mr)
    inside = (mr > lo) & (mr < hi)
    # Between the percentiles the mapping is linear: check against a direct computation.
    np.testing.assert_allclose(x[inside], 2 * (mr[inside] - lo) / (hi - lo) - 1, atol=1e-5)
    np.testing.assert_allclose(mr_to_unit(mr * 7.5 + 300.0), x, atol=1e-5)  # per-volume scanner scale is gone
    assert np.mean(x <= -1.0) == pytest.approx(0.005, abs=0.002)


def test_mr_normalisation_with_mask_uses_masked_voxels_only():
    mr = np.zeros((4, 10, 10), np.float32)
    mr[:, 2:8, 2:8] = np.linspace(100, 200, 36 * 4).reshape(4, 6, 6)
    mask = mr > 0
    lo, hi = mr_range(mr, (0.0, 100.0), mask)
    assert (lo, hi) == (100.0, 200.0)
    x = mr_to_unit(mr, (0.0, 100.0), mask)
    assert x[mask].min() == -1.0 and x[mask].max() == 1.0


def test_constant_mr_is_an_error():
    with pytest.raises(UserError, match="constant"):
        mr_to_unit(np.full((3, 4, 4), 5.0))


@pytest.fixture(scope="module")
def subject():
    return make_subject(3, shape=(24, 64, 64))


def _dice(a, b):
    return 2 * np.sum(a & b) / (a.sum() + b.sum())


def test_body_mask_matches_phantom_ground_truth(subject):
    truth = subject["mask"] > 0
    ct_mask = body_mask(subject["ct_ground_truth"], "ct")
    mr_mask = body_mask(subject["mr"], "mr")
    assert ct_mask.dtype == np.bool_
    assert _dice(ct_mask, truth) > 0.98
    # MR: dark skull, sinuses and CSF sit inside the head and must be filled in.
    assert _dice(mr_mask, truth) > 0.95
    dark_inside = truth & (subject["mr"] < 0.1 * np.percentile(subject["mr"], 99))
    assert dark_inside.sum() > 100 and mr_mask[dark_inside].mean() > 0.97


def test_body_mask_keeps_largest_component_and_fills_holes():
    img = np.full((9, 40, 40), -1000.0, np.float32)
    zz, yy, xx = np.mgrid[:9, :40, :40]
    r = np.sqrt((yy - 20) ** 2 + (xx - 20) ** 2)
    img[(r < 14)] = 40.0
    img[(r < 6)] = -1000.0  # an enclosed air cavity (like a sinus)
    img[:, 1:3, 1:3] = 40.0  # a small separate object (like a couch)
    mask = body_mask(img, "ct")
    np.testing.assert_array_equal(mask, r < 14)
    np.testing.assert_array_equal(body_mask(img[4], "ct"), (r < 14)[4])  # 2D too


def test_body_mask_unknown_modality():
    with pytest.raises(UserError, match="unknown modality"):
        body_mask(np.zeros((4, 4)), "pet")


def test_body_level_separates_air_from_fat_on_every_ct_scale():
    # BODY_LEVEL thresholds normalised CT (samplers, structure-loss weights) whatever the run's CT scale.
    from counterfeit.medical.intensity import CT_SCALES
    from counterfeit.medical.slicing import BODY_LEVEL

    for scale in CT_SCALES:
        assert -900.0 < float(unit_to_ct(np.float32(BODY_LEVEL), scale=scale)) < -200.0, scale


def test_depth_map_measures_mm_below_the_body_surface():
    from counterfeit.medical.intensity import DEPTH_SCALE_MM, depth_map

    shape = (9, 41, 41)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    mask = (np.abs(y - 20) <= 15) & (np.abs(x - 20) <= 15)  # a square prism through every slice, 31 voxels wide
    d = depth_map(np.zeros(shape), "ct", spacing=(2.0, 2.0, 5.0), mask=mask)  # (x, y, z) mm
    assert d.dtype == np.float32 and d.shape == shape
    assert np.all(d[~mask] == -1.0)
    mm = (d + 1.0) / 2.0 * DEPTH_SCALE_MM
    # In-plane: the centre is 16 voxels of 2 mm from the background; the slab's top and bottom faces are
    # open to the volume's edge, which distance_transform_edt does not count as background.
    assert mm[4, 20, 20] == pytest.approx(32.0)
    assert mm[4, 20, 5] == pytest.approx(2.0)  # an edge voxel: one voxel (2 mm) from the outside
    np.testing.assert_array_less(np.diff(mm[4, 20, 5:21]), 2.0 + 1e-4)  # rises by the x spacing per voxel
    far = depth_map(np.zeros(shape), "ct", spacing=(5.0, 5.0, 5.0), mask=mask)
    assert far[4, 20, 20] == 1.0  # 80 mm deep: beyond DEPTH_SCALE_MM, saturated
    # Without a mask, the body comes from the image itself (CT: above -500 HU).
    ct = np.where(mask, 40.0, -1000.0)
    np.testing.assert_array_equal(depth_map(ct, "ct", spacing=(2.0, 2.0, 5.0)), d)
    with pytest.raises(UserError, match="mask shape"):
        depth_map(ct, "ct", spacing=(1.0, 1.0, 1.0), mask=mask[:, :10])
