"""Trivial MR->CT baselines: all soft tissue, and a linear map from normalised MR to HU."""

from __future__ import annotations

import numpy as np
import pytest

from counterfeit.errors import UserError
from counterfeit.medical.baselines import all_soft_tissue_baseline, linear_regression_baseline
from counterfeit.medical.intensity import mr_to_unit


def _case(seed: int, scale: float):
    rng = np.random.default_rng(seed)
    mr = rng.uniform(0, 1, (6, 10, 10)) * scale  # MR has no absolute scale: each volume differs
    mask = np.zeros(mr.shape, dtype=np.uint8)
    mask[1:5, 2:8, 2:8] = 1
    return mr, mask


def test_all_soft_tissue():
    mr, mask = _case(0, 300.0)
    sct = all_soft_tissue_baseline(mr, mask)
    assert sct.dtype == np.float32 and sct.shape == mr.shape
    assert np.all(sct[mask > 0] == 40.0) and np.all(sct[mask == 0] == -1000.0)
    assert np.all(all_soft_tissue_baseline(mr, mask, hu=0.0)[mask > 0] == 0.0)


def test_linear_fit_recovers_exact_line_across_mr_scales():
    vols = [_case(i, s) for i, s in enumerate((200.0, 900.0, 4000.0))]
    cts = [800.0 * mr_to_unit(mr, mask=m > 0) - 150.0 for mr, m in vols]
    model = linear_regression_baseline([v[0] for v in vols], cts, [v[1] for v in vols])
    assert model.slope == pytest.approx(800.0, rel=1e-5)
    assert model.intercept == pytest.approx(-150.0, abs=1e-3)
    mr, mask = _case(7, 55.0)
    sct = model(mr, mask)
    expected = 800.0 * mr_to_unit(mr, mask=mask > 0) - 150.0
    np.testing.assert_allclose(sct[mask > 0], expected[mask > 0], rtol=1e-5, atol=1e-2)
    assert np.all(sct[mask == 0] == -1000.0)


def test_linear_fit_matches_polyfit_on_noisy_data():
    rng = np.random.default_rng(3)
    vols = [_case(i, 100.0 * (i + 1)) for i in range(2)]
    cts = [rng.normal(0, 400, v[0].shape) + 300 * v[0] / v[0].max() for v in vols]
    model = linear_regression_baseline([v[0] for v in vols], cts, [v[1] for v in vols])
    x = np.concatenate([mr_to_unit(mr, mask=m > 0)[m > 0] for mr, m in vols])
    y = np.concatenate([ct[m > 0] for ct, (_, m) in zip(cts, vols)])
    slope, intercept = np.polyfit(x, y, 1)
    assert model.slope == pytest.approx(slope, rel=1e-6)
    assert model.intercept == pytest.approx(intercept, rel=1e-6)


def test_baseline_errors():
    mr, mask = _case(0, 10.0)
    with pytest.raises(UserError, match="same, non-zero number"):
        linear_regression_baseline([mr], [], [mask])
    with pytest.raises(UserError, match="CT shape"):
        linear_regression_baseline([mr], [mr[:, :5]], [mask])
    with pytest.raises(UserError, match="mask is empty"):
        all_soft_tissue_baseline(mr, np.zeros_like(mask))
