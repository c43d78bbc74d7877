"""The 2D toy lab: distributions, mode metrics, pictures, the recipe through the shared loop, the CLI."""

from __future__ import annotations

import csv
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from counterfeit.data.toy2d import TOY_DISTRIBUTIONS, make_toy
from counterfeit.errors import UserError
from counterfeit.metrics import METRICS, histogram_js, mode_coverage, register_metric
from counterfeit.plots import render_toy_frame, write_gif
from counterfeit.train.loop import LoopConfig, resume_run, train
from counterfeit.losses import gradient_penalty
from counterfeit.train.recipes.toy import ToyConfig, ToyRecipe, finish_toy_run, packed_gradient_penalty


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- distributions ---------------------------------------------------------------


def test_distributions_follow_the_protocol() -> None:
    ring = make_toy("ring8")
    assert ring.modes.shape == (8, 2) and ring.sigma == 0.01
    assert np.allclose(np.linalg.norm(ring.modes, axis=1), 1.0)
    grid = make_toy("grid25")
    assert grid.sigma == 0.05
    assert sorted({tuple(m) for m in grid.modes.tolist()}) == [(float(x), float(y)) for x in range(-4, 5, 2) for y in range(-4, 5, 2)]
    for name in TOY_DISTRIBUTIONS:
        d = make_toy(name)
        x = d.sample(torch.Generator().manual_seed(0), 4000)
        assert x.shape == (4000, 2) and x.dtype == torch.float32
        # every point lies near a mode: the distance to the nearest mode is σ-sized
        nearest = np.sqrt(((x.numpy()[:, None] - d.modes[None]) ** 2).sum(-1).min(1))
        assert np.percentile(nearest, 99) < 3.5 * d.sigma
    with pytest.raises(UserError, match="ring8"):
        make_toy("ring9")


def test_sampling_is_reproducible_and_uses_all_modes() -> None:
    d = make_toy("ring8")
    a = d.sample(torch.Generator().manual_seed(3), 100)
    b = d.sample(torch.Generator().manual_seed(3), 100)
    assert torch.equal(a, b)
    c = d.sample(np.random.default_rng(3), 800)
    assert np.array_equal(c.numpy(), d.sample(np.random.default_rng(3), 800).numpy())
    counts = mode_coverage(c, d.modes, d.sigma)["per_mode_counts"]
    assert min(counts) > 60  # ~100 per mode: the mixture is uniform
    spread = (c.numpy() - d.modes[np.argmin(((c.numpy()[:, None] - d.modes[None]) ** 2).sum(-1), 1)]).std()
    assert spread == pytest.approx(0.01, rel=0.1)


# --- metrics ---------------------------------------------------------------------


def test_mode_coverage_on_hand_made_points() -> None:
    modes = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    samples = np.array(
        [
            [0.0, 0.0],  # on mode 0
            [0.02, -0.01],  # within 3σ = 0.03 of mode 0 (distance 0.022)
            [1.0, 0.029],  # mode 1, just inside
            [1.0, 0.031],  # mode 1, just outside: low quality
            [0.5, 0.5],  # between modes: low quality
            [np.nan, 0.0],  # garbage: low quality, no crash
        ]
    )
    m = mode_coverage(samples, modes, sigma=0.01)
    assert m == {"modes_covered": 2, "modes_well_covered": 2, "n_modes": 3, "high_quality": pytest.approx(3 / 6),
                 "per_mode_counts": [2, 1, 0]}
    # a mode with a few stray samples is covered by the spec's rule (one sample), not by PacGAN's (>= 20 % of a share)
    few = np.concatenate([np.repeat(modes[:2], 300, axis=0), np.repeat(modes[2:], 6, axis=0)])
    m = mode_coverage(few, modes, sigma=0.01)
    assert (m["modes_covered"], m["modes_well_covered"], m["per_mode_counts"]) == (3, 2, [300, 300, 6])
    assert METRICS["toy_modes"] is mode_coverage and METRICS["toy_js"] is histogram_js
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        mode_coverage(np.zeros((3, 3)), modes, 0.01)


def test_histogram_js() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3000, 2))
    bounds = (-4.0, 4.0, -4.0, 4.0)
    assert histogram_js(a, a, bounds) == pytest.approx(0.0, abs=1e-12)
    shifted = histogram_js(a, a + 1.0, bounds)
    far = histogram_js(a, a + 3.0, bounds)
    assert 0 < shifted < far <= math.log(2)
    # points far outside the range are clipped into border bins, not silently dropped
    assert histogram_js(np.array([[0.0, 0.0]]), np.array([[100.0, 100.0]]), bounds) == pytest.approx(math.log(2))


