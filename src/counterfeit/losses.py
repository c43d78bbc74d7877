"""GAN objectives: discriminator and generator losses computed from raw discriminator outputs.

All losses take the discriminator's *logits* (unbounded outputs, no sigmoid) and
average over every element, so a PatchGAN map of verdicts works like one verdict
per image. Terms with a sigmoid are written with softplus, never as the log of
a sigmoid that can underflow to 0:

    log σ(x)      = −softplus(−x)
    log(1 − σ(x)) = −softplus(x)

Objectives (`OBJECTIVES`):

- "minimax": Goodfellow et al. 2014. D minimises −[log D(x) + log(1 − D(G(z)))];
  G minimises log(1 − D(G(z))), which *saturates*: its gradient σ(logit) → 0 when
  D confidently rejects the fakes, exactly when G needs to learn.
- "nonsaturating": same D; G minimises −log D(G(z)), gradient → −1 in that regime.
- "lsgan": least squares to targets 1 (real) and 0 (fake), as in Wolterink et al.
  2017: D: (1 − D(x))² + D(G(z))², G: (1 − D(G(z)))². No ½ factor (Mao et al. 2017
  put ½ on both losses; `LeastSquares(d_scale=0.5)` halves only D's).
- "wgan-gp": Gulrajani et al. 2017. Critic: E[D(G(z))] − E[D(x)] plus
  `gradient_penalty`; G: −E[D(G(z))]. Recommended: 5 critic steps per G step.
- "hinge": Miyato et al. 2018. D: E[relu(1 − D(x))] + E[relu(1 + D(G(z)))]; G: −E[D(G(z))].
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from counterfeit.errors import UserError

OBJECTIVES = ("minimax", "nonsaturating", "lsgan", "wgan-gp", "hinge")

__all__ = [
    "OBJECTIVES",
    "GANObjective",
    "Hinge",
    "LeastSquares",
    "Minimax",
    "NonSaturating",
    "WassersteinGP",
    "get_objective",
    "gradient_penalty",
]


class GANObjective:
    """A pair of losses to *minimise*: `d_loss` for the discriminator, `g_loss` for the generator.

    Attributes a training loop should honour:
    `n_critic`: discriminator steps per generator step (recommended);
    `gp_weight`: weight of `gradient_penalty` to add to `d_loss` (0 = none).
    """

    name: str = ""
    n_critic: int = 1
    gp_weight: float = 0.0

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Discriminator loss from its outputs on real and on generated samples."""
        raise NotImplementedError

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Generator loss from the discriminator's outputs on generated samples."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Minimax(GANObjective):
    """The original game; the generator loss E[log(1 − D(G(z)))] saturates."""

    name = "minimax"

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        # −log σ(r) − log(1 − σ(f)) = softplus(−r) + softplus(f)
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        # log(1 − σ(f)) = −softplus(f); d/df = −σ(f) → 0 as f → −∞
        return -F.softplus(fake_logits).mean()


class NonSaturating(Minimax):
    """Same discriminator as minimax; the generator maximises log D(G(z)) instead."""

    name = "nonsaturating"

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        # −log σ(f) = softplus(−f); d/df = −σ(−f) → −1 as f → −∞
        return F.softplus(-fake_logits).mean()


class LeastSquares(GANObjective):
    """Least-squares GAN: D regresses real → `real_target`, fake → `fake_target`; G pushes fakes to `real_target`.

    `d_scale` multiplies the discriminator loss: 1.0 is Wolterink et al.'s
    (1 − D(x))² + D(G(z))² (the default, used by the CycleGAN recipe); 0.5 is Mao et al.'s D loss (they
    also halve G's, which matters only beside other loss terms, e.g. the CycleGAN's cycle loss).
    """

    name = "lsgan"

    def __init__(self, real_target: float = 1.0, fake_target: float = 0.0, d_scale: float = 1.0) -> None:
        self.real_target = real_target
        self.fake_target = fake_target
        self.d_scale = d_scale

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real_term = ((real_logits - self.real_target) ** 2).mean()
        fake_term = ((fake_logits - self.fake_target) ** 2).mean()
        return self.d_scale * (real_term + fake_term)

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return ((fake_logits - self.real_target) ** 2).mean()

    def __repr__(self) -> str:
        return f"LeastSquares(real_target={self.real_target}, fake_target={self.fake_target}, d_scale={self.d_scale})"


class WassersteinGP(GANObjective):
    """Wasserstein critic loss; add `gp_weight * gradient_penalty(...)` (see `gradient_penalty`)."""

    name = "wgan-gp"
    n_critic = 5

    def __init__(self, gp_weight: float = 10.0) -> None:
        self.gp_weight = gp_weight

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()

    def __repr__(self) -> str:
        return f"WassersteinGP(gp_weight={self.gp_weight})"


class Hinge(GANObjective):
    """Hinge loss: D wants real logits >= 1 and fake logits <= −1."""

    name = "hinge"

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


_BY_NAME: dict[str, Callable[[], GANObjective]] = {
    "minimax": Minimax,
    "nonsaturating": NonSaturating,
    "lsgan": LeastSquares,
    "wgan-gp": WassersteinGP,
    "hinge": Hinge,
}


def get_objective(name: str) -> GANObjective:
    """The objective called `name` (one of `OBJECTIVES`) with its default settings."""
    if name not in _BY_NAME:
        raise UserError(f"unknown GAN objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    return _BY_NAME[name]()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = 10.0,
) -> torch.Tensor:
    """WGAN-GP penalty weight · E[(‖∇_x̂ D(x̂)‖₂ − 1)²] at x̂ = α·real + (1 − α)·fake.

    One α ~ U[0, 1] and one gradient norm per row of `real`, so each row must be one whole critic input
    (for a critic of packed samples, pass the packs). α comes from the global torch RNG (seed it for
    repeatability). The graph is kept (create_graph) so the penalty trains the
    critic; `fake` is detached, so no gradient reaches the generator.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    alpha_shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    alpha = torch.rand(alpha_shape, dtype=real.dtype, device=real.device)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grads,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grads.flatten(start_dim=1).norm(2, dim=1)
    return weight * ((norms - 1) ** 2).mean()
