"""Structure consistency across modalities: MIND descriptors (Heinrich et al. 2012) and their L1 loss.

A CycleGAN's cycle loss only asks that Syn_MR undo Syn_CT; it does not ask that the synthetic CT
keep the MR's anatomy where it is. On head MR the scalp fat is the brightest tissue and the skull
the darkest, the reverse of CT, and an early CycleGAN happily paints bone (or air) over the
scalp: the cycle can still be closed. The structure-constrained CycleGAN (Yang et al., "Unpaired
brain MR-to-CT synthesis using a structure-constrained CycleGAN", DLMIA 2018) adds an L1 loss
between modality-independent neighbourhood descriptors (MIND) of each generator's input and
output, so edges must stay where they are whatever their contrast.

MIND at pixel x for a neighbour offset r (2D, with the 8 neighbours at distance `distance`):

    D(x, r)   = Σ_p G(p) (I(x + p) − I(x + r + p))²     (patch distance, Gaussian patch G)
    V(x)      = mean_r D(x, r)                          (local variance estimate)
    MIND(x,r) = exp(−D(x, r) / V(x)) / max_r exp(−D(x, r) / V(x))

Squared differences make it blind to the sign of a contrast, and V normalises its strength, so a
dark-to-bright edge in MR and a bright-to-dark one in CT have the same descriptor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mind_descriptors", "mind_loss"]

_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian smoothing of (N, 1, H, W) with replicate padding."""
    r = (g.numel() - 1) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))


def mind_descriptors(image: torch.Tensor, distance: int = 2, sigma: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """MIND of each channel of `image` (B, C, H, W) -> (B, C * 8, H, W), values in (0, 1].

    `distance`: pixels between a point and its 8 neighbours; `sigma`: the patch Gaussian's std.
    """
    b, c, h, w = image.shape
    x = image.reshape(b * c, 1, h, w)
    d = distance
    padded = F.pad(x, (d, d, d, d), mode="replicate")
    g = _gaussian_kernel(sigma, image.device, image.dtype)
    dists = []
    for dy, dx in _OFFSETS:
        shifted = padded[:, :, d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w]
        dists.append(_blur((x - shifted) ** 2, g))
    dist = torch.cat(dists, dim=1)  # (B*C, 8, H, W)
    variance = dist.mean(dim=1, keepdim=True)
    # Bound V relative to the image's mean so flat regions (V ~ 0) do not blow up, as the reference code does.
    mean_v = variance.mean(dim=(2, 3), keepdim=True)
    variance = torch.maximum(torch.minimum(variance, 1000 * mean_v), 0.001 * mean_v) + eps
    # exp(-D/V) / max_r exp(-D/V) = exp(-(D - min_r D) / V): the stable form
    mind = torch.exp(-(dist - dist.min(dim=1, keepdim=True).values) / variance)
    return mind.reshape(b, c * len(_OFFSETS), h, w)


def mind_loss(source: torch.Tensor, output: torch.Tensor, weight: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """Mean |MIND(source) − MIND(output)|, optionally weighted per pixel by `weight` (B, 1, H, W).

    `source` and `output` may differ in channels (2.5D input, 1-channel output): then the middle
    channel of the one with more channels is compared.
    """
    if source.shape[1] != output.shape[1]:
        mid = lambda t: t[:, t.shape[1] // 2 : t.shape[1] // 2 + 1]  # noqa: E731
        source, output = mid(source), mid(output)
    diff = (mind_descriptors(source, **kwargs) - mind_descriptors(output, **kwargs)).abs()
    if weight is None:
        return diff.mean()
    weight = weight.expand(-1, 1, -1, -1)
    return (diff * weight).sum() / (weight.sum() * diff.shape[1]).clamp_min(1e-12)
