"""counterfeit.divergences: agreement with scipy, limits, f-divergences and the GAN optimum identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from counterfeit import divergences as dv


def _random_dists(rng: np.random.Generator, n: int, k: int, zeros: bool = False) -> np.ndarray:
    x = rng.gamma(0.5, size=(n, k))
    if zeros:
        x[rng.random((n, k)) < 0.3] = 0.0
        x[:, 0] += 1e-3  # keep every row non-empty
    return x / x.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("zeros", [False, True])
def test_agrees_with_scipy(zeros: bool) -> None:
    rng = np.random.default_rng(0)
    ps = _random_dists(rng, 50, 7, zeros)
    qs = _random_dists(rng, 50, 7, False)  # q > 0 so scipy's KL is finite
    for p, q in zip(ps, qs):
        assert abs(dv.entropy(p) - scipy_entropy(p)) < 1e-9
        assert abs(dv.kl_divergence(p, q) - scipy_entropy(p, q)) < 1e-9
        assert abs(dv.js_divergence(p, q) - jensenshannon(p, q) ** 2) < 1e-9
        assert abs(dv.cross_entropy(p, q) - (scipy_entropy(p) + scipy_entropy(p, q))) < 1e-9
    # batched along leading axes gives the same numbers
    batched = dv.js_divergence(ps, qs)
    assert batched.shape == (50,)
    assert np.allclose(batched, [jensenshannon(p, q) ** 2 for p, q in zip(ps, qs)], atol=1e-9, rtol=0)


def test_torch_in_torch_out_and_differentiable() -> None:
    rng = np.random.default_rng(1)
    p, q = _random_dists(rng, 2, 5)
    pt = torch.tensor(p, requires_grad=True)
    out = dv.kl_divergence(pt, torch.tensor(q))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert abs(out.item() - scipy_entropy(p, q)) < 1e-12
    out.backward()
    # d/dp_i Σ p log(p/q) = log(p_i/q_i) + 1
    assert torch.allclose(pt.grad, torch.tensor(np.log(p / q) + 1))
    # numpy and torch mixed -> torch
    assert isinstance(dv.js_divergence(p, torch.tensor(q)), torch.Tensor)
    assert isinstance(dv.entropy(p), np.floating)
    assert str(dv.entropy([1.0, 0.0])) == "0.0"  # a point mass prints 0.0, not -0.0


def test_limits_and_special_values() -> None:
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([1.0, 0.0, 0.0])
    assert dv.kl_divergence(p, q) == math.inf  # q misses mass of p: +inf, not NaN
    assert dv.cross_entropy(p, q) == math.inf
    assert dv.kl_divergence(q, p) == pytest.approx(math.log(2))
    assert dv.entropy(q) == 0.0
    assert dv.entropy(np.full(4, 0.25)) == pytest.approx(math.log(4))
    # disjoint supports: JS is at its maximum log 2
    assert dv.js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(math.log(2))
    assert dv.js_divergence(p, p) == pytest.approx(0.0, abs=1e-15)
    t = dv.kl_divergence(torch.tensor(p), torch.tensor(q))
    assert torch.isinf(t) and t > 0


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([0.5, 0.6, -0.1]), ">= 0"),
        (np.array([0.5, 0.6]), "sum to 1"),
        (np.array([np.nan, 1.0]), "NaN"),
        (np.float64(1.0), "shape"),
        (np.zeros((2, 0)), "shape"),
    ],
)
def test_clear_errors(bad: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dv.entropy(bad)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        dv.kl_divergence(np.full(3, 1 / 3), np.full(4, 0.25))
    with pytest.raises(ValueError, match="unknown f-divergence"):
        dv.f_divergence(np.full(2, 0.5), np.full(2, 0.5), "hellinger-ish")


def test_named_f_divergences_match_closed_forms() -> None:
    rng = np.random.default_rng(2)
    for p, q in zip(_random_dists(rng, 20, 6, zeros=True), _random_dists(rng, 20, 6)):
        assert dv.f_divergence(p, q, "kl") == pytest.approx(dv.kl_divergence(p, q), abs=1e-12)
        assert dv.f_divergence(p, q, "js") == pytest.approx(dv.js_divergence(p, q), abs=1e-12)
        assert dv.f_divergence(p, q, "tv") == pytest.approx(0.5 * np.abs(p - q).sum(), abs=1e-12)
        assert dv.f_divergence(p, q, "pearson") == pytest.approx(((p - q) ** 2 / q).sum(), abs=1e-10)
        # reverse KL(p‖q) = KL(q‖p), +inf where p has zeros (q > 0 everywhere)
        assert dv.f_divergence(p, q, "reverse_kl") == pytest.approx(dv.kl_divergence(q, p), abs=1e-12)
        assert (dv.f_divergence(p, q, "reverse_kl") == math.inf) == bool((p == 0).any())
        assert dv.f_divergence(q, p, "reverse_kl") == pytest.approx(dv.kl_divergence(p, q), abs=1e-12)


def test_f_divergence_where_q_is_zero_uses_the_limit() -> None:
    p = np.array([0.5, 0.5])
    q = np.array([1.0, 0.0])
    assert dv.f_divergence(p, q, "kl") == math.inf
    assert dv.f_divergence(p, q, "tv") == pytest.approx(0.5)
    assert dv.f_divergence(p, q, "js") == pytest.approx(dv.js_divergence(p, q), abs=1e-12)
    assert dv.f_divergence(p, q, "reverse_kl") == pytest.approx(dv.kl_divergence(q, p))
    # a bare callable works on the common support and refuses q = 0 where p > 0
    assert dv.f_divergence(q, p, lambda t: torch.xlogy(t, t)) == pytest.approx(dv.kl_divergence(q, p))
    with pytest.raises(ValueError, match="q = 0"):
        dv.f_divergence(p, q, lambda t: (t - 1) ** 2)


def test_gan_value_at_optimum_is_2js_minus_2log2() -> None:
    rng = np.random.default_rng(3)
    ps = _random_dists(rng, 30, 8, zeros=True)
    qs = _random_dists(rng, 30, 8, zeros=True)
    value = dv.gan_value_at_optimum(ps, qs)
    assert np.allclose(value, 2 * dv.js_divergence(ps, qs) - 2 * math.log(2), atol=1e-12, rtol=0)
    # direct evaluation with D* = p/(p+q) on a strictly positive pair
    p, q = _random_dists(rng, 2, 8)
    d_star = p / (p + q)
    direct = (p * np.log(d_star)).sum() + (q * np.log(1 - d_star)).sum()
    assert dv.gan_value_at_optimum(p, q) == pytest.approx(direct, abs=1e-12)
    # global optimum p_g = p_data: −log 4
    assert dv.gan_value_at_optimum(p, p) == pytest.approx(-math.log(4), abs=1e-12)
