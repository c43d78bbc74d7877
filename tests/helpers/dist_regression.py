"""A deterministic recipe run under torchrun by tests/test_distributed.py (and directly for the reference run).

Usage: python dist_regression.py RUN_DIR STEPS GLOBAL_BATCH [CHECKPOINT_EVERY [HIDDEN [keep-best] [replay]]]
An existing run directory with a checkpoint is resumed instead of started again. With `keep-best` the loop evaluates
every 2 steps a made-up validation MAE, |step - 7|, and keeps its lowest checkpoint (step 6). With `replay` each step
also fits the previous step's batch shard, kept per rank like a CycleGAN's image pool, with a weight drawn from the
rank's torch RNG (state and RNG streams that differ by rank).
Prints how the run stopped ("stopped: None", "stopped: terminated", ...).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch
from torch import nn

from counterfeit.device import seed_everything
from counterfeit.train.checkpoint import latest_checkpoint
from counterfeit.train.loop import LoopConfig, resume_run, train
from counterfeit.train.recipe import Recipe, register_recipe


@dataclasses.dataclass
class Config:
    batch: int = 8
    lr: float = 0.05
    hidden: int = 16
    replay: bool = False


@register_recipe
class TwoLayerRegression(Recipe):
    """A small MLP fitted to a fixed function; all per-example randomness comes from the step rng."""

    name = "test-dist-regression"
    Config = Config

    def __init__(self, config: Config, device: torch.device) -> None:
        super().__init__(config, device)
        self.nets = {"net": nn.Sequential(nn.Linear(3, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))}
        self.optimizers = {"net": torch.optim.Adam(self.nets["net"].parameters(), lr=config.lr)}
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None  # this rank's last shard, with `replay`

    def sample_batch(self, rng: np.random.Generator):
        x = rng.standard_normal((self.config.batch, 3)).astype(np.float32)
        y = (np.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:3] + 0.05 * rng.standard_normal((self.config.batch, 1)))
        return x, y.astype(np.float32)

    def train_step(self, batch, step):
        x, y = self.to_device(batch)
        loss = ((self.nets["net"](x) - y) ** 2).mean()
        if self.config.replay:
            if self.previous is not None:
                # weighted by a draw from this rank's torch RNG, after a number of draws that depends on its shard:
                # the ranks' RNG states drift apart, as a recipe's might (so a resume must restore each rank's own)
                draws = int(self.previous[0].abs().sum().item() * 10) % 3 + 1
                weight = torch.rand(draws)[-1]
                loss = loss + weight * ((self.nets["net"](self.previous[0]) - self.previous[1]) ** 2).mean()
            self.previous = (x.clone(), y.clone())
        self.optimizers["net"].zero_grad()
        loss.backward()
        self.optimizers["net"].step()
        return {"loss": loss}

    def metrics(self, step: int) -> dict[str, float]:
        return {"val_mae_hu": float(abs(step - 7))}

    def extra_state(self):
        return {"previous": list(self.previous)} if self.previous is not None else {}

    def load_extra_state(self, state):
        self.previous = tuple(state["previous"]) if "previous" in state else None


if __name__ == "__main__":
    run_dir, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    every = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    hidden = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    keep_best, replay = "keep-best" in sys.argv[6:], "replay" in sys.argv[6:]
    torch.set_num_threads(1)
    if latest_checkpoint(run_dir) is not None:
        result = resume_run(run_dir, steps=steps, device="cpu", progress=False)
    else:
        seed_everything(0)
        recipe = TwoLayerRegression(Config(batch=batch, hidden=hidden, replay=replay), torch.device("cpu"))
        result = train(recipe, LoopConfig(steps=steps, log_every=5, checkpoint_every=every, sample_every=0,
                                          progress=False, tensorboard=False, keep_best=keep_best,
                                          metrics_every=2 if keep_best else 0), run_dir)
    print(f"stopped: {result.stopped_early}", flush=True)
