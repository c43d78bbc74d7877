"""The shared training loop: exact resume, checkpoints, NaN stop, budgets, corrupted checkpoints."""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from counterfeit.errors import UserError
from counterfeit.train import checkpoint as ckpt
from counterfeit.train.loop import LoopConfig, TrainingDiverged, load_run, resume_run, train
from counterfeit.train.recipe import Recipe, register_recipe


@dataclasses.dataclass
class RegressionConfig:
    lr: float = 0.3
    batch: int = 8
    nan_at: int = -1


@register_recipe
class RegressionRecipe(Recipe):
    """y = x·w + noise, fitted with Adam; uses torch RNG inside the step so RNG restore matters."""

    name = "test-regression"
    Config = RegressionConfig
    progress_keys = ("loss",)

    def __init__(self, config: RegressionConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.nets = {"model": nn.Linear(4, 1)}
        self.optimizers = {"model": torch.optim.Adam(self.nets["model"].parameters(), lr=config.lr)}
        self.schedulers = {"model": torch.optim.lr_scheduler.StepLR(self.optimizers["model"], 7, 0.5)}
        self.calls = 0
        self.w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def sample_batch(self, rng: np.random.Generator):
        return rng.standard_normal((self.config.batch, 4)).astype(np.float32)

    def train_step(self, batch, step):
        x = self.to_device(batch)
        y = x @ self.w + 0.1 * torch.randn(x.shape[0], 1)
        loss = ((self.nets["model"](x) - y) ** 2).mean()
        if step == self.config.nan_at:
            loss = loss * float("nan")
        self.optimizers["model"].zero_grad()
        loss.backward()
        self.optimizers["model"].step()
        self.calls += 1
        return {"loss": loss}

    def metrics(self, step):
        return {"w_err": float((self.nets["model"].weight.detach().T - self.w).abs().mean())}

    def extra_state(self):
        return {"calls": self.calls}

    def load_extra_state(self, state):
        self.calls = state["calls"]


def _recipe(**kw) -> RegressionRecipe:
    torch.manual_seed(0)  # weights are initialised when the recipe is built, before train() seeds
    return RegressionRecipe(RegressionConfig(**kw), torch.device("cpu"))


class Evil:
    """Any non-tensor class: a weights-only load must refuse it."""


def _loop(steps: int, **kw) -> LoopConfig:
    base = dict(steps=steps, log_every=2, checkpoint_every=5, sample_every=0, progress=False, tensorboard=False)
    base.update(kw)
    return LoopConfig(**base)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_run(run_dir, "cpu").nets["model"].state_dict().items()}


def test_resume_equals_uninterrupted(tmp_path):
    full = train(_recipe(), _loop(20), tmp_path / "full")
    part = train(_recipe(), _loop(10), tmp_path / "part")
    assert part.steps_done == 10 and full.steps_done == 20
    resumed = resume_run(tmp_path / "part", steps=20, device="cpu", progress=False)
    assert resumed.steps_done == 20
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # so are the weight files, byte for byte (what `sha256sum` would check)
    manifests = [json.loads((tmp_path / r / "checkpoints" / "step_00000020" / "manifest.json").read_text())
                 for r in ("full", "part")]
    assert manifests[0]["files"]["model.safetensors"] == manifests[1]["files"]["model.safetensors"]
    # The metrics logs agree too (resume drops nothing and duplicates nothing).
    rows_a = (tmp_path / "full" / "metrics.csv").read_text().splitlines()
    rows_b = (tmp_path / "part" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows_a] == [r.split(",")[0] for r in rows_b]
    # And training did learn something (so equality is not between two untouched models).
    assert full.last_metrics["w_err"] < 0.5 * _recipe().metrics(0)["w_err"]


def test_loss_plot_titles_say_what_each_column_is(tmp_path, monkeypatch):
    import matplotlib.axes

    from counterfeit.plots import plot_losses

    (tmp_path / "metrics.csv").write_text("step,loss_d,gp,seconds\n1,0.5,,0.1\n2,0.4,0.01,0.2\n")
    titles = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, text, **kw: titles.append(text))
    assert plot_losses(tmp_path / "metrics.csv", tmp_path / "loss.png", labels={"loss_d": "D loss"}).is_file()
    assert titles == ["D loss\nloss_d", "gp"]  # a column without a label keeps its CSV name; bookkeeping is not drawn


