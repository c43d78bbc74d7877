"""2D toy distributions for the GAN lab: Gaussian mixtures with known modes.

- "ring8": 8 Gaussians on the unit circle, σ = 0.01 (the PacGAN 2D-ring protocol).
- "grid25": 25 Gaussians at {−4, −2, 0, 2, 4}², σ = 0.05 (the PacGAN 2D-grid protocol).
- "spiral": 100 Gaussians at equal arc length along a two-turn spiral, σ = 0.05;
  neighbours are ~2σ apart, so the samples form a continuous band and
  "modes covered" reads as "fraction of the spiral covered".
- "gaussian": one standard normal at the origin (σ = 1).

Every distribution is an equal-weight mixture of isotropic Gaussians, so the
mode metrics (`counterfeit.metrics`) apply to all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from counterfeit.errors import UserError

TOY_DISTRIBUTIONS = ("ring8", "grid25", "spiral", "gaussian")

__all__ = ["TOY_DISTRIBUTIONS", "ToyDistribution", "make_toy"]


@dataclass(frozen=True)
class ToyDistribution:
    """Equal-weight mixture of isotropic Gaussians N(mode_i, σ² I) in 2D."""

    name: str
    modes: np.ndarray  # (M, 2) float64
    sigma: float

    def sample(self, rng: torch.Generator | np.random.Generator | None, n: int) -> torch.Tensor:
        """`n` samples as an (n, 2) float32 tensor; `rng` is a torch.Generator, a numpy Generator, or None (global torch RNG)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if isinstance(rng, np.random.Generator):
            idx = rng.integers(0, len(self.modes), size=n)
            noise = rng.standard_normal((n, 2))
            return torch.from_numpy(self.modes[idx] + self.sigma * noise).float()
        modes = torch.from_numpy(self.modes).float()
        idx = torch.randint(0, len(self.modes), (n,), generator=rng)
        noise = torch.randn(n, 2, generator=rng)
        return modes[idx] + self.sigma * noise

    @property
    def mean(self) -> np.ndarray:
        """Mean of the distribution, (2,)."""
        return self.modes.mean(axis=0)

    @property
    def std(self) -> float:
        """Per-coordinate RMS spread about the mean (one number for both axes: isotropic scaling)."""
        spread = ((self.modes - self.mean) ** 2).sum(axis=1).mean() / 2
        return float(np.sqrt(spread + self.sigma**2))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) enclosing the modes plus a margin; used for plots and histograms."""
        margin = max(4 * self.sigma, 0.1 * float(np.ptp(self.modes, axis=0).max()), 0.5)
        lo = self.modes.min(axis=0) - margin
        hi = self.modes.max(axis=0) + margin
        return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _ring(n_modes: int = 8, radius: float = 1.0) -> np.ndarray:
    angles = 2 * math.pi * np.arange(n_modes) / n_modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid(values: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)) -> np.ndarray:
    xs, ys = np.meshgrid(values, values, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def _spiral(n_modes: int = 100, turns: float = 2.0, r0: float = 0.3, r1: float = 2.0) -> np.ndarray:
    # Archimedean spiral r = r0 + (r1 − r0)·θ/θmax, resampled at equal arc length.
    theta = np.linspace(0.0, 2 * math.pi * turns, 20_000)
    r = r0 + (r1 - r0) * theta / theta[-1]
    xy = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    targets = np.linspace(0.0, arc[-1], n_modes)
    return np.stack([np.interp(targets, arc, xy[:, 0]), np.interp(targets, arc, xy[:, 1])], axis=1)


def make_toy(name: str) -> ToyDistribution:
    """The toy distribution called `name` (one of `TOY_DISTRIBUTIONS`)."""
    if name == "ring8":
        return ToyDistribution("ring8", _ring(8, 1.0), 0.01)
    if name == "grid25":
        return ToyDistribution("grid25", _grid(), 0.05)
    if name == "spiral":
        return ToyDistribution("spiral", _spiral(), 0.05)
    if name == "gaussian":
        return ToyDistribution("gaussian", np.zeros((1, 2)), 1.0)
    raise UserError(f"unknown toy distribution {name!r}; choose one of: {', '.join(TOY_DISTRIBUTIONS)}")