def test_metric_registry_rejects_duplicates() -> None:
    @register_metric("test_only_metric")
    def one(x):
        return x

    assert METRICS["test_only_metric"] is one
    with pytest.raises(ValueError, match="already registered"):
        register_metric("test_only_metric")(lambda x: x)
    del METRICS["test_only_metric"]


# --- pictures --------------------------------------------------------------------


def test_toy_frames_and_gif(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frames = [
        render_toy_frame(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)), (-3, 3, -2, 2),
                         d_values=rng.random((20, 30)), title=f"frame {i}", size_px=160)
        for i in range(3)
    ]
    frames.append(render_toy_frame(np.zeros((5, 2)), np.ones((5, 2)), (-1, 2, -1, 2), size_px=160))  # no contours
    assert {f.shape for f in frames} == {(160, 160, 3)} and frames[0].dtype == np.uint8
    assert frames[0].std() > 10  # something was drawn
    gif = write_gif(frames, tmp_path / "a.gif")
    assert iio.imread(gif).shape[0] == 4
    with pytest.raises(ValueError, match="differ in size"):
        write_gif([frames[0], frames[0][:100]], tmp_path / "b.gif")


# --- recipe through the shared loop -------------------------------------------------

TINY = dict(g_hidden=16, d_hidden=16, g_depth=2, d_depth=2, batch_size=32, eval_samples=2500, contour_points=12)


def _loop(steps: int, **kw) -> LoopConfig:
    base = dict(steps=steps, log_every=5, metrics_every=5, sample_every=10, checkpoint_every=10,
                progress=False, tensorboard=False)
    base.update(kw)
    return LoopConfig(**base)


def _recipe(**kw) -> ToyRecipe:
    torch.manual_seed(0)
    return ToyRecipe(ToyConfig(**{**TINY, **kw}), torch.device("cpu"))


def test_config_validation() -> None:
    with pytest.raises(UserError, match="--dist"):
        ToyConfig(dist="moons")
    with pytest.raises(UserError, match="--loss"):
        ToyConfig(loss="wgan")
    with pytest.raises(UserError, match="multiple of --pac"):
        ToyConfig(batch_size=30, pac=4)
    with pytest.raises(UserError, match="2500"):
        ToyConfig(eval_samples=100)
    assert ToyConfig(loss="wgan-gp").n_critic == 5 and ToyConfig(loss="hinge").n_critic == 1


