"""Intensity-distribution matching: the 1D Wasserstein-1 distance between two sets of intensities.

A PatchGAN judges windows one at a time; it cannot count. On head MR the scalp fat is bright and
the skull dark, and a CycleGAN that paints the fat as a second skull makes windows that each look
like CT, while the slice as a whole holds far more bone than a CT slice does. The distribution of
intensities inside the body is a global statistic that needs no pairing: each generator's output,
inside the body, should have the intensity distribution of real images of its target modality.

In one dimension the Wasserstein-1 distance between distributions P and Q is the L1 distance
between their quantile functions,

    W1(P, Q) = ∫₀¹ |F_P⁻¹(u) − F_Q⁻¹(u)| du,

evaluated here at `levels` evenly spaced quantile levels (bin midpoints) with torch.quantile's
linear interpolation, which is differentiable in the values. Two random slices of one modality
differ too (a slice through the skull's top holds more bone than one through the ventricles), so
this is a soft pull towards the modality's typical histogram, to be weighted well below the
adversarial and cycle terms' say over the details.
"""

from __future__ import annotations

import torch

__all__ = ["banded_intensity_w1", "intensity_w1"]


def intensity_w1(values: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor, reference_mask: torch.Tensor,
                 levels: int = 64) -> torch.Tensor:
    """W1 between the intensities of `values` where `mask` holds and those of `reference` where `reference_mask` holds.

    Both are pooled over the batch. An empty mask on either side gives 0 (still attached to the graph).
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    a = values[mask.expand_as(values)]
    b = reference[reference_mask.expand_as(reference)]
    if a.numel() == 0 or b.numel() == 0:
        return values.sum() * 0.0
    q = (torch.arange(levels, device=values.device, dtype=values.dtype) + 0.5) / levels
    return (torch.quantile(a, q) - torch.quantile(b, q)).abs().mean()


def banded_intensity_w1(values: torch.Tensor, bands: torch.Tensor, reference: torch.Tensor,
                        reference_bands: torch.Tensor, n_bands: int, levels: int = 64) -> torch.Tensor:
    """The mean of `intensity_w1` band by band: band k compares `values` where `bands == k` with `reference` where
    `reference_bands == k`, for the bands 0..n_bands-1 present on both sides (other band values are ignored).

    With bands of depth below the body surface this compares what lies at each depth, which a global histogram
    cannot: painting fat as bone moves bone from its depth to the fat's and leaves the global histogram almost as it was.
    """
    terms = [intensity_w1(values, bands == k, reference, reference_bands == k, levels) for k in range(n_bands)
             if bool((bands == k).any()) and bool((reference_bands == k).any())]
    return torch.stack(terms).mean() if terms else values.sum() * 0.0
