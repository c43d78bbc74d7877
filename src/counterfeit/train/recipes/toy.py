"""The 2D toy lab: an MLP GAN learning a mixture of Gaussians (`counterfeit toy`).

Generator z ~ N(0, I) -> x in 2D and discriminator x -> logit are MLPs
(`counterfeit.nets.mlp`). Both work in standardised coordinates: G's output is
mapped to data space as mean + std·G(z) and D sees (x − mean)/std, so one set
of learning rates suits the unit ring and the ±4 grid alike.

One loop step = `n_critic` discriminator updates and one generator update. With
one D update the fake batch is generated once and reused (detached for D). Both
learning rates decay linearly to `lr_final`× over `decay_steps` steps, which
sharpens the samples onto the modes late in training.

`pac` > 1 packs that many samples into one discriminator input (PacGAN, Lin et
al. 2018), which penalises mode collapse; 1 is the plain GAN.

Metrics (PacGAN protocol, `counterfeit.metrics`): modes covered, fraction of
high-quality samples (within 3σ of the nearest mode) and a histogram JS estimate,
on a fixed set of `eval_samples` latents. Pictures: samples over real data with
the discriminator's output as contours, one PNG per `write_samples` call.
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from counterfeit.atomic import atomic_path, atomic_write_text
from counterfeit.data.toy2d import TOY_DISTRIBUTIONS, ToyDistribution, make_toy
from counterfeit.errors import UserError
from counterfeit.losses import OBJECTIVES, get_objective, gradient_penalty
from counterfeit.metrics import histogram_js, mode_coverage
from counterfeit.nets.mlp import ACTIVATIONS, MLP
from counterfeit.train.recipe import Recipe, register_recipe

# Quality targets of the benchmark (issue 8): modes and high-quality fraction per distribution.
TARGETS = {"ring8": (8, 0.90), "grid25": (23, 0.80)}
FRAME_PREFIX = "step_"


@dataclass
class ToyConfig:
    """Options of `counterfeit toy`; None means "the objective's recommendation"."""

    dist: str = "ring8"
    loss: str = "hinge"
    z_dim: int = 2
    g_hidden: int = 64  # width of G's hidden layers
    d_hidden: int = 128  # width of D's hidden layers (D's capacity matters most for sample quality)
    g_depth: int = 4  # linear layers in G
    d_depth: int = 4  # linear layers in D
    activation: str = "relu"
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    lr_final: float = 0.01  # learning rates decay linearly to this fraction ...
    decay_steps: int = 6000  # ... over this many steps (the CLI sets it to --steps)
    batch_size: int = 512
    n_critic: int | None = None  # None: the objective's recommendation (5 for wgan-gp, else 1)
    gp_weight: float = 10.0  # wgan-gp only
    pac: int = 1
    eval_samples: int = 2500
    eval_seed: int = 1234  # fixed latents and real reference samples of the metrics and pictures
    js_bins: int = 50
    contour_points: int = 100  # discriminator grid resolution of the pictures

    def __post_init__(self) -> None:
        if self.n_critic is None:
            self.n_critic = get_objective(self.loss).n_critic if self.loss in OBJECTIVES else 1
        self.betas = tuple(float(b) for b in self.betas)
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(message)

        need(self.dist in TOY_DISTRIBUTIONS, f"--dist must be one of {', '.join(TOY_DISTRIBUTIONS)}, got {self.dist!r}")
        need(self.loss in OBJECTIVES, f"--loss must be one of {', '.join(OBJECTIVES)}, got {self.loss!r}")
        need(self.activation in ACTIVATIONS, f"--activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("z_dim", "g_hidden", "d_hidden", "g_depth", "d_depth", "batch_size", "n_critic", "pac", "js_bins"):
            need(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        need(self.batch_size % self.pac == 0, f"--batch-size ({self.batch_size}) must be a multiple of --pac ({self.pac})")
        need(self.lr_g > 0 and self.lr_d > 0, f"learning rates must be > 0, got {self.lr_g} and {self.lr_d}")
        need(0 < self.lr_final <= 1, f"lr_final must be in (0, 1], got {self.lr_final}")
        need(self.decay_steps >= 1, f"decay_steps must be >= 1, got {self.decay_steps}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two numbers in [0, 1), got {self.betas}")
        need(self.eval_samples >= 2500, f"--eval-samples must be >= 2500 (the mode metrics need them), got {self.eval_samples}")
        need(self.gp_weight >= 0, f"--gp-weight must be >= 0, got {self.gp_weight}")
        need(self.contour_points >= 2, f"contour_points must be >= 2, got {self.contour_points}")


class ToyGenerator(torch.nn.Module):
    """z -> mean + std·MLP(z): the MLP works in standardised coordinates."""

    def __init__(self, dist: ToyDistribution, config: ToyConfig) -> None:
        super().__init__()
        self.mlp = MLP(config.z_dim, 2, config.g_hidden, config.g_depth, config.activation)
        self.register_buffer("mean", torch.tensor(dist.mean, dtype=torch.float32), persistent=False)
        self.std = dist.std

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * self.mlp(z)


class ToyDiscriminator(torch.nn.Module):
    """x (N, 2) -> logits (N/pac,): MLP on standardised points, `pac` consecutive points per input."""

    def __init__(self, dist: ToyDistribution, config: ToyConfig) -> None:
        super().__init__()
        self.pac = config.pac
        self.mlp = MLP(2 * config.pac, 1, config.d_hidden, config.d_depth, config.activation)
        self.register_buffer("mean", torch.tensor(dist.mean, dtype=torch.float32), persistent=False)
        self.std = dist.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.mlp(x.reshape(-1, 2 * self.pac)).squeeze(-1)

    def score_points(self, x: torch.Tensor) -> torch.Tensor:
        """The verdict on each single point (repeated `pac` times to fill a packed input)."""
        return self.forward(x.repeat_interleave(self.pac, dim=0))


def linear_factor(final: float, decay_steps: int, step: int) -> float:
    """LR factor: 1 at step 0, linearly down to `final` at `decay_steps`, then constant."""
    return 1.0 + (final - 1.0) * min(step, decay_steps) / decay_steps


def packed_gradient_penalty(D: ToyDiscriminator, real: torch.Tensor, fake: torch.Tensor, weight: float) -> torch.Tensor:
    """WGAN-GP's penalty per critic input: one α and one gradient norm per pack of `D.pac` points, not per point
    (per point, a 1-Lipschitz critic of packs would be penalised: its packs' norms would be driven to √pac)."""
    width = 2 * D.pac
    return gradient_penalty(lambda packs: D(packs.reshape(-1, 2)), real.reshape(-1, width), fake.reshape(-1, width),
                            weight=weight)


@register_recipe
class ToyRecipe(Recipe):
    name = "toy"
    Config = ToyConfig
    progress_keys = ("loss_d", "loss_g")
    log_labels = {
        "loss_d": "D loss",
        "loss_g": "G loss",
        "modes_covered": "modes with ≥ 1 high-quality sample",
        "modes_well_covered": "modes with ≥ 20 % of an equal share",
        "high_quality": "fraction of high-quality samples",
        "js": "Jensen–Shannon, real vs generated (binned)",
    }

    def __init__(self, config: ToyConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.dist = make_toy(config.dist)
        self.objective = get_objective(config.loss)
        G = ToyGenerator(self.dist, config).to(device)
        D = ToyDiscriminator(self.dist, config).to(device)
        self.nets = {"G": G, "D": D}
        self.optimizers = {
            "G": torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=config.betas),
            "D": torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=config.betas),
        }
        # Closed form, from the config (LambdaLR's state does not record a partial's bounds), so that a run whose
        # total changes (`retotal_config`) follows the new decay from the step it resumes at.
        factor = functools.partial(linear_factor, config.lr_final, config.decay_steps)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(opt, factor) for k, opt in self.optimizers.items()}
        # Fixed evaluation set: the same latents and real reference points all along training.
        rng = np.random.default_rng(config.eval_seed)
        self.eval_z = torch.from_numpy(rng.standard_normal((config.eval_samples, config.z_dim)).astype(np.float32))
        self.eval_real = self.dist.sample(rng, config.eval_samples).numpy()

    @classmethod
    def retotal_config(cls, config: dict[str, Any], old_steps: int, new_steps: int) -> dict[str, Any]:
        """The decay planned over the run's steps (the CLI's) spans the new total."""
        return {**config, "decay_steps": max(new_steps, 1)} if config["decay_steps"] == max(old_steps, 1) else config

    # --- training -------------------------------------------------------------
    def sample_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        n_z = c.n_critic if c.n_critic == 1 else c.n_critic + 1  # several D steps: fresh noise for G
        return {
            "real": self.dist.sample(rng, c.n_critic * c.batch_size).numpy().reshape(c.n_critic, c.batch_size, 2),
            "z": rng.standard_normal((n_z, c.batch_size, c.z_dim)).astype(np.float32),
        }

    def train_step(self, batch: dict[str, np.ndarray], step: int) -> dict[str, torch.Tensor]:
        batch = self.to_device(batch)
        G, D = self.nets["G"], self.nets["D"]
        opt_g, opt_d = self.optimizers["G"], self.optimizers["D"]
        fake = None
        for i in range(self.config.n_critic):
            real = batch["real"][i]
            fake = G(batch["z"][i])
            # One D pass over real and fake together (packs never straddle them: B is a multiple of pac).
            real_logits, fake_logits = D(torch.cat([real, fake.detach()])).chunk(2)
            loss_d = self.objective.d_loss(real_logits, fake_logits)
            if self.objective.gp_weight:
                loss_d = loss_d + packed_gradient_penalty(D, real, fake, self.config.gp_weight)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        if self.config.n_critic > 1:
            fake = G(batch["z"][-1])
        loss_g = self.objective.g_loss(D(fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    # --- evaluation -----------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: torch.Tensor | None = None) -> np.ndarray:
        """Generator samples for `z` (default: the fixed evaluation latents) as an (N, 2) array."""
        G = self.nets["G"]
        was_training = G.training
        G.eval()
        out = G((self.eval_z if z is None else z).to(self.device)).cpu().numpy()
        G.train(was_training)
        return out

    def evaluate_samples(self, samples: np.ndarray) -> dict[str, Any]:
        """Mode coverage, quality, per-mode counts and the histogram JS estimate of `samples`."""
        cov = mode_coverage(samples, self.dist.modes, self.dist.sigma)
        cov["js"] = histogram_js(self.eval_real, samples, self.dist.bounds, bins=self.config.js_bins)
        return cov

    def metrics(self, step: int) -> dict[str, float]:
        m = self.evaluate_samples(self.generate())
        return {"modes_covered": float(m["modes_covered"]), "modes_well_covered": float(m["modes_well_covered"]),
                "high_quality": m["high_quality"], "js": m["js"]}

    @torch.no_grad()
    def discriminator_grid(self) -> tuple[np.ndarray, str]:
        """The discriminator's output over the plot area: ((n, n) grid, label). σ(logit) for the log-loss objectives."""
        n = self.config.contour_points
        xmin, xmax, ymin, ymax = self.dist.bounds
        gx, gy = np.meshgrid(np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n))
        pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)).to(self.device)
        D = self.nets["D"]
        was_training = D.training
        D.eval()
        out = D.score_points(pts)
        D.train(was_training)
        if self.config.loss in ("minimax", "nonsaturating"):
            return torch.sigmoid(out).cpu().numpy().reshape(n, n), "D(x) = P(real)"
        return out.cpu().numpy().reshape(n, n), "D(x)" if self.config.loss == "lsgan" else "critic(x)"

    def write_samples(self, step: int, out_dir: Path) -> None:
        from counterfeit.plots import render_toy_frame, save_png

        fake = self.generate()
        m = self.evaluate_samples(fake)
        d_grid, d_label = self.discriminator_grid()
        title = (f"{self.config.dist}, {self.config.loss}: step {step}, modes {m['modes_covered']}/{m['n_modes']} "
                 f"({m['modes_well_covered']} with ≥ 20 % of a share), high quality {100 * m['high_quality']:.0f}%")
        frame = render_toy_frame(self.eval_real, fake, self.dist.bounds, d_grid, d_label, title)
        save_png(frame, Path(out_dir) / f"{FRAME_PREFIX}{step:08d}.png")


