"""The DCGAN recipe: steps at 32x32, WGAN-GP critic steps, pictures, the sample command, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from counterfeit.device import seed_everything
from counterfeit.errors import UserError
from counterfeit.train.loop import LoopConfig, load_run, resume_run, train
from counterfeit.train.recipes.dcgan import DCGANConfig, DCGANRecipe, interpolate_latents

TINY = dict(dataset="digits", image_size=32, ngf=8, ndf=8, z_dim=16, batch_size=8, holdout=32, grid_size=16,
            interp_rows=2, interp_steps=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recipe(**kw) -> DCGANRecipe:
    seed_everything(0)  # weights are initialised in __init__
    return DCGANRecipe(DCGANConfig(**{**TINY, **kw}), torch.device("cpu"))


def _loop(steps: int, **kw) -> LoopConfig:
    base = dict(steps=steps, log_every=1, checkpoint_every=0, sample_every=0, metrics_every=0, progress=False,
                tensorboard=False, prefetch=0)
    base.update(kw)
    return LoopConfig(**base)


def _steps(recipe: DCGANRecipe, n: int) -> dict[str, float]:
    """n training steps without the loop (no checkpoints or plots: fast)."""
    recipe.setup_data()
    for step in range(n):
        losses = recipe.train_step(recipe.sample_batch(np.random.default_rng(step)), step)
    return losses


def _adam_steps(opt: torch.optim.Optimizer) -> int:
    return int(next(iter(opt.state.values()))["step"])


def test_nonsaturating_steps_at_32px(tmp_path):
    recipe = _recipe()
    g_before = [p.detach().clone() for p in recipe.nets["G"].parameters()]
    result = train(recipe, _loop(4, sample_every=2), tmp_path)
    assert result.steps_done == 4
    assert set(result.last_losses) >= {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in result.last_losses.values())
    # Both networks trained, one D update per G update.
    assert any(not torch.equal(a, b) for a, b in zip(g_before, recipe.nets["G"].parameters()))
    assert _adam_steps(recipe.optimizers["D"]) == _adam_steps(recipe.optimizers["G"]) == 4
    # The paper's optimiser and the DCGAN critic (batch norm, no pooling anywhere).
    assert recipe.optimizers["G"].param_groups[0]["betas"] == (0.5, 0.999)
    assert recipe.optimizers["G"].param_groups[0]["lr"] == 2e-4
    assert any(isinstance(m, nn.BatchNorm2d) for m in recipe.nets["D"].modules())
    for net in recipe.nets.values():
        assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)) for m in net.modules())
    # Pictures: a 4x4 grid of 32 px images, and interpolation strips of 2 rows x 5 steps.
    grid = np.asarray(Image.open(tmp_path / "samples" / "grid_00000004.png"))
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2)
    strip = np.asarray(Image.open(tmp_path / "samples" / "interp_00000002.png"))
    assert strip.shape == (2 * 34 + 2, 5 * 34 + 2)
    # Metrics at the final checkpoint: SWD per level against the held-out images, memorisation ratio.
    assert {"swd", "swd_32", "swd_16", "nn_ratio"} <= set(result.last_metrics)
    assert result.last_metrics["swd"] > 0
    assert (tmp_path / "loss.png").is_file()


def test_wgan_gp_takes_five_critic_steps():
    recipe = _recipe(loss="wgan-gp")
    c = recipe.config
    assert (c.n_critic, c.critic_norm, c.lr, c.betas) == (5, "layer", 1e-4, (0.0, 0.9))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in recipe.nets["D"].modules())
    losses = _steps(recipe, 3)
    assert _adam_steps(recipe.optimizers["D"]) == 15 and _adam_steps(recipe.optimizers["G"]) == 3
    assert losses["gp"] > 0 and "w_distance" in losses
    batch = recipe.sample_batch(np.random.default_rng(0))
    assert batch["real"].shape == (8, 5, 1, 32, 32) and batch["z_g"].shape == (8, 16)


@pytest.mark.parametrize("loss", ["hinge", "lsgan"])
def test_other_objectives_run(loss):
    losses = _steps(_recipe(loss=loss), 2)
    assert np.isfinite(losses["loss_d"]) and np.isfinite(losses["loss_g"])


def test_config_validation():
    with pytest.raises(UserError, match="--loss"):
        DCGANConfig(loss="wasserstein")
    with pytest.raises(UserError, match="--images"):
        DCGANConfig(dataset="folder")
    with pytest.raises(UserError, match="image-size"):
        DCGANConfig(image_size=48)
    assert DCGANConfig(images="/data").dataset == "folder"
    assert DCGANConfig().dataset == "phantom-mr"


def test_interpolation_paths():
    z0, z1 = torch.randn(3, 16), torch.randn(3, 16)
    for method in ("slerp", "linear"):
        path = interpolate_latents(z0, z1, 5, method).reshape(3, 5, 16)
        torch.testing.assert_close(path[:, 0], z0)
        torch.testing.assert_close(path[:, -1], z1)
    torch.testing.assert_close(interpolate_latents(z0, z1, 3, "linear").reshape(3, 3, 16)[:, 1], (z0 + z1) / 2)
    # slerp between equal-norm vectors stays on their sphere (linear cuts inside it).
    z1 = z1 / z1.norm(dim=1, keepdim=True) * z0.norm(dim=1, keepdim=True)
    mid = interpolate_latents(z0, z1, 3, "slerp").reshape(3, 3, 16)[:, 1]
    torch.testing.assert_close(mid.norm(dim=1), z0.norm(dim=1))


def test_folder_of_16bit_images_trains(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(20000, 60000, (40, 40)).astype(np.uint16)).save(folder / f"{i}.png")
    recipe = _recipe(dataset=None, images=str(folder), holdout=100)
    with pytest.warns(UserWarning, match="--holdout 100 capped at 3"):
        _steps(recipe, 1)
    assert recipe.train_images.shape == (9, 1, 32, 32) and len(recipe.holdout_images) == 3
    assert recipe.train_images.min() > -0.5  # 16-bit values read at full scale, not black
    import warnings

    default = _recipe(dataset=None, images=str(folder), holdout=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default (256, at most a quarter) is capped without a word
        default.setup_data()
    assert len(default.holdout_images) == 3


def test_resume_equals_uninterrupted_and_sample_command(tmp_path):
    full = train(_recipe(), _loop(6), tmp_path / "full")
    train(_recipe(), _loop(3), tmp_path / "part")
    resumed = resume_run(tmp_path / "part", steps=6, device="cpu", progress=False)
    assert full.steps_done == resumed.steps_done == 6
    a, b = load_run(tmp_path / "full", "cpu"), load_run(tmp_path / "part", "cpu")
    for name in ("G", "D"):
        for k, v in a.nets[name].state_dict().items():
            assert torch.equal(v, b.nets[name].state_dict()[k]), (name, k)
    assert json.loads((tmp_path / "part" / "config.json").read_text())["config"]["loss"] == "nonsaturating"

    from counterfeit.cli import app

    runner = CliRunner()
    out = tmp_path / "grid.png"
    res = runner.invoke(app, ["sample", "--model", str(tmp_path / "full"), "--n", "6", "--out", str(out),
                              "--device", "cpu", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert np.asarray(Image.open(out)).shape == (2 * 34 + 2, 3 * 34 + 2)
    # The grid shows G of the seeded latents, in eval mode.
    expected = a.generate(a.latents(6, seed=3))
    first = np.asarray(Image.open(out))[2:34, 2:34] / 255.0
    np.testing.assert_allclose(first, ((expected[0, 0].numpy() + 1) / 2).clip(0, 1), atol=1 / 255 + 1e-6)
    strip = tmp_path / "interp.png"
    res = runner.invoke(app, ["sample", "--model", str(tmp_path / "full"), "--interpolate", "--n", "2",
                              "--steps", "4", "--out", str(strip), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert np.asarray(Image.open(strip)).shape == (2 * 34 + 2, 4 * 34 + 2)
    base = ["sample", "--model", str(tmp_path / "full"), "--out", str(tmp_path / "x.png"), "--device", "cpu"]
    for extra, message in ((["--interpolate", "--nrow", "2"], "--nrow is for grids"),
                           (["--steps", "4"], "are for --interpolate"),
                           (["--interpolate", "--method", "cubic"], "must be one of slerp, linear, got 'cubic'")):
        bad = runner.invoke(app, [*base, *extra])
        assert isinstance(bad.exception, UserError) and message in str(bad.exception), (extra, bad.output)
    crn_like = tmp_path / "crn_run"
    crn_like.mkdir()
    (crn_like / "config.json").write_text(json.dumps({"recipe": "crn", "config": {}, "loop": {}}))
    bad = runner.invoke(app, ["sample", "--model", str(crn_like), "--out", str(tmp_path / "y.png")])
    assert isinstance(bad.exception, UserError) and "needs a dcgan run" in str(bad.exception)
