"""Evaluation metrics, findable by name through a small registry.

`METRICS` maps a name to a function; add one with the `register_metric(name)`
decorator. This module holds the 2D toy-lab metrics:

- "toy_modes": modes covered and fraction of high-quality samples (PacGAN
  protocol): a sample is high quality if it lies within 3σ of its nearest mode;
  a mode is covered if at least one high-quality sample lands on it.
- "toy_js": Jensen-Shannon divergence between 2D histograms of real and
  generated samples (an estimate; it depends on the binning).
"""

from __future__ import annotations

from typing import Callable, TypeVar, Union

import numpy as np
import torch

from counterfeit.divergences import js_divergence

F = TypeVar("F", bound=Callable)
Points = Union[np.ndarray, torch.Tensor]

METRICS: dict[str, Callable] = {}

__all__ = ["METRICS", "get_metric", "histogram_js", "mode_coverage", "register_metric"]


def register_metric(name: str) -> Callable[[F], F]:
    """Decorator registering a metric function under `name` in `METRICS`."""

    def decorate(fn: F) -> F:
        if name in METRICS and METRICS[name] is not fn:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = fn
        return fn

    return decorate


def get_metric(name: str) -> Callable:
    """The metric function registered as `name`."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    return METRICS[name]


def _points(x: Points, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{what}: expected an (N, 2) array of 2D points, got shape {arr.shape}")
    return arr


@register_metric("toy_modes")
def mode_coverage(samples: Points, modes: Points, sigma: float, n_sigmas: float = 3.0,
                  min_share: float = 0.2) -> dict:
    """Mode coverage and sample quality of 2D samples against known, equally weighted mixture modes.

    Returns a dict with
    `modes_covered` (int: modes with at least one high-quality sample, the toy lab's spec),
    `modes_well_covered` (int: modes with at least `min_share` of the samples an equal split would give them,
    PacGAN's stricter rule, which counts a mode as lost below 20 of an expected 100 samples),
    `n_modes` (int), `high_quality` (fraction of samples within `n_sigmas`·σ of their nearest mode, in [0, 1]) and
    `per_mode_counts` (list: high-quality samples per mode). Non-finite samples count as low quality.
    """
    x = _points(samples, "samples")
    centres = _points(modes, "modes")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    counts = np.zeros(len(centres), dtype=np.int64)
    n = len(x)
    good = 0
    # Chunked so that (chunk × modes) distance tables stay small for large N.
    for start in range(0, n, 4096):
        chunk = x[start : start + 4096]
        d2 = ((chunk[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
        nearest = d2.argmin(axis=1)
        close = np.sqrt(d2[np.arange(len(chunk)), nearest]) <= n_sigmas * sigma
        close &= np.isfinite(chunk).all(axis=1)
        counts += np.bincount(nearest[close], minlength=len(centres))
        good += int(close.sum())
    return {
        "modes_covered": int((counts > 0).sum()),
        "modes_well_covered": int((counts >= max(1.0, min_share * n / len(centres))).sum()),
        "n_modes": int(len(centres)),
        "high_quality": good / n if n else 0.0,
        "per_mode_counts": counts.tolist(),
    }


@register_metric("toy_js")
def histogram_js(
    real: Points,
    fake: Points,
    bounds: tuple[float, float, float, float],
    bins: int = 64,
) -> float:
    """JS divergence (nats, in [0, log 2]) between 2D histograms of `real` and `fake`.

    Both are binned on the same `bins`×`bins` grid over `bounds` = (xmin, xmax,
    ymin, ymax); points outside are clipped into the border bins so that mass the
    generator throws away still counts. Non-finite points are dropped.
    """
    xmin, xmax, ymin, ymax = bounds
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"bounds must satisfy xmin < xmax and ymin < ymax, got {bounds}")
    hists = []
    for what, pts in (("real", real), ("fake", fake)):
        arr = _points(pts, what)
        arr = arr[np.isfinite(arr).all(axis=1)]
        if len(arr) == 0:
            raise ValueError(f"{what}: no finite points to histogram")
        # Clip a hair inside the range so border points land in the last bin, not outside it.
        eps_x, eps_y = 1e-9 * (xmax - xmin), 1e-9 * (ymax - ymin)
        xs = np.clip(arr[:, 0], xmin, xmax - eps_x)
        ys = np.clip(arr[:, 1], ymin, ymax - eps_y)
        h, _, _ = np.histogram2d(xs, ys, bins=bins, range=[[xmin, xmax], [ymin, ymax]])
        hists.append(h.ravel() / h.sum())
    return float(js_divergence(hists[0], hists[1]))


# Image-set metrics (swd, fid, kid, nearest_neighbour) register themselves on import.
import counterfeit.evaluation  # noqa: E402,F401
