"""DCGAN (Radford et al. 2016): an unconditional image GAN on a folder of images or a built-in set.

Architecture (`counterfeit.nets.dcgan`): strided convolutions in D and fractional-strided
(transposed) convolutions in G, no pooling, batch norm in both, ReLU in G with a tanh output,
LeakyReLU(0.2) in D. Training follows the paper: Adam (lr 2e-4, β₁ = 0.5), batch 64, weights
~ N(0, 0.02), z ~ N(0, I) of 100 dimensions, and separate real and fake batches through D.

Objectives come from `counterfeit.losses`: "nonsaturating" (the default), "minimax", "lsgan",
"hinge", and "wgan-gp" (Gulrajani et al. 2017), which changes three defaults to that paper's:
5 critic steps per generator step, Adam (lr 1e-4, β = (0, 0.9)), and layer norm instead of batch
norm in the critic (the per-sample gradient penalty is invalid when batch norm mixes samples);
`critic_norm="batch"` keeps the DCGAN critic anyway.

One loop step = `n_critic` discriminator updates (each on its own real batch and noise) and one
generator update. With one D step per G step the generated batch is computed once and reused
(detached for D); with several, the generator step draws fresh noise (Gulrajani's Algorithm 1).
Real images are drawn with replacement from the training images, a seeded share of which is held
out: the metrics compare generated images with those held-out ones (sliced Wasserstein distance
on Laplacian-pyramid patches), and check for memorisation (distance to the nearest training image,
relative to the held-out images' own distance).

Pictures: a grid of G(z) for a fixed set of z (the same z all along training), and an
interpolation strip (the paper's "walking in the latent space"): each row decodes points on a
path between two fixed latents, along the great circle (slerp, default: keeps the points at the
norm Gaussian latents have) or the straight line (linear, as in the paper's figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from counterfeit.errors import UserError
from counterfeit.losses import OBJECTIVES, get_objective, gradient_penalty
from counterfeit.nets.dcgan import IMAGE_SIZES, DCGANDiscriminator, DCGANGenerator
from counterfeit.train.recipe import Recipe, register_recipe

DATASETS = ("folder", "phantom-mr", "phantom-ct", "digits")
INTERPOLATIONS = ("slerp", "linear")


DEFAULT_HOLDOUT = 256  # real images held out for SWD and the memorisation check, at most a quarter of the data


@dataclass
class DCGANConfig:
    """Options of `counterfeit train dcgan`; None means "the default for the chosen loss / data"."""

    dataset: str | None = None  # folder | phantom-mr | phantom-ct | digits; None: folder if `images` else phantom-mr
    images: str | None = None  # folder of PNG/TIFF/JPEG images (8- or 16-bit), searched recursively
    scale: str = "dtype"  # folder images: "dtype" (divide by 255 / 65535) or "minmax" (per image)
    phantom_dir: str | None = None  # phantom-*: read this phantom folder instead of rendering subjects in memory
    phantom_subjects: int = 16
    data_seed: int = 0  # phantom rendering and the held-out split
    image_size: int = 64
    channels: int = 1
    z_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    loss: str = "nonsaturating"
    n_critic: int | None = None  # None: 5 for wgan-gp, else 1
    gp_weight: float = 10.0
    critic_norm: str | None = None  # None: "layer" for wgan-gp, else "batch"
    lr: float | None = None  # None: 1e-4 for wgan-gp, else 2e-4
    betas: tuple[float, float] | None = None  # None: (0.0, 0.9) for wgan-gp, else (0.5, 0.999)
    batch_size: int = 64
    holdout: int | None = None  # real images held out for the metrics; None: DEFAULT_HOLDOUT (at most a quarter)
    sample_seed: int = 1234  # the fixed noise of the sample grid and interpolation strip
    grid_size: int = 64
    interp_rows: int = 6
    interp_steps: int = 10
    interpolation: str = "slerp"
    fid_weights: str | None = None  # Inception weights file: adds FID / KID to the metrics (slow on CPU)
    fid_variant: str = "fid"  # "fid" (pytorch-fid weights) or "torchvision"

    def __post_init__(self) -> None:
        wgan = self.loss == "wgan-gp"
        if self.dataset is None:
            self.dataset = "folder" if self.images else "phantom-mr"
        if self.n_critic is None:
            self.n_critic = 5 if wgan else 1
        if self.critic_norm is None:
            self.critic_norm = "layer" if wgan else "batch"
        if self.lr is None:
            self.lr = 1e-4 if wgan else 2e-4
        if self.betas is None:
            self.betas = (0.0, 0.9) if wgan else (0.5, 0.999)
        self.betas = tuple(float(b) for b in self.betas)
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(message)

        need(self.dataset in DATASETS, f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        need(self.dataset != "folder" or bool(self.images), "--dataset folder needs --images DIR")
        need(self.dataset == "folder" or not self.images,
             f"--images is a folder data set; drop --dataset {self.dataset} (or use --dataset folder)")
        need(self.image_size in IMAGE_SIZES, f"--image-size must be one of {IMAGE_SIZES}, got {self.image_size}")
        need(self.channels in (1, 3), f"--channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        need(self.loss in OBJECTIVES, f"--loss must be one of {', '.join(OBJECTIVES)}, got {self.loss!r}")
        need(self.critic_norm in ("batch", "layer", "none"), f"--critic-norm must be batch, layer or none, got {self.critic_norm!r}")
        need(self.interpolation in INTERPOLATIONS, f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        need(self.scale in ("dtype", "minmax"), f"--scale must be dtype or minmax, got {self.scale!r}")
        need(self.fid_variant in ("fid", "torchvision"), f"--fid-variant must be fid or torchvision, got {self.fid_variant!r}")
        for name in ("z_dim", "ngf", "ndf", "n_critic", "batch_size", "grid_size", "interp_rows", "phantom_subjects"):
            need(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        need(self.interp_steps >= 2, f"--interp-steps must be >= 2, got {self.interp_steps}")
        need(self.holdout is None or self.holdout >= 0, f"--holdout must be >= 0, got {self.holdout}")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), f"betas must be two numbers in [0, 1), got {self.betas}")
        need(self.gp_weight >= 0, f"--gp-weight must be >= 0, got {self.gp_weight}")


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of z0 and z1 (B, Z) at fractions t (T,) -> (B, T, Z).

    The angle is measured between directions; the norm is interpolated linearly. Falls back to
    linear interpolation for (nearly) parallel vectors.
    """
    n0, n1 = z0.norm(dim=1, keepdim=True), z1.norm(dim=1, keepdim=True)
    cos = ((z0 / n0) * (z1 / n1)).sum(1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)[:, None]  # (B, 1, 1)
    t = t[None, :, None]
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    w0 = torch.where(parallel, 1.0 - t, torch.sin((1.0 - t) * omega) / torch.where(parallel, 1.0, sin))
    w1 = torch.where(parallel, t, torch.sin(t * omega) / torch.where(parallel, 1.0, sin))
    unit = w0 * (z0 / n0)[:, None] + w1 * (z1 / n1)[:, None]
    norm = (1.0 - t) * n0[:, None] + t * n1[:, None]
    return unit / unit.norm(dim=2, keepdim=True).clamp_min(1e-12) * norm


