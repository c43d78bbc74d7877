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
