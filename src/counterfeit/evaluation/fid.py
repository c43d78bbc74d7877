"""Fréchet distance (FID) and kernel inception distance (KID) from the features of any extractor.

- FID (Heusel et al. 2017): ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½) between Gaussians fitted
  to the two feature sets; the matrix square root by `scipy.linalg.sqrtm` (with pytorch-fid's
  ε·I fallback when the product is singular).
- KID (Bińkowski et al. 2018): unbiased MMD² with the polynomial kernel k(x, y) = (xᵀy / d + 1)³,
  averaged over random subsets (mean and standard deviation reported). Unbiased for independent
  samples: ≈ 0 (possibly slightly negative) for two samples of the same distribution. A set
  against *itself* gives −O(1/n), because each point meets its own copy in the cross term.

The numbers are only comparable between runs that use the same extractor and weights, so every
result carries `extractor` (e.g. "inception-v3-fid[pt_inception-2015-12-05.pth]"). Call it
"FID" only with the real FID Inception weights; with other weights it is a Fréchet distance in
that network's feature space.
"""

from __future__ import annotations

import warnings
from typing import Callable, Protocol

import numpy as np
import torch

from counterfeit.metrics import register_metric


class FeatureExtractor(Protocol):
    """Maps images (B, C, H, W) in [-1, 1] to features (B, D); `name` says which network and weights."""

    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def extract_features(extractor: Callable[[torch.Tensor], torch.Tensor], images, batch_size: int = 32,
                     device: torch.device | str = "cpu") -> np.ndarray:
    """Features of (N, C, H, W) images (numpy or tensor, values in [-1, 1]) as float64 (N, D)."""
    if isinstance(extractor, torch.nn.Module):
        extractor.eval()
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images, np.float32))
    out = [extractor(x[i : i + batch_size].to(device).float()).detach().cpu().double() for i in range(0, len(x), batch_size)]
    feats = torch.cat(out).flatten(1).numpy()
    if not np.isfinite(feats).all():
        raise ValueError("the feature extractor produced NaN or infinite features")
    return feats


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features (N >= 2)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two Gaussians must have the same dimension")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            covmean = linalg.sqrtm(sigma1 @ sigma2)
            singular = not np.isfinite(covmean).all()
        except linalg.LinAlgWarning:
            singular = True
    if singular:
        # Singular product (fewer samples than dimensions, or dead features): regularise as pytorch-fid does,
        # and say so once in our words instead of scipy's multi-line warning.
        warnings.warn(f"Fréchet distance: the {len(sigma1)}-dimensional feature covariance is singular (too few "
                      f"samples or constant features); computed with {eps:g}·I added, so compare it only with "
                      f"values from the same number of samples", stacklevel=2)
        offset = np.eye(len(sigma1)) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Numerical noise gives tiny imaginary parts; a large one means the result is meaningless.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.abs(covmean).max())):
            raise ValueError(f"Fréchet distance: imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # tiny negative values are round-off


@register_metric("fid")
def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to (N, D) real and fake features."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                             coef0: float = 1.0) -> float:
    """Unbiased MMD² between samples x (m, D) and y (n, D) with k(a, b) = (gamma·aᵀb + coef0)^degree."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least 2 samples in each set")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    kxx = (gamma * x @ x.T + coef0) ** degree
    kyy = (gamma * y @ y.T + coef0) ** degree
    kxy = (gamma * x @ y.T + coef0) ** degree
    sum_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    sum_yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2.0 * kxy.mean())


@register_metric("kid")
def kid_from_features(real: np.ndarray, fake: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased polynomial MMD² over random subsets.

    Subsets have min(subset_size, len(real), len(fake)) samples, drawn without replacement.
    """
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {real.shape} and {fake.shape}")
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                                 fake[rng.choice(len(fake), size, replace=False)])
        for _ in range(n_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def fid_kid(real_images, fake_images, extractor: FeatureExtractor, batch_size: int = 32,
            device: torch.device | str = "cpu", kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict:
    """FID and KID between two image sets through `extractor`; the result names the extractor.

    Returns {"fid", "kid", "kid_std", "extractor", "n_real", "n_fake", "feature_dim"}.
    """
    real = extract_features(extractor, real_images, batch_size, device)
    fake = extract_features(extractor, fake_images, batch_size, device)
    kid, kid_std = kid_from_features(real, fake, kid_subsets, kid_subset_size)
    return {
        "fid": fid_from_features(real, fake),
        "kid": kid,
        "kid_std": kid_std,
        "extractor": getattr(extractor, "name", type(extractor).__name__),
        "n_real": len(real),
        "n_fake": len(fake),
        "feature_dim": real.shape[1],
    }