# --- end-of-run outputs ---------------------------------------------------------


def seconds_to_target(metrics_csv: Path, dist: str) -> dict[str, float | None]:
    """From a run's metrics.csv: seconds (and step) at which all modes were first covered, and the issue's target met."""
    out: dict[str, float | None] = {"seconds_to_all_modes": None, "step_to_all_modes": None,
                                    "seconds_to_target": None, "step_to_target": None}
    if not metrics_csv.is_file():
        return out
    recipe_modes = len(make_toy(dist).modes)
    want_modes, want_hq = TARGETS.get(dist, (recipe_modes, 0.0))
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("modes_covered") in (None, ""):
                continue
            modes, hq = float(row["modes_covered"]), float(row["high_quality"])
            sec, step = float(row["seconds"]), float(row["step"])
            if out["seconds_to_all_modes"] is None and modes >= recipe_modes:
                out["seconds_to_all_modes"], out["step_to_all_modes"] = sec, step
            if out["seconds_to_target"] is None and modes >= want_modes and hq >= want_hq:
                out["seconds_to_target"], out["step_to_target"] = sec, step
    return out


def finish_toy_run(recipe: ToyRecipe, run_dir: str | Path, steps_done: int, seconds: float, fps: float = 4.0) -> dict[str, Any]:
    """Write samples.npy, summary.json and training.gif into `run_dir`; return the summary."""
    from counterfeit.plots import write_gif

    run_dir = Path(run_dir)
    samples = recipe.generate()
    with atomic_path(run_dir / "samples.npy") as tmp:
        np.save(tmp, samples.astype(np.float32))
    m = recipe.evaluate_samples(samples)
    # The JS estimator's floor: two independent real sets of the same size.
    real_b = recipe.dist.sample(np.random.default_rng(recipe.config.eval_seed + 1), len(samples)).numpy()
    js_floor = histogram_js(recipe.eval_real, real_b, recipe.dist.bounds, bins=recipe.config.js_bins)
    want = TARGETS.get(recipe.config.dist)
    summary = {
        "dist": recipe.config.dist,
        "loss": recipe.config.loss,
        "steps": steps_done,
        "seconds": round(seconds, 2),
        "n_samples": int(len(samples)),
        "modes_covered": m["modes_covered"],
        "modes_well_covered": m["modes_well_covered"],
        "n_modes": m["n_modes"],
        "high_quality": m["high_quality"],
        "per_mode_counts": m["per_mode_counts"],
        "js": m["js"],
        "js_real_vs_real": js_floor,
        "target": {"modes": want[0], "high_quality": want[1]} if want else None,
        "target_met": bool(want and m["modes_covered"] >= want[0] and m["high_quality"] >= want[1]) if want else None,
        **seconds_to_target(run_dir / "metrics.csv", recipe.config.dist),
        "config": asdict(recipe.config),
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    frames = sorted((run_dir / "samples").glob(f"{FRAME_PREFIX}*.png"))
    if frames:
        write_gif(frames, run_dir / "training.gif", fps=fps)
    return summary
