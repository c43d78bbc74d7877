"""`--compile`: training forwards go through torch.compile; modules, checkpoints and inference stay plain.

A real inductor compile takes about a minute per network on this CPU, so these tests use a
counting backend that runs the captured graph eagerly: they check the plumbing (which calls
are compiled, state_dict keys, identical training, restoring the forwards), not inductor.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from counterfeit.train import checkpoint as ckpt
from counterfeit.train import loop as loop_module
from counterfeit.train.compiled import compile_for_training
from counterfeit.train.loop import LoopConfig, train
from counterfeit.train.recipe import Recipe, register_recipe


class CountingBackend:
    """A torch.compile backend that records each graph it is given and runs it as captured."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1
        return gm.forward


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.InstanceNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))


def test_only_training_forwards_are_compiled_and_modules_stay_plain():
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = _net()
    keys = list(net.state_dict())
    x = torch.randn(2, 1, 8, 8)
    expected = net(x)
    backend = CountingBackend()
    restore = compile_for_training({"G": net}, backend=backend)

    assert list(net.state_dict()) == keys and isinstance(net, nn.Sequential)
    torch.testing.assert_close(net(x), expected)  # training mode with gradients: compiled
    assert backend.graphs == 1
    net(x).sum().backward()
    assert backend.graphs == 1 and net[0].weight.grad is not None  # same shapes: no recompile
    with torch.no_grad():
        net(x)
    net.eval()
    net(torch.randn(1, 1, 12, 12))
    assert backend.graphs == 1  # no_grad and eval calls ran eagerly
    net.train()

    restore()
    assert "forward" not in net.__dict__
    net(x)
    assert backend.graphs == 1


@dataclasses.dataclass
class TinyConfig:
    lr: float = 0.01


@register_recipe
class TinyConvRecipe(Recipe):
    """Denoise random 8x8 images with a tiny conv net (instance norm, as the MR->CT generators)."""

    name = "test-compiled"
    Config = TinyConfig

    def __init__(self, config: TinyConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.nets = {"G": _net()}
        self.optimizers = {"G": torch.optim.Adam(self.nets["G"].parameters(), lr=config.lr)}

    def sample_batch(self, rng: np.random.Generator):
        clean = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
        return clean, clean + 0.3 * rng.standard_normal(clean.shape).astype(np.float32)

    def train_step(self, batch, step):
        clean, noisy = self.to_device(batch)
        loss = ((self.nets["G"](noisy) - clean) ** 2).mean()
        self.optimizers["G"].zero_grad()
        loss.backward()
        self.optimizers["G"].step()
        return {"loss": loss}

    def metrics(self, step):
        with torch.no_grad():
            return {"out_mean": float(self.nets["G"](torch.ones(1, 1, 8, 8)).mean())}


def _run(tmp_path, name: str, compile: bool):
    torch.manual_seed(0)
    recipe = TinyConvRecipe(TinyConfig(), torch.device("cpu"))
    loop = LoopConfig(steps=6, log_every=2, checkpoint_every=3, sample_every=0, progress=False, tensorboard=False,
                      prefetch=0, compile=compile)
    result = train(recipe, loop, tmp_path / name)
    return recipe, result


def test_loop_with_compile_trains_identically_and_saves_plain_checkpoints(tmp_path, monkeypatch):
    torch._dynamo.reset()
    backend = CountingBackend()
    monkeypatch.setattr(loop_module, "compile_for_training", functools.partial(compile_for_training, backend=backend))
    eager_recipe, eager = _run(tmp_path, "eager", compile=False)
    assert backend.graphs == 0
    compiled_recipe, compiled = _run(tmp_path, "compiled", compile=True)
    assert backend.graphs >= 1  # the training forwards went through torch.compile

    assert compiled.steps_done == eager.steps_done == 6
    assert compiled.last_losses["loss"] == eager.last_losses["loss"]
    for a, b in zip(eager_recipe.nets["G"].parameters(), compiled_recipe.nets["G"].parameters()):
        torch.testing.assert_close(a, b)
    assert "forward" not in compiled_recipe.nets["G"].__dict__  # restored after training
    weights = ckpt.latest_checkpoint(tmp_path / "compiled").path / "G.safetensors"
    fresh = _net()
    ckpt.load_weights(fresh, weights)  # strict: keys have no `_orig_mod.` prefix
    torch.testing.assert_close(fresh[0].weight, compiled_recipe.nets["G"][0].weight)