def test_run_directory_contents(tmp_path):
    train(_recipe(), _loop(10), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["recipe"] == "test-regression" and cfg["config"]["lr"] == 0.3
    assert (tmp_path / "loss.png").stat().st_size > 0
    steps = [c.step for c in ckpt.list_checkpoints(tmp_path)]
    assert steps == [5, 10]
    manifest = ckpt.verify_checkpoint(tmp_path / "checkpoints" / "step_00000010")
    assert set(manifest["files"]) == {"model.safetensors", "state.pt"}


def test_fresh_run_refuses_a_folder_with_a_run_and_overwrite_replaces_it(tmp_path):
    train(_recipe(), _loop(20), tmp_path)
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "old.png").write_bytes(b"x")
    before = _weights(tmp_path)
    # without the guard a shorter fresh run would leave step 20 as "latest": inference would load the old model
    with pytest.raises(UserError, match="already holds a training run \\(checkpoints up to step 20\\)"):
        train(_recipe(lr=0.01), _loop(5), tmp_path)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [10, 15, 20]  # the newest 3 (pruning)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["lr"] == 0.3

    train(_recipe(lr=0.01), _loop(5), tmp_path, overwrite=True)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [5]
    assert not (tmp_path / "samples" / "old.png").exists()
    assert [int(float(r.split(",")[0])) for r in (tmp_path / "metrics.csv").read_text().splitlines()[1:]] == [2, 4, 5]
    after = _weights(tmp_path)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # a folder without checkpoints (a run killed before its first one, or unrelated files) is not refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    train(_recipe(), _loop(2), tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
    # --overwrite in a folder that holds no run deletes nothing of what is there, even under a run output's name
    mine = tmp_path / "mine"
    (mine / "samples").mkdir(parents=True)
    (mine / "samples" / "important.png").write_bytes(b"x")
    (mine / "metrics.csv").write_text("mine\n")
    from counterfeit.train.loop import clear_run

    clear_run(mine)
    assert (mine / "samples" / "important.png").read_bytes() == b"x" and (mine / "metrics.csv").read_text() == "mine\n"


def test_a_run_stopped_before_its_first_log_row_still_checkpoints(tmp_path):
    # a budget (or Ctrl-C) that stops the run before its first metrics.csv row: nothing to draw yet, no crash
    result = train(_recipe(), _loop(50, log_every=100, minutes=1e-6), tmp_path / "early")
    assert result.stopped_early and 1 <= result.steps_done < 50
    assert [c.step for c in ckpt.list_checkpoints(tmp_path / "early")] == [result.steps_done]
    assert not (tmp_path / "early" / "loss.png").exists()


def test_metrics_every_is_kept_between_log_steps(tmp_path):
    train(_recipe(), _loop(12, log_every=4, metrics_every=3, checkpoint_every=0), tmp_path)
    header, *rows = (tmp_path / "metrics.csv").read_text().splitlines()
    col = header.split(",").index("w_err")
    steps = [int(float(r.split(",")[0])) for r in rows]
    with_metrics = [s for s, r in zip(steps, rows) if r.split(",")[col]]
    assert steps == [3, 4, 6, 8, 9, 12] and with_metrics == [3, 6, 9, 12]


def test_nan_stops_with_clear_message_and_keeps_last_good(tmp_path):
    recipe = _recipe(nan_at=7)
    with pytest.raises(TrainingDiverged, match=r"step 8.*step_00000005"):
        train(recipe, _loop(20), tmp_path)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [5]


