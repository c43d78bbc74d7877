"""Perceptual (feature-matching) loss and the CRN's hindsight diversity loss.

Perceptual loss (Chen & Koltun 2017, eq. 1): L(I, g) = sum_l lambda_l * ||Phi_l(I) - Phi_l(g)||_1,
with Phi_0 the image itself and Phi_1..5 the VGG19 activations conv1_2 ... conv5_2 (post-ReLU).
Each term is a mean absolute difference, as in the released code's `compute_error`.

As in that code, the pixel term is computed on the VGG's *input* (the image after the
network's normalisation). That code feeds MatConvNet's VGG 0-255 values minus the mean;
torchvision's weights take ImageNet mean/std-normalised [0, 1] values, about 1/58 of that
scale, and their features come from another training run. So the published layer weights
below are a starting point for torchvision's VGG19, not weights tuned for it (no pretrained
weights were at hand here to re-balance them; the paper's own recipe for that is below).

Layer weights of the released code (github.com/CQFIO/PhotographicImageSynthesis), pixel first:
- Cityscapes 512p / 1024p (`demo_512p.py`, `demo_1024p.py`): 1, 1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5
  -- our default (`PAPER_LAYER_WEIGHTS`, `PAPER_PIXEL_WEIGHT`);
- Cityscapes 256p with diversity, k = 9 (`demo_256p.py`): 1, 1, 1, 1, 1, 10;
- GTA 256p with diversity (`GTA_Diversity_256p.py`): 1, 1/1.4, 1/1.8, 1/1.3, 1/2.2, 10/0.62.
The paper describes them as initialised to the inverse number of elements per layer and
rescaled after 100 epochs to balance the terms' contributions.

Diversity (hindsight) loss, section 3.4 and `demo_256p.py`: the network emits k images; for
every semantic class c the class-masked loss L_c(I, g_u) is computed for each output u:
every term's per-pixel difference (mean over channels) is weighted by the layout's class-c
map downsampled (area average) to that term's resolution, then averaged over the image
(divided by the whole image's pixel count, not the class area). The loss is

    sum_c [ 0.999 * min_u L_c(I, g_u) + 0.001 * mean_u L_c(I, g_u) ]

(the small mean term keeps every output learning). Since the class maps sum to one per
pixel, with k = 1 this equals the plain perceptual loss.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from counterfeit.errors import UserError
from counterfeit.nets.vgg import VGG19Features

PAPER_PIXEL_WEIGHT = 1.0
PAPER_LAYER_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)  # conv1_2 ... conv5_2
MIN_WEIGHT = 0.999
MEAN_WEIGHT = 0.001


class PerceptualLoss(nn.Module):
    """pixel_weight * |x - y| + sum_l layer_weights[l] * |Phi_l(x) - Phi_l(y)| (means), on [-1, 1] images.

    `vgg` is a (frozen) `VGG19Features`; `layer_weights` has one weight per `vgg.layers`.
    `forward(fake, real)` gives the scalar loss; `per_class(fake, real, layout)` the
    class-masked losses the diversity loss needs.
    """

    def __init__(self, vgg: VGG19Features, layer_weights: Sequence[float] = PAPER_LAYER_WEIGHTS,
                 pixel_weight: float = PAPER_PIXEL_WEIGHT) -> None:
        super().__init__()
        if len(layer_weights) != len(vgg.layers):
            raise UserError(f"perceptual loss: {len(layer_weights)} layer weights for {len(vgg.layers)} VGG layers {vgg.layers}")
        self.vgg = vgg
        self.weights = (float(pixel_weight),) + tuple(float(w) for w in layer_weights)

    def _terms(self, fake: torch.Tensor, real: torch.Tensor) -> list[torch.Tensor]:
        """Per-term mean-over-channels absolute differences, each (N, 1, h_l, w_l); `real` may be fewer images.

        `fake` holds k images per `real` image (fake rows [b*k, (b+1)*k) belong to real row b);
        the target's features are computed once, without gradients.
        """
        with torch.no_grad():
            real_feats = self.vgg(real, include_input=True)
        fake_feats = self.vgg(fake, include_input=True)
        k = fake.shape[0] // real.shape[0]
        return [(f - r.repeat_interleave(k, dim=0)).abs().mean(dim=1, keepdim=True) for f, r in zip(fake_feats, real_feats)]

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        _check_pair(fake, real)
        return sum(w * d.mean() for w, d in zip(self.weights, self._terms(fake, real)))

    def per_class(self, fake: torch.Tensor, real: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """Class-masked losses (N, num_classes) for `fake` (N = B*k images) against `real` (B) and `layout` (B, classes, H, W)."""
        _check_pair(fake, real)
        if layout.ndim != 4 or layout.shape[0] != real.shape[0] or layout.shape[-2:] != real.shape[-2:]:
            raise UserError(f"perceptual loss: layout {tuple(layout.shape)} does not match images {tuple(real.shape)}")
        k = fake.shape[0] // real.shape[0]
        layout = layout.to(fake.dtype).repeat_interleave(k, dim=0)
        total = fake.new_zeros(fake.shape[0], layout.shape[1])
        for w, d in zip(self.weights, self._terms(fake, real)):
            mask = layout if d.shape[-2:] == layout.shape[-2:] else F.adaptive_avg_pool2d(layout, d.shape[-2:])
            total = total + w * (mask * d).mean(dim=(2, 3))
        return total


def _check_pair(fake: torch.Tensor, real: torch.Tensor) -> None:
    if fake.ndim != 4 or real.ndim != 4 or fake.shape[1:] != real.shape[1:] or fake.shape[0] % real.shape[0]:
        raise UserError(f"perceptual loss: outputs {tuple(fake.shape)} and targets {tuple(real.shape)} do not match")


def hindsight_reduce(per_class: torch.Tensor, min_weight: float = MIN_WEIGHT, mean_weight: float = MEAN_WEIGHT) -> torch.Tensor:
    """(B, k, classes) class losses -> scalar: sum over classes of min_weight*min_k + mean_weight*mean_k, mean over B."""
    best = per_class.min(dim=1).values
    mean = per_class.mean(dim=1)
    return (min_weight * best + mean_weight * mean).sum(dim=1).mean()


def diversity_loss(outputs: torch.Tensor, target: torch.Tensor, layout: torch.Tensor, perceptual: PerceptualLoss,
                   min_weight: float = MIN_WEIGHT, mean_weight: float = MEAN_WEIGHT) -> torch.Tensor:
    """The CRN hindsight loss of k outputs (B, k, C, H, W) against `target` (B, C, H, W).

    `layout` is the (B, classes, H, W) one-hot layout. With k = 1 this is the plain perceptual
    loss (the class maps sum to one).
    """
    if outputs.ndim != 5:
        raise UserError(f"diversity loss: outputs must be (B, k, C, H, W), got {tuple(outputs.shape)}")
    b, k = outputs.shape[:2]
    per_class = perceptual.per_class(outputs.flatten(0, 1), target, layout).view(b, k, -1)
    return hindsight_reduce(per_class, min_weight, mean_weight)


__all__ = [
    "MEAN_WEIGHT",
    "MIN_WEIGHT",
    "PAPER_LAYER_WEIGHTS",
    "PAPER_PIXEL_WEIGHT",
    "PerceptualLoss",
    "diversity_loss",
    "hindsight_reduce",
]
