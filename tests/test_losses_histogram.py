"""The intensity-distribution loss (1D Wasserstein-1 between masked intensities)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from counterfeit.losses_histogram import intensity_w1


def _images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 12, 12, generator=g) * 2 - 1
    mask = torch.zeros(2, 1, 12, 12, dtype=torch.bool)
    mask[:, :, 2:10, 3:11] = True
    return x, mask


def test_hand_computed_quantiles() -> None:
    # {0, 1, 2, 3} and {0, 0, 4, 4}; levels 2 -> quantile levels 0.25 and 0.75 with linear interpolation:
    # a: 0.75, 2.25; b: 0, 4 -> W1 = (0.75 + 1.75) / 2 = 1.25
    a = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 2, 2)
    b = torch.tensor([0.0, 0.0, 4.0, 4.0]).view(1, 1, 2, 2)
    full = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    assert float(intensity_w1(a, full, b, full, levels=2)) == pytest.approx(1.25)
    # and against numpy's quantiles at 64 levels
    q = (np.arange(64) + 0.5) / 64
    want = np.abs(np.quantile(a.numpy().ravel(), q) - np.quantile(b.numpy().ravel(), q)).mean()
    assert float(intensity_w1(a, full, b, full)) == pytest.approx(want, rel=1e-6)


def test_shift_order_and_mask() -> None:
    x, mask = _images()
    # a shift by c moves every quantile by c; shuffling the voxels changes nothing
    assert float(intensity_w1(x + 0.3, mask, x, mask)) == pytest.approx(0.3, rel=1e-5)
    perm = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(1))
    shuffled_x, shuffled_mask = x.flatten()[perm].view_as(x), mask.flatten()[perm].view_as(mask)
    assert float(intensity_w1(shuffled_x, shuffled_mask, x, mask)) == pytest.approx(0.0, abs=1e-6)
    # voxels outside the mask do not count, and get no gradient
    y = x.clone().requires_grad_(True)
    outside = torch.where(mask, y, torch.full_like(y, 1e6))
    loss = intensity_w1(outside, mask, x - 0.5, mask)
    assert float(loss.detach()) == pytest.approx(0.5, rel=1e-5)
    loss.backward()
    assert y.grad[~mask].abs().sum() == 0 and y.grad[mask].abs().sum() > 0


def test_empty_mask_gives_zero_on_the_graph() -> None:
    x, mask = _images()
    y = x.clone().requires_grad_(True)
    loss = intensity_w1(y, torch.zeros_like(mask), x, mask)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="levels"):
        intensity_w1(x, mask, x, mask, levels=0)


def test_banded_w1_sees_what_lies_at_which_depth():
    from counterfeit.losses_histogram import banded_intensity_w1

    # Reference: band 0 (shallow) holds fat (-0.5), band 1 (deeper) holds bone (0.8). The "swapped" image paints bone
    # at the fat's depth and fat at the bone's: the same global histogram, the wrong one band by band.
    bands = torch.tensor([[[[0, 0, 1, 1, -1]]]])
    reference = torch.tensor([[[[-0.5, -0.5, 0.8, 0.8, -1.0]]]])
    swapped = torch.tensor([[[[0.8, 0.8, -0.5, -0.5, -1.0]]]], requires_grad=True)
    inside = bands >= 0
    assert float(intensity_w1(swapped.detach(), inside, reference, inside)) == pytest.approx(0.0, abs=1e-6)
    loss = banded_intensity_w1(swapped, bands, reference, bands, n_bands=2)
    assert float(loss.detach()) == pytest.approx(1.3)  # |0.8 - (-0.5)| in each band
    loss.backward()
    assert swapped.grad[0, 0, 0, :4].abs().sum() > 0 and swapped.grad[0, 0, 0, 4] == 0  # outside: no pull
    assert float(banded_intensity_w1(reference, bands, reference, bands, n_bands=2)) == pytest.approx(0.0, abs=1e-6)
    # A band present on one side only is skipped; none in common gives 0.
    assert float(banded_intensity_w1(swapped.detach(), bands, reference, torch.full_like(bands, 5), n_bands=2)) == 0.0
