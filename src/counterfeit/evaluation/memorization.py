"""Memorisation check: how close is each generated image to its nearest training image?

A GAN that copies its training set produces samples at (almost) zero distance from a training
image. Distances are root-mean-square pixel differences (L2 / √(C·H·W), in the images' own units,
e.g. [-1, 1]), so they do not grow with image size. Compare them with `reference`: the same
distances for held-out real images, which are new by construction. Generated samples much closer
to the training set than held-out images are is a sign of copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from counterfeit.metrics import register_metric


@dataclass
class NearestNeighbours:
    """Per generated image: RMS distance to its nearest training image and that image's index."""

    distances: np.ndarray  # (N,)
    indices: np.ndarray  # (N,) into the training set
    reference: np.ndarray | None = None  # (M,) the same for held-out real images, if given
    summary: dict[str, float] = field(default_factory=dict)

    def closest_pairs(self, k: int = 8) -> list[tuple[int, int, float]]:
        """The `k` generated images closest to the training set: (generated index, training index, distance)."""
        order = np.argsort(self.distances, kind="stable")[:k]
        return [(int(i), int(self.indices[i]), float(self.distances[i])) for i in order]


def nearest_training_distances(queries, training, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices): RMS pixel distance from every query image to its nearest training image."""
    q = _flat(queries, "generated")
    t = _flat(training, "training")
    if q.shape[1] != t.shape[1]:
        raise ValueError(f"images differ in size: {q.shape[1]} vs {t.shape[1]} values per image")
    t_sq = (t * t).sum(1)
    idx = torch.empty(len(q), dtype=torch.int64)
    for s in range(0, len(q), batch_size):
        chunk = q[s : s + batch_size]
        # ‖a − b‖² = ‖a‖² + ‖b‖² − 2 aᵀb: one matrix product per chunk finds the nearest image.
        d2 = (chunk * chunk).sum(1, keepdim=True) + t_sq[None] - 2.0 * chunk @ t.T
        idx[s : s + len(chunk)] = d2.argmin(dim=1)
    # The distance to the chosen neighbour, recomputed directly in float64: exact copies give exactly 0.
    diff = q.double() - t[idx].double()
    return (diff.pow(2).mean(1).sqrt()).numpy(), idx.numpy()


@register_metric("nearest_neighbour")
def memorization_check(generated, training, reference=None, batch_size: int = 256) -> NearestNeighbours:
    """Nearest-training-image distances of `generated` (and of held-out `reference` images, if given).

    `summary` holds mean, min, 5th/50th/95th percentiles of the generated distances, the fraction
    of near-copies (distance < 1 % of the value range 2) and, with `reference`, its median and
    `ratio` = generated median / reference median (≈ 1: no sign of copying; ≪ 1: suspicious).
    """
    d, i = nearest_training_distances(generated, training, batch_size)
    summary = {
        "nn_mean": float(d.mean()),
        "nn_min": float(d.min()),
        "nn_p5": float(np.percentile(d, 5)),
        "nn_median": float(np.median(d)),
        "nn_p95": float(np.percentile(d, 95)),
        "near_copies": float((d < 0.02).mean()),
    }
    ref = None
    if reference is not None:
        ref, _ = nearest_training_distances(reference, training, batch_size)
        summary["nn_reference_median"] = float(np.median(ref))
        summary["nn_ratio"] = summary["nn_median"] / max(summary["nn_reference_median"], 1e-12)
    return NearestNeighbours(d, i, ref, summary)


def save_closest_pairs(result: NearestNeighbours, generated, training, path: str | Path, k: int = 8) -> Path:
    """A figure of the `k` closest pairs: generated images on the top row, their nearest training images below."""
    from counterfeit.data.images import save_image_grid

    pairs = result.closest_pairs(k)
    gen = _numpy(generated)[[p[0] for p in pairs]]
    train = _numpy(training)[[p[1] for p in pairs]]
    return save_image_grid(np.concatenate([gen, train]), path, nrow=len(pairs))


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _flat(x, what: str) -> torch.Tensor:
    t = torch.as_tensor(_numpy(x), dtype=torch.float32)
    if t.ndim < 2 or len(t) == 0:
        raise ValueError(f"{what}: expected a non-empty batch of images, got shape {tuple(t.shape)}")
    return t.flatten(1)