def interpolate_latents(z0: torch.Tensor, z1: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
    """`steps` points from each row of z0 to the matching row of z1 (ends included): (B * steps, Z), row-major."""
    if method not in INTERPOLATIONS:
        raise UserError(f"interpolation (--method) must be one of {', '.join(INTERPOLATIONS)}, got {method!r}")
    if steps < 2:
        raise UserError(f"interpolation needs at least 2 steps, got {steps}")
    t = torch.linspace(0.0, 1.0, steps, dtype=z0.dtype)
    if method == "linear":
        path = z0[:, None] + t[None, :, None] * (z1 - z0)[:, None]
    else:
        path = slerp(z0, z1, t)
    return path.reshape(-1, z0.shape[1])


@register_recipe
class DCGANRecipe(Recipe):
    """Generator G and discriminator (critic) D trained with a GAN objective from `counterfeit.losses`."""

    name = "dcgan"
    Config = DCGANConfig
    progress_keys = ("loss_d", "loss_g")
    log_labels = {
        "loss_d": "D loss (incl. gradient penalty)",
        "d_real": "D's mean output on real images",
        "d_fake": "D's mean output on generated images",
        "gp": "gradient penalty (weighted)",
        "loss_g": "G loss",
        "w_distance": "critic's Wasserstein estimate",
        "swd": "SWD ×10³, mean over levels (held-out)",
        "nn_median": "median distance to the nearest training image",
        "nn_ratio": "that median / held-out images' (≪ 1: copies)",
    }

    def __init__(self, config: DCGANConfig, device: torch.device) -> None:
        super().__init__(config, device)
        c = config
        self.objective = get_objective(c.loss)
        if c.loss == "wgan-gp":
            self.objective.gp_weight = c.gp_weight
        g = DCGANGenerator(c.z_dim, c.channels, c.image_size, c.ngf).to(device)
        d = DCGANDiscriminator(c.channels, c.image_size, c.ndf, norm=c.critic_norm).to(device)
        self.nets = {"G": g, "D": d}
        self.optimizers = {
            "G": torch.optim.Adam(g.parameters(), lr=c.lr, betas=c.betas),
            "D": torch.optim.Adam(d.parameters(), lr=c.lr, betas=c.betas),
        }
        # Fixed noise from its own generator: pictures are comparable across steps and runs.
        gen = torch.Generator().manual_seed(c.sample_seed)
        self.fixed_z = torch.randn(c.grid_size, c.z_dim, generator=gen)
        self.interp_ends = torch.randn(2, c.interp_rows, c.z_dim, generator=gen)
        self.train_images: np.ndarray | None = None
        self.holdout_images: np.ndarray | None = None
        self._inception = None
        self._real_features: np.ndarray | None = None

    # --- data -------------------------------------------------------------------------------
    def load_images(self) -> np.ndarray:
        """All images of the configured data set, (N, C, S, S) float32 in [-1, 1]."""
        from counterfeit.data.images import builtin_dataset, check_images, load_image_folder

        c = self.config
        if c.dataset == "folder":
            images = load_image_folder(c.images, c.image_size, c.channels, c.scale)
        else:
            images = builtin_dataset(c.dataset, c.image_size, c.channels, seed=c.data_seed,
                                     n_subjects=c.phantom_subjects, root=c.phantom_dir)
        return check_images(images, c.image_size, c.channels, c.images or c.dataset)

    @property
    def holdout_wanted(self) -> int:
        return DEFAULT_HOLDOUT if self.config.holdout is None else self.config.holdout

    def setup_data(self) -> None:
        from counterfeit.data.images import split_holdout

        if self.train_images is not None:
            return
        images = self.load_images()
        self.train_images, self.holdout_images = split_holdout(images, self.holdout_wanted, self.config.data_seed)
        if self.config.holdout is not None and len(self.holdout_images) < self.config.holdout:  # asked for, not got
            import warnings

            warnings.warn(f"--holdout {self.config.holdout} capped at {len(self.holdout_images)}, a quarter of the "
                          f"{len(images)} images, so that most stay for training", stacklevel=2)

    def sample_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        n, k = c.batch_size, c.n_critic
        idx = rng.integers(0, len(self.train_images), size=(n, k))
        batch = {
            "real": self.train_images[idx],  # (B, n_critic, C, H, W): one real batch per critic step
            "z_d": rng.standard_normal((n, k, c.z_dim), dtype=np.float32),
        }
        if k > 1:
            batch["z_g"] = rng.standard_normal((n, c.z_dim), dtype=np.float32)
        return batch

    # --- one step ---------------------------------------------------------------------------
    def train_step(self, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
        b = self.to_device(batch)
        g, d = self.nets["G"], self.nets["D"]
        obj = self.objective
        real, z_d = b["real"], b["z_d"]
        k_steps = real.shape[1]
        logs = {"loss_d": 0.0, "d_real": 0.0, "d_fake": 0.0}
        if obj.gp_weight:
            logs["gp"] = 0.0
        fake = None
        for k in range(k_steps):
            if k_steps == 1:
                fake = g(z_d[:, 0])  # reused by the generator step below
            else:
                with torch.no_grad():
                    fake = g(z_d[:, k])
            real_k = real[:, k]
            out_real, out_fake = d(real_k), d(fake.detach())
            loss_d = obj.d_loss(out_real, out_fake)
            if obj.gp_weight:
                gp = gradient_penalty(d, real_k, fake.detach(), weight=obj.gp_weight)
                logs["gp"] += gp.item() / k_steps
                loss_d = loss_d + gp
            self.optimizers["D"].zero_grad(set_to_none=True)
            loss_d.backward()
            self.optimizers["D"].step()
            logs["loss_d"] += loss_d.item() / k_steps
            logs["d_real"] += out_real.mean().item() / k_steps
            logs["d_fake"] += out_fake.mean().item() / k_steps

        if k_steps > 1:
            fake = g(b["z_g"])
        d.requires_grad_(False)  # the generator step needs gradients through D, not for D
        loss_g = obj.g_loss(d(fake))
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizers["G"].step()
        d.requires_grad_(True)
        logs["loss_g"] = loss_g.item()
        if obj.name == "wgan-gp":
            logs["w_distance"] = logs["d_real"] - logs["d_fake"]  # the critic's Wasserstein estimate
        return logs

    # --- generation -------------------------------------------------------------------------
    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """n standard-normal latent vectors from `seed` (independent of the global RNG)."""
        return torch.randn(n, self.config.z_dim, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """G(z) in eval mode (batch-norm running statistics), on the CPU, values in [-1, 1]."""
        g = self.nets["G"]
        was_training = g.training
        g.eval()
        try:
            out = [g(z[i : i + batch_size].to(self.device)).float().cpu() for i in range(0, len(z), batch_size)]
        finally:
            g.train(was_training)
        return torch.cat(out)

    def interpolation(self, z0: torch.Tensor, z1: torch.Tensor, steps: int, method: str | None = None) -> torch.Tensor:
        """Images along latent paths from rows of z0 to rows of z1: (rows * steps, C, H, W), row-major."""
        return self.generate(interpolate_latents(z0, z1, steps, method or self.config.interpolation))

    def write_samples(self, step: int, out_dir: Path) -> None:
        from counterfeit.data.images import save_image_grid

        c = self.config
        out_dir = Path(out_dir)
        nrow = max(1, int(math.ceil(math.sqrt(c.grid_size))))
        save_image_grid(self.generate(self.fixed_z), out_dir / f"grid_{step:08d}.png", nrow=nrow)
        strip = self.interpolation(self.interp_ends[0], self.interp_ends[1], c.interp_steps)
        save_image_grid(strip, out_dir / f"interp_{step:08d}.png", nrow=c.interp_steps)

    # --- metrics ----------------------------------------------------------------------------
    def metrics(self, step: int) -> dict[str, float]:
        """SWD (x1e3) between held-out real images and as many generated ones, plus the memorisation ratio."""
        from counterfeit.evaluation.memorization import memorization_check
        from counterfeit.evaluation.swd import SWDSettings, sliced_wasserstein_distance

        if self.train_images is None:
            return {}
        reference = self.holdout_images if len(self.holdout_images) else self.train_images[: self.holdout_wanted or 64]
        fake = self.generate(self.latents(len(reference), seed=self.config.sample_seed + 1)).numpy()
        out = sliced_wasserstein_distance(reference, fake, SWDSettings.cheap(), seed=0)
        if len(self.holdout_images):
            nn = memorization_check(fake, self.train_images, reference=self.holdout_images)
            out["nn_median"] = nn.summary["nn_median"]
            out["nn_ratio"] = nn.summary["nn_ratio"]
        if self.config.fid_weights:
            out.update(self._fid_kid(reference, fake))
        return out

    def _fid_kid(self, reference: np.ndarray, fake: np.ndarray) -> dict[str, float]:
        from counterfeit.evaluation.fid import extract_features, fid_from_features, kid_from_features
        from counterfeit.nets.inception import load_inception

        if self._inception is None:
            self._inception = load_inception(self.config.fid_weights, self.config.fid_variant, self.device)
            self._real_features = extract_features(self._inception, reference, device=self.device)
        fake_features = extract_features(self._inception, fake, device=self.device)
        kid, _ = kid_from_features(self._real_features, fake_features, n_subsets=50, subset_size=min(1000, len(fake)))
        # Keys name the extractor variant; the weights file is in config.json (fid_weights).
        tag = f"inception_{self.config.fid_variant}"
        return {f"fid_{tag}": fid_from_features(self._real_features, fake_features), f"kid_{tag}": kid}