def test_extending_a_run_moves_its_decay(tmp_path) -> None:
    from counterfeit.cli import app

    out = tmp_path / "toy"
    args = ["toy", "--dist", "ring8", "--out", str(out), "--frames", "1", "--g-hidden", "8", "--d-hidden", "8",
            "--batch-size", "16", "--metrics-every", "4", "--log-every", "2", "--no-progress"]
    assert CliRunner().invoke(app, [*args, "--steps", "4"]).exit_code == 0
    with pytest.warns(UserWarning, match="now ends at step 8"):
        res = CliRunner().invoke(app, ["toy", "--resume", str(out), "--steps", "8", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "steps 4 to 8" in res.output  # what this call did, not just the run's total
    assert json.loads((out / "config.json").read_text())["config"]["decay_steps"] == 8
    with open(out / "metrics.csv", newline="") as fh:
        lr = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(fh)}
    # decayed to lr_final (1 %) at step 4 of 4; after the extension the rate at step 6 of 8 is 25.75 %, not 1 %
    assert lr[4] == pytest.approx(0.01 * lr[2] / (1 - 0.99 * 2 / 4))
    assert lr[6] == pytest.approx(lr[2] / (1 - 0.99 * 2 / 4) * (1 - 0.99 * 6 / 8))


def test_checkpoint_of_the_older_linear_scheduler_resumes(tmp_path) -> None:
    """Before the toy's schedule became a LambdaLR (same closed form) its checkpoints held LinearLR state."""
    import hashlib
    import shutil

    from counterfeit.train import checkpoint as ckpt

    def rewrite_state(run, change) -> None:
        info = ckpt.latest_checkpoint(run)
        state = ckpt.read_state_file(info.path / "state.pt")
        change(state)
        torch.save(state, info.path / "state.pt")
        manifest = json.loads((info.path / "manifest.json").read_text())
        manifest["files"]["state.pt"] = hashlib.sha256((info.path / "state.pt").read_bytes()).hexdigest()
        (info.path / "manifest.json").write_text(json.dumps(manifest))

    def as_linear_lr(state) -> None:
        for name, saved in state["schedulers"].items():
            opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=saved["base_lrs"][0])
            old = torch.optim.lr_scheduler.LinearLR(opt, 1.0, TINY.get("lr_final", 0.01), total_iters=10**6)
            state["schedulers"][name] = {**old.state_dict(), "last_epoch": saved["last_epoch"],
                                         "base_lrs": saved["base_lrs"]}

    train(_recipe(), _loop(10), tmp_path / "now")
    shutil.copytree(tmp_path / "now", tmp_path / "old")
    rewrite_state(tmp_path / "old", as_linear_lr)
    for run in ("now", "old"):
        resume_run(tmp_path / run, steps=20, device="cpu", progress=False)
    a, b = (_recipe_from(tmp_path / run).nets["G"].state_dict() for run in ("now", "old"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # state that does not fit at all is one line, not a traceback
    rewrite_state(tmp_path / "old", lambda state: state["optimizers"]["G"]["param_groups"].append({}))
    with pytest.raises(UserError, match="does not fit this version of the toy recipe"):
        resume_run(tmp_path / "old", steps=30, device="cpu", progress=False)
    assert json.loads((tmp_path / "old" / "config.json").read_text())["loop"]["steps"] == 20  # the failure changed nothing


def test_gradient_penalty_is_per_pack() -> None:
    class LinearPackCritic(torch.nn.Module):  # exactly 1-Lipschitz in each packed input: no penalty is due
        pac = 2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1, 4) @ torch.tensor([0.6, 0.0, 0.8, 0.0])

    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    assert float(packed_gradient_penalty(LinearPackCritic(), real, fake, weight=10.0)) == pytest.approx(0.0, abs=1e-10)
    assert float(gradient_penalty(LinearPackCritic(), real, fake)) > 0.5  # per point: norms 0.6 and 0.8, not 1


@pytest.mark.parametrize("loss, pac", [("wgan-gp", 1), ("wgan-gp", 2), ("nonsaturating", 2)])
def test_every_step_kind_runs(loss: str, pac: int) -> None:
    recipe = _recipe(loss=loss, pac=pac, n_critic=2)
    batch = recipe.sample_batch(np.random.default_rng(0))
    assert batch["real"].shape == (2, 32, 2) and batch["z"].shape == (3, 32, 2)
    before = [p.clone() for p in recipe.nets["G"].parameters()]
    out = recipe.train_step(batch, 0)
    assert all(math.isfinite(float(v)) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, recipe.nets["G"].parameters()))
    grid, label = recipe.discriminator_grid()
    assert grid.shape == (12, 12) and np.isfinite(grid).all()
    assert label == ("critic(x)" if loss == "wgan-gp" else "D(x) = P(real)")
    if label.startswith("D(x) = P"):
        assert ((grid > 0) & (grid < 1)).all()


def test_learns_a_gaussian() -> None:
    """A real (small) training run: the generator moves onto the data."""
    recipe = _recipe(dist="gaussian", loss="lsgan", g_hidden=32, d_hidden=32, g_depth=3, d_depth=3, batch_size=128, lr_g=2e-3,
                     lr_d=2e-3, decay_steps=300, js_bins=8)
    first = recipe.metrics(0)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for step in range(300):
        recipe.train_step(recipe.sample_batch(rng), step)
        for s in recipe.schedulers.values():
            s.step()
    last = recipe.metrics(300)
    assert last["js"] < 0.1 < first["js"], (first, last)
    assert last["high_quality"] > 0.95
    samples = recipe.generate()
    assert np.abs(samples.mean(0)).max() < 0.3 and (0.6 < samples.std(0)).all() and (samples.std(0) < 1.4).all()


