"""Information theory of discrete distributions (talk §2.1), natural log throughout.

Every function takes discrete distributions along the last axis (entries >= 0,
summing to 1), either as numpy arrays or torch tensors; leading axes are a batch.
numpy in -> numpy out (float64); any torch tensor in -> torch tensor out, in the
tensor's dtype and device, differentiable where the math is.

Conventions (the limits of the formulas): 0·log 0 = 0, p·log(p/0) = +inf for
p > 0, so KL(p‖q) is +inf (never NaN) when q misses mass that p has.

- entropy H(p) = −Σ p log p
- cross-entropy H(p, q) = −Σ p log q
- KL(p‖q) = Σ p log(p/q)
- JS(p‖q) = ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2, in [0, log 2]
- f-divergence D_f(p‖q) = Σ q f(p/q), f convex with f(1) = 0
- the GAN value at the optimal discriminator, 2·JS(p_data‖p_g) − 2·log 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "F_GENERATORS",
    "FGenerator",
    "cross_entropy",
    "entropy",
    "f_divergence",
    "gan_value_at_optimum",
    "js_divergence",
    "kl_divergence",
]


# ----------------------------------------------------------------------------- input handling


def _as_distributions(*arrays: object, names: tuple[str, ...]) -> tuple[list[torch.Tensor], bool]:
    """Validate and convert to torch tensors of one dtype; return (tensors, came_from_torch)."""
    from_torch = any(isinstance(a, torch.Tensor) for a in arrays)
    tensors = []
    for name, a in zip(names, arrays):
        if isinstance(a, torch.Tensor):
            t = a if a.is_floating_point() else a.double()
        else:
            arr = np.asarray(a)
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
                raise ValueError(f"{name}: expected a numeric array of probabilities, got dtype {arr.dtype}")
            t = torch.from_numpy(np.array(arr, dtype=np.float64))  # a copy; keeps 0-d as 0-d
        tensors.append(t)
    if from_torch:
        ref = next(t for a, t in zip(arrays, tensors) if isinstance(a, torch.Tensor))
        tensors = [t.to(dtype=ref.dtype, device=ref.device) for t in tensors]
    shape = tensors[0].shape
    for name, t in zip(names, tensors):
        if t.ndim == 0 or t.shape[-1] == 0:
            raise ValueError(f"{name}: expected a distribution along the last axis, got shape {tuple(t.shape)}")
        if t.shape != shape:
            raise ValueError(
                f"{names[0]} and {name} must have the same shape, got {tuple(shape)} and {tuple(t.shape)}"
            )
        _check_distribution(t, name)
    return tensors, from_torch


def _check_distribution(t: torch.Tensor, name: str) -> None:
    with torch.no_grad():
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}: contains NaN or infinite entries")
        if (t < 0).any():
            raise ValueError(f"{name}: probabilities must be >= 0, found {t.min().item():.3g}")
        # float32 sums over many bins drift more than float64 ones.
        tol = 1e-6 if t.dtype == torch.float64 else 1e-4
        sums = t.sum(dim=-1)
        worst = (sums - 1).abs().max().item()
        if worst > tol:
            bad = sums.flatten()[(sums.flatten() - 1).abs().argmax()].item()
            raise ValueError(f"{name}: each distribution (last axis) must sum to 1, found a sum of {bad:.6g}")


def _out(value: torch.Tensor, from_torch: bool) -> ArrayLike:
    if from_torch:
        return value
    result = value.numpy()
    return np.float64(result) if result.ndim == 0 else result


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    # xlogy(0, .) = 0 gives 0·log 0 = 0; xlogy(p>0, 0) = -inf gives KL = +inf, not NaN.
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(dim=-1)


# ----------------------------------------------------------------------------- divergences


def entropy(p: ArrayLike) -> ArrayLike:
    """Shannon entropy H(p) = −Σ p log p in nats."""
    (p,), from_torch = _as_distributions(p, names=("p",))
    return _out(0.0 - torch.xlogy(p, p).sum(dim=-1), from_torch)  # 0 - x, not -x: a point mass gives 0.0, not -0.0


def cross_entropy(p: ArrayLike, q: ArrayLike) -> ArrayLike:
    """Cross-entropy H(p, q) = −Σ p log q = H(p) + KL(p‖q); +inf if q = 0 where p > 0."""
    (p, q), from_torch = _as_distributions(p, q, names=("p", "q"))
    return _out(-torch.xlogy(p, q).sum(dim=-1), from_torch)


def kl_divergence(p: ArrayLike, q: ArrayLike) -> ArrayLike:
    """Kullback-Leibler divergence KL(p‖q) = Σ p log(p/q); +inf if q = 0 where p > 0."""
    (p, q), from_torch = _as_distributions(p, q, names=("p", "q"))
    return _out(_kl(p, q), from_torch)


def js_divergence(p: ArrayLike, q: ArrayLike) -> ArrayLike:
    """Jensen-Shannon divergence ½ KL(p‖m) + ½ KL(q‖m), m = (p+q)/2; symmetric, in [0, log 2].

    Equals the square of `scipy.spatial.distance.jensenshannon(p, q)` (natural log).
    """
    (p, q), from_torch = _as_distributions(p, q, names=("p", "q"))
    m = 0.5 * (p + q)
    return _out(0.5 * _kl(p, m) + 0.5 * _kl(q, m), from_torch)


def gan_value_at_optimum(p_data: ArrayLike, p_g: ArrayLike) -> ArrayLike:
    """GAN value V(D*, G) = E_data[log D*] + E_g[log(1 − D*)] with D* = p_data/(p_data + p_g).

    Goodfellow et al. 2014, Theorem 1: this equals 2·JS(p_data‖p_g) − 2·log 2, so
    it is minimal (−log 4) exactly when p_g = p_data. Points where both are 0
    contribute nothing.
    """
    (pd, pg), from_torch = _as_distributions(p_data, p_g, names=("p_data", "p_g"))
    total = pd + pg
    # p log(p/(p+q)) with the xlogy conventions: no 0/0 where both vanish.
    value = (torch.xlogy(pd, pd) - torch.xlogy(pd, total) + torch.xlogy(pg, pg) - torch.xlogy(pg, total)).sum(dim=-1)
    return _out(value, from_torch)


# ----------------------------------------------------------------------------- f-divergences


@dataclass(frozen=True)
class FGenerator:
    """A convex f with f(1) = 0 defining D_f(p‖q) = Σ q f(p/q).

    `f` maps a tensor of ratios t >= 0 to f(t) (f(0) as its limit, possibly +inf).
    `slope_at_infinity` is lim_{t→∞} f(t)/t: it gives the term q·f(p/q) its limit
    p·slope where q = 0 and p > 0.
    """

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    slope_at_infinity: float


def _f_kl(t: torch.Tensor) -> torch.Tensor:
    return torch.xlogy(t, t)


def _f_reverse_kl(t: torch.Tensor) -> torch.Tensor:
    return -torch.log(t)


def _f_js(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.xlogy(t, 2 * t / (1 + t)) + torch.log(2 / (1 + t)))


def _f_tv(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (t - 1).abs()


def _f_pearson(t: torch.Tensor) -> torch.Tensor:
    return (t - 1) ** 2


F_GENERATORS: dict[str, FGenerator] = {
    "kl": FGenerator("kl", _f_kl, math.inf),  # KL(p‖q)
    "reverse_kl": FGenerator("reverse_kl", _f_reverse_kl, 0.0),  # KL(q‖p)
    "js": FGenerator("js", _f_js, 0.5 * math.log(2.0)),  # JS(p‖q)
    "tv": FGenerator("tv", _f_tv, 0.5),  # ½ Σ |p − q|
    "pearson": FGenerator("pearson", _f_pearson, math.inf),  # χ²(p‖q) = Σ (p − q)²/q
}


def f_divergence(p: ArrayLike, q: ArrayLike, f: str | FGenerator | Callable[[torch.Tensor], torch.Tensor]) -> ArrayLike:
    """f-divergence D_f(p‖q) = Σ q f(p/q).

    `f` is a name from `F_GENERATORS` ("kl", "reverse_kl", "js", "tv", "pearson"),
    an `FGenerator`, or a bare callable on torch tensors. Terms with q = 0 use the
    limit p·lim f(t)/t, which a bare callable cannot provide: then q must be > 0
    wherever p > 0.
    """
    if isinstance(f, str):
        if f not in F_GENERATORS:
            raise ValueError(f"unknown f-divergence {f!r}; choose one of {sorted(F_GENERATORS)}")
        f = F_GENERATORS[f]
    (p, q), from_torch = _as_distributions(p, q, names=("p", "q"))
    fn = f.f if isinstance(f, FGenerator) else f
    support = q > 0
    # Off the support use the ratio 1 (f(1) = 0): keeps inf/NaN out of values and gradients.
    safe_q = torch.where(support, q, torch.ones_like(q))
    ratio = torch.where(support, p / safe_q, torch.ones_like(p))
    terms = torch.where(support, q * fn(ratio), torch.zeros_like(p))
    missing = (~support) & (p > 0)
    if missing.any():
        if not isinstance(f, FGenerator):
            raise ValueError("q = 0 where p > 0: pass an FGenerator with slope_at_infinity for this f")
        slope = torch.tensor(f.slope_at_infinity, dtype=p.dtype, device=p.device)
        # p·inf = inf for p > 0; where p == 0 the term is already 0.
        terms = torch.where(missing, p * slope, terms)
    return _out(terms.sum(dim=-1), from_torch)
