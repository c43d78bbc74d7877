"""counterfeit.losses: hand-computed values, numerical stability, saturation, gradient penalty."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from counterfeit.errors import UserError
from counterfeit.losses import OBJECTIVES, LeastSquares, get_objective, gradient_penalty


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def test_minimax_and_nonsaturating_values() -> None:
    d_expected = sum(-math.log(_sig(r)) for r in REAL.tolist()) / 2 + sum(
        -math.log(1 - _sig(f)) for f in FAKE.tolist()
    ) / 2
    for name in ("minimax", "nonsaturating"):
        assert get_objective(name).d_loss(REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    g_minimax = sum(math.log(1 - _sig(f)) for f in FAKE.tolist()) / 2
    g_nonsat = sum(-math.log(_sig(f)) for f in FAKE.tolist()) / 2
    assert get_objective("minimax").g_loss(FAKE).item() == pytest.approx(g_minimax, rel=1e-6)
    assert get_objective("nonsaturating").g_loss(FAKE).item() == pytest.approx(g_nonsat, rel=1e-6)


def test_lsgan_hinge_wgan_values() -> None:
    ls = get_objective("lsgan")
    # Wolterink et al.: (1 − D(x))² + D(G(z))², no ½
    d = ((1 - 2.0) ** 2 + (1 + 1.0) ** 2) / 2 + (0.5**2 + 3.0**2) / 2
    assert ls.d_loss(REAL, FAKE).item() == pytest.approx(d)
    assert ls.g_loss(FAKE).item() == pytest.approx(((0.5 - 1) ** 2 + (-3 - 1) ** 2) / 2)
    assert LeastSquares(d_scale=0.5).d_loss(REAL, FAKE).item() == pytest.approx(d / 2)

    hinge = get_objective("hinge")
    assert hinge.d_loss(REAL, FAKE).item() == pytest.approx((0 + 2) / 2 + (1.5 + 0) / 2)
    assert hinge.g_loss(FAKE).item() == pytest.approx(1.25)

    w = get_objective("wgan-gp")
    assert w.d_loss(REAL, FAKE).item() == pytest.approx(-1.25 - 0.5)
    assert w.g_loss(FAKE).item() == pytest.approx(1.25)
    assert w.n_critic == 5 and w.gp_weight == 10.0
    assert get_objective("hinge").n_critic == 1 and get_objective("hinge").gp_weight == 0.0


def test_patch_maps_average_over_all_elements() -> None:
    real = torch.randn(3, 1, 4, 4)
    fake = torch.randn(3, 1, 4, 4)
    for name in OBJECTIVES:
        obj = get_objective(name)
        assert obj.d_loss(real, fake).shape == ()
        assert obj.d_loss(real, fake).item() == pytest.approx(obj.d_loss(real.flatten(), fake.flatten()).item(), rel=1e-6)


def test_stable_for_extreme_logits() -> None:
    big = torch.tensor([-200.0, 200.0], requires_grad=True)
    for name in OBJECTIVES:
        obj = get_objective(name)
        loss = obj.d_loss(big, big) + obj.g_loss(big)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(big.grad).all(), name
        big.grad = None
    # a confident, correct discriminator has (near) zero loss, not NaN
    assert get_objective("minimax").d_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == pytest.approx(0.0, abs=1e-30)


def test_saturating_generator_gradient_vanishes_when_d_rejects_fakes() -> None:
    """The seed's "generator loss gradient" figure: log(1 − D) is flat where D(G(z)) ≈ 0."""
    logits = torch.tensor([-8.0, -4.0, 0.0, 4.0], requires_grad=True)
    grads = {}
    for name in ("minimax", "nonsaturating"):
        (g,) = torch.autograd.grad(get_objective(name).g_loss(logits) * len(logits), logits)
        grads[name] = g
    # analytic: d/dl log(1 − σ(l)) = −σ(l);  d/dl −log σ(l) = −σ(−l) = σ(l) − 1
    sig = torch.sigmoid(logits.detach())
    assert torch.allclose(grads["minimax"], -sig)
    assert torch.allclose(grads["nonsaturating"], sig - 1)
    # D confidently rejects (logit −8, D ≈ 3e-4): saturating gradient ~0, non-saturating ~−1
    assert grads["minimax"][0].abs() < 1e-3
    assert grads["nonsaturating"][0].abs() > 0.99
    # both push the same direction (raise the fake logit)
    assert (grads["minimax"] <= 0).all() and (grads["nonsaturating"] <= 0).all()


def test_gradient_penalty() -> None:
    torch.manual_seed(0)
    # a linear critic w·x has gradient w everywhere: penalty = weight·(‖w‖ − 1)²
    critic = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 0.0, 4.0]]))
    real, fake = torch.randn(8, 3), torch.randn(8, 3, requires_grad=True)
    gp = gradient_penalty(critic, real, fake, weight=10.0)
    assert gp.item() == pytest.approx(10.0 * (5 - 1) ** 2)
    gp.backward()
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0  # trains the critic
    assert fake.grad is None  # not the generator

    # a nonlinear critic on image-shaped input: per-sample norms, finite, alpha from the global RNG
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 2 * 2, 1))
    x, y = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    torch.manual_seed(1)
    a = gradient_penalty(conv, x, y)
    torch.manual_seed(1)
    b = gradient_penalty(conv, x, y)
    assert torch.isfinite(a) and a.item() == b.item()
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(conv, x, y[:2])


def test_unknown_objective() -> None:
    with pytest.raises(UserError, match="choose one of"):
        get_objective("wgan")


def test_generator_gradient_figure(tmp_path) -> None:
    import imageio.v3 as iio

    from counterfeit.plots import plot_generator_gradients

    out = plot_generator_gradients(tmp_path / "g.png")
    image = iio.imread(out)
    assert image.ndim == 3 and image.shape[0] > 200 and image.std() > 10