def test_run_outputs_and_exact_resume(tmp_path) -> None:
    run = tmp_path / "run"
    torch.manual_seed(0)
    result = train(_recipe(), _loop(20, checkpoint_every=0), run)
    assert result.steps_done == 20
    summary = finish_toy_run(_recipe_from(run), run, result.steps_done, result.seconds)
    samples = np.load(run / "samples.npy")
    assert samples.shape == (2500, 2) and samples.dtype == np.float32
    saved = json.loads((run / "summary.json").read_text())
    assert saved["n_modes"] == 8 and len(saved["per_mode_counts"]) == 8 and saved["steps"] == 20
    assert saved["modes_covered"] == summary["modes_covered"] == sum(c > 0 for c in saved["per_mode_counts"])
    assert 0 <= saved["high_quality"] <= 1 and 0 <= saved["js"] <= math.log(2) and saved["target_met"] is False
    assert iio.imread(run / "training.gif").shape[0] == 2  # frames at steps 10 and 20
    assert (run / "loss.png").is_file()
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"loss_d", "loss_g", "modes_covered", "high_quality", "js"} <= set(rows[0])
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]

    # resume 10 -> 20 reproduces the uninterrupted run's weights exactly
    half = tmp_path / "half"
    torch.manual_seed(0)
    train(_recipe(), _loop(10, sample_every=0, checkpoint_every=0), half)
    resume_run(half, steps=20, progress=False)
    from safetensors.torch import load_file

    a = load_file(run / "checkpoints" / "step_00000020" / "G.safetensors")
    b = load_file(half / "checkpoints" / "step_00000020" / "G.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _recipe_from(run):
    from counterfeit.train.loop import load_run

    return load_run(run, device="cpu")


def test_cli(tmp_path) -> None:
    from counterfeit.cli import app

    out = tmp_path / "toy"
    threads = torch.get_num_threads()
    args = ["toy", "--dist", "grid25", "--out", str(out), "--steps", "6", "--frames", "1", "--g-hidden", "8", "--d-hidden", "8",
            "--batch-size", "16", "--metrics-every", "3", "--log-every", "3", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for name in ("samples.npy", "metrics.csv", "summary.json", "training.gif", "loss.png", "samples/step_00000006.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["n_modes"] == 25
    assert torch.get_num_threads() == threads  # --threads does not leak into the caller
    with pytest.warns(UserWarning, match="now ends at step 9"):
        res = CliRunner().invoke(app, ["toy", "--resume", str(out), "--steps", "9", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 9
    res = CliRunner().invoke(app, ["toy", "--resume", str(out), "--no-progress", "--lr-g", "0.5", "--steps", "9",
                                   "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 9
    # options a resume ignores are named (--steps and --no-progress apply)
    assert "--lr-g ignored with --resume" in res.output
    assert "--steps" not in res.output.split("ignored")[0] and "--threads" not in res.output.split("ignored")[0]
    # without --steps a resume finishes the run's own total (here: nothing left), not the command's default 6000
    res = CliRunner().invoke(app, ["toy", "--resume", str(out), "--no-progress"])
    assert res.exit_code == 0 and "ignored with --resume" not in res.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 9
    wrong = CliRunner().invoke(app, ["train", "cyclegan", "--resume", str(out), "--no-progress"])
    assert isinstance(wrong.exception, UserError) and "counterfeit toy --resume" in str(wrong.exception)
    cuda = CliRunner().invoke(app, ["toy", "--out", str(tmp_path / "y"), "--device", "bogus"])
    assert isinstance(cuda.exception, UserError) and "--device must be one of" in str(cuda.exception)
    again = CliRunner().invoke(app, args)  # the same command again would mix two runs in one folder
    assert isinstance(again.exception, UserError) and "--overwrite" in str(again.exception)
    both = CliRunner().invoke(app, ["toy", "--resume", str(out), "--overwrite", "--no-progress"])
    assert isinstance(both.exception, UserError) and "use one of them" in str(both.exception)
    res = CliRunner().invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
    assert not (out / "samples" / "step_00000009.png").exists()
    zero = CliRunner().invoke(app, [*args[:4], str(tmp_path / "zero"), "--steps", "0", "--frames", "1", "--no-progress"])
    assert zero.exit_code == 0, zero.output  # no metrics row, so no loss.png, and the summary does not list one
    assert "summary.json" in zero.output and "loss.png" not in zero.output
    bad = CliRunner().invoke(app, ["toy", "--dist", "moons", "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, UserError) and "--dist must be one of" in str(bad.exception)


@pytest.mark.parametrize("command", [["toy"], ["train", "paired"], ["phantom"], ["demo"]])
def test_seeds_outside_what_the_generators_take_are_refused_up_front(tmp_path, command) -> None:
    from counterfeit.cli import app

    for seed in ("-1", str(2**32)):
        res = CliRunner().invoke(app, [*command, "--seed", seed, "--out", str(tmp_path / "out")])
        assert res.exit_code == 2 and "--seed" in res.output, res.output
    assert not (tmp_path / "out").exists()
