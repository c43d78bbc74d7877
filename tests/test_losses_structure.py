"""MIND descriptors and the structure-consistency loss."""

from __future__ import annotations

import torch

from counterfeit.losses_structure import mind_descriptors, mind_loss


def _ring(shift: int = 0, size: int = 32) -> torch.Tensor:
    """A bright ring on a dark background (like scalp fat), optionally moved right by `shift` pixels."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    r = ((y - size / 2) ** 2 + (x - size / 2 - shift) ** 2).sqrt()
    img = ((r > 8) & (r < 11)).float() * 0.8 - 0.4
    img = img + 0.05 * torch.sin(x * 0.7) * torch.cos(y * 0.3)  # texture, so no region is exactly flat
    return img.view(1, 1, size, size)


def test_mind_is_blind_to_contrast_sign_and_scale() -> None:
    img = _ring()
    d = mind_descriptors(img)
    assert d.shape == (1, 8, 32, 32)
    assert float(d.min()) > 0 and float(d.max()) <= 1.0 + 1e-6
    # An MR-like ring and its CT-like inversion (dark ring, other scale and offset) share their descriptors.
    assert torch.allclose(mind_descriptors(-3.0 * img + 0.5), d, atol=2e-3)
    assert float(mind_loss(img, -0.5 * img)) < 1e-3


def test_mind_loss_sees_moved_structure() -> None:
    moved = float(mind_loss(_ring(), _ring(shift=2)))
    assert moved > 0.02, moved
    assert moved > 100 * float(mind_loss(_ring(), -_ring()))


def test_mind_loss_weight_and_gradient() -> None:
    src = _ring()
    out = _ring(shift=2).requires_grad_(True)
    left = torch.zeros(1, 1, 32, 32)
    left[..., :2] = 1.0  # a strip beyond the reach (distance 2 + patch radius 2) of both rings
    with torch.no_grad():
        assert float(mind_loss(src, out, left)) < 1e-3 < float(mind_loss(src, out))
    loss = mind_loss(src, out)
    loss.backward()
    assert out.grad is not None and float(out.grad.abs().sum()) > 0
    # 2.5D source (3 slices) vs 1-channel output: the middle slice is compared
    stack = torch.cat([_ring(shift=5), src, _ring(shift=-5)], dim=1)
    assert float(mind_loss(stack, -src)) < 1e-3