def test_corrupted_checkpoint_falls_back(tmp_path):
    train(_recipe(), _loop(10), tmp_path)
    newest = tmp_path / "checkpoints" / "step_00000010" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-7])  # truncate
    with pytest.warns(UserWarning, match="checksum mismatch.*skipped it, trying step_00000005"):
        info = ckpt.latest_checkpoint(tmp_path)
    assert info.step == 5
    oldest = tmp_path / "checkpoints" / "step_00000005" / "model.safetensors"
    saved = oldest.read_bytes()
    oldest.write_bytes(saved[:-7])
    with pytest.warns(UserWarning) as caught:  # the newest is skipped again, then the oldest, with nothing left
        assert ckpt.latest_checkpoint(tmp_path) is None
    assert "no older checkpoint to use" in str(caught[-1].message)
    oldest.write_bytes(saved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = resume_run(tmp_path, steps=12, device="cpu", progress=False)
    assert resumed.steps_done == 12


def test_wall_clock_budget_stops_early_with_checkpoint(tmp_path):
    result = train(_recipe(),
                   _loop(10**7, minutes=0.02, checkpoint_every=0), tmp_path)
    assert result.stopped_early == "budget"
    assert 0 < result.steps_done < 10**7
    assert ckpt.list_checkpoints(tmp_path)[-1].step == result.steps_done


def test_state_file_refuses_pickled_objects(tmp_path):
    bad = tmp_path / "state.pt"
    torch.save({"obj": Evil()}, bad)
    with pytest.raises(ckpt.CheckpointError, match="refused or unreadable"):
        ckpt.read_state_file(bad)


@register_recipe
class ValidatedRegressionRecipe(RegressionRecipe):
    """The regression with a validation MAE (the key keep_best selects by): its weight error, in made-up HU."""

    name = "test-regression-validated"

    def metrics(self, step):
        return {"val_mae_hu": 100.0 * super().metrics(step)["w_err"]}


def test_keep_best_evaluates_a_run_stopped_by_its_budget(tmp_path):
    torch.manual_seed(0)
    recipe = ValidatedRegressionRecipe(RegressionConfig(), torch.device("cpu"))
    result = train(recipe, _loop(10**7, minutes=0.02, checkpoint_every=0, metrics_every=50, keep_best=True), tmp_path)
    assert result.stopped_early == "budget"
    rows = [r for r in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    col = header.index("val_mae_hu")
    logged = [(int(r.split(",")[0]), float(r.split(",")[col])) for r in rows if r.split(",")[col]]
    assert logged[-1][0] == result.steps_done  # the stopped model was evaluated
    best = ckpt.read_best(tmp_path)
    assert best["value"] == pytest.approx(min(v for _, v in logged), rel=1e-5)
    assert ckpt.best_checkpoint(tmp_path).step == best["step"]


def test_keep_best_without_a_validation_mae_warns_once_and_uses_the_newest(tmp_path):
    with pytest.warns(UserWarning, match="no validation MAE") as caught:
        train(_recipe(), _loop(12, metrics_every=2, keep_best=True), tmp_path)
    assert sum("no validation MAE" in str(w.message) for w in caught) == 1
    assert ckpt.read_best(tmp_path) is None and load_run(tmp_path, "cpu") is not None


def test_output_locations_that_cannot_hold_a_run_are_one_line_errors(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from counterfeit.atomic import OutputError

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="a file, not a run folder"):
        train(_recipe(), _loop(2), tmp_path / "file")
    with pytest.raises(OutputError, match="cannot create output folder"):
        train(_recipe(), _loop(2), tmp_path / "file" / "run")

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(OutputError, match="cannot write checkpoint.*No space left"):
        train(_recipe(), _loop(2), tmp_path / "full")
    assert not list((tmp_path / "full" / "checkpoints").glob(".step_*"))  # no half-written checkpoint left


def test_a_run_stopped_between_log_rows_logs_the_same_rows_once_resumed(tmp_path, monkeypatch, signal_at_step):
    """The losses summed since the last metrics.csv row go into the checkpoint: the first row after a resume averages
    the same steps as the uninterrupted run's, not only the steps since the resume."""
    import signal

    train(_recipe(), _loop(20, log_every=4), tmp_path / "full")
    step_once = RegressionRecipe.train_step
    signal_at_step(RegressionRecipe, 5, signal.SIGINT)  # the loop finishes this step, saves and stops
    stopped = train(_recipe(), _loop(20, log_every=4), tmp_path / "part")
    assert stopped.steps_done == 6 and stopped.stopped_early
    monkeypatch.setattr(RegressionRecipe, "train_step", step_once)
    resume_run(tmp_path / "part", device="cpu", progress=False)

    def losses(run: str) -> list[tuple[str, str]]:
        with open(tmp_path / run / "metrics.csv", newline="") as fh:
            return [(r["step"], r["loss"]) for r in csv.DictReader(fh)]

    assert losses("part") == losses("full")  # bitwise, as written


def test_a_signal_during_the_last_step_is_not_lost(tmp_path, signal_at_step):
    """The run completes its steps, but reports the signal: a budget's next phase must not start after it."""
    import signal

    signal_at_step(RegressionRecipe, 9, signal.SIGTERM)
    result = train(_recipe(), _loop(10), tmp_path)
    assert result.steps_done == 10 and result.stopped_early == "terminated"
    from counterfeit.train.loop import RunStopped

    with pytest.raises(RunStopped) as stopped:
        RunStopped.check(result)
    assert stopped.value.exit_code == 143


def test_a_damaged_metrics_log_is_named_not_a_traceback(tmp_path):
    train(_recipe(), _loop(10), tmp_path)
    log = tmp_path / "metrics.csv"
    rows = log.read_text().splitlines()
    for damage in (rows[2].replace(rows[2].split(",")[1], "oops", 1), "\xff\xfe garbage"):
        log.write_text("\n".join([*rows[:2], damage, *rows[3:]]) + "\n", encoding="latin-1")
        with pytest.raises(UserError, match=r"metrics.csv: line \d+ is not a row of numbers.*checkpoint is fine"):
            resume_run(tmp_path, steps=12, device="cpu", progress=False)
