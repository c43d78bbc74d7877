"""Training for a wall-clock budget: the step plan, and candidates chosen by validation MAE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from counterfeit.data.phantom import generate_dataset
from counterfeit.errors import UserError
from counterfeit.train import budget
from counterfeit.train import checkpoint as ckpt
from counterfeit.train.loop import load_run, read_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> dict:
    root = generate_dataset(tmp_path_factory.mktemp("phantom"), 4, shape=(8, 32, 32), seed=2, workers=1)
    return dict(phantom=str(root), image_size=32, batch_size=1, ngf=4, n_blocks=1, ndf=4, d_crop=24,
                preview_subjects=1)


def _plan(monkeypatch, steps: int, replanned: int | None = None) -> None:
    # the plans normally come from timing steps: fix them, so that runs can be compared step for step
    monkeypatch.setattr(budget, "_affordable_steps", lambda *args: steps)
    monkeypatch.setattr(budget, "_replanned_steps", lambda *args: replanned or steps)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    recipe = load_run(run_dir, "cpu")
    return {f"{n}.{k}": v for n, net in recipe.nets.items() for k, v in net.state_dict().items()}


def test_candidates_keep_the_lowest_validation_mae_and_resume_exactly(options, tmp_path, monkeypatch):
    _plan(monkeypatch, 18, 12)  # 3 candidates, probes of 1/4: the kept run gets 18 / (1 + 2 / 4) = 12 steps
    got = budget.train_for_budget("cyclegan", options, 600, tmp_path / "run", seed=5, progress=False,
                                  candidates=3, probe_fraction=0.25)
    assert got["planned_steps"] == 12 and got["steps"] == 12 and got["stopped_early"] is None
    assert got["steps_all_candidates"] == 12 + 2 * 3
    tried = json.loads((tmp_path / "run" / "candidates.json").read_text())
    assert [t["seed"] for t in tried] == [5, 6, 7] and all(t["steps"] == 3 for t in tried)
    assert {t["metric"] for t in tried} == {"val_mae_hu"}
    kept = [t for t in tried if t["kept"]]
    assert len(kept) == 1 and kept[0]["value"] == min(t["value"] for t in tried)
    assert got["seed"] == kept[0]["seed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the other candidates are gone
    loop = read_run_config(tmp_path / "run")["loop"]
    assert loop["steps"] == 12 and loop["seed"] == got["seed"]  # `train --resume` continues the full plan

    # The kept run is exactly the run its seed gives without candidates (same plan, same schedule).
    _plan(monkeypatch, 12)
    alone = budget.train_for_budget("cyclegan", options, 600, tmp_path / "alone", seed=got["seed"], progress=False)
    assert alone["planned_steps"] == 12 and alone["candidates"] == []
    a, b = _weights(tmp_path / "run"), _weights(tmp_path / "alone")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), k


def test_replanning_equals_planning_right_from_the_start(options, tmp_path, monkeypatch):
    _plan(monkeypatch, 10, 16)  # timed steps promised 10; the first step's time says 16 fit
    got = budget.train_for_budget("cyclegan", options, 600, tmp_path / "replanned", seed=1, progress=False)
    assert (got["first_plan"], got["planned_steps"], got["steps"]) == (10, 16, 16)
    config = read_run_config(tmp_path / "replanned")
    assert (config["config"]["lr_decay_start"], config["config"]["lr_decay_end"], config["loop"]["steps"]) == (8, 16, 16)
    # the learning rate follows the new plan, not the one the first steps were started with (which ends at 10)
    state = ckpt.read_state_file(tmp_path / "replanned" / "checkpoints" / "step_00000012" / "state.pt")
    assert state["optimizers"]["G"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * (1 - 4 / 8))
    _plan(monkeypatch, 16, 16)
    budget.train_for_budget("cyclegan", options, 600, tmp_path / "planned", seed=1, progress=False)
    a, b = _weights(tmp_path / "replanned"), _weights(tmp_path / "planned")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), k


def test_replanned_steps_fill_the_time_left():
    assert budget._replanned_steps(10, 0.1, 100.0) == 10 + 930  # 93 % of the time left, at 0.1 s per step
    assert budget._replanned_steps(100, 1.0, 10.0) == 200  # never less than twice the steps done


def test_candidates_need_a_reference_to_choose(options, tmp_path, monkeypatch):
    _plan(monkeypatch, 12)
    with pytest.raises(UserError, match="reference CT"):
        budget.train_for_budget("cyclegan", {**options, "preview_subjects": 0}, 600, tmp_path / "run",
                                progress=False, candidates=2)
    with pytest.raises(UserError, match="candidates must be >= 1"):
        budget.train_for_budget("cyclegan", options, 600, tmp_path / "run", progress=False, candidates=0)
    with pytest.raises(UserError, match="probe_fraction"):
        budget.train_for_budget("cyclegan", options, 600, tmp_path / "run", progress=False, candidates=2,
                                probe_fraction=1.0)


def test_keep_best_keeps_the_lowest_validation_mae_checkpoint_across_resumes(options, tmp_path, monkeypatch):
    from counterfeit.train.recipes.cyclegan import CycleGANRecipe

    # a validation MAE that is lowest at step 4 and worse ever after, so that checkpoint must outlive pruning
    monkeypatch.setattr(CycleGANRecipe, "metrics", lambda self, step: {"val_mae_hu": 100.0 - step if step <= 4 else 100.0 + step})
    _plan(monkeypatch, 16)  # evaluations every 16 // 8 = 2 steps; the budget resumes at steps 2 and 7
    got = budget.train_for_budget("cyclegan", options, 600, tmp_path / "run", seed=3, progress=False, keep_best=True)
    run = tmp_path / "run"
    assert got["steps"] == 16 and got["best"] == {"step": 4, "metric": "val_mae_hu", "value": 96.0}
    assert ckpt.read_best(run) == got["best"]
    steps = [c.step for c in ckpt.list_checkpoints(run)]
    assert 4 in steps and steps[-1] == 16 and len(steps) == 4  # the newest 3, and the best
    assert read_run_config(run)["loop"]["keep_best"] is True and read_run_config(run)["loop"]["metrics_every"] == 2

    best, latest = _weights(run), {f"{n}.{k}": v for n, net in load_run(run, "cpu", weights="latest").nets.items()
                                   for k, v in net.state_dict().items()}
    state4 = {}
    for name in load_run(run, "cpu").nets:
        from safetensors.torch import load_file

        state4.update({f"{name}.{k}": v for k, v in load_file(str(run / "checkpoints" / "step_00000004" / f"{name}.safetensors")).items()})
    assert all(torch.equal(best[k], state4[k]) for k in best)
    assert any(not torch.equal(best[k], latest[k]) for k in best)
    assert load_run(run, "cpu").checkpoint_choice == "best: lowest val_mae_hu, 96"  # what synthesize prints
    damaged = run / "checkpoints" / "step_00000004" / "Syn_CT.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-8] + bytes(8))
    with pytest.warns(UserWarning, match="best checkpoint is unusable"):
        fallback = load_run(run, "cpu")
    assert fallback.checkpoint.name == "step_00000016"
    assert fallback.checkpoint_choice == "newest: the best checkpoint is unusable"
    with pytest.raises(UserError, match="weights must be one of"):
        load_run(run, "cpu", weights="last")

    # a fresh run in the same folder is refused; with overwrite it replaces the old run, best record included
    from counterfeit.train.loop import LoopConfig, train

    recipe = CycleGANRecipe(CycleGANRecipe.Config(**options), torch.device("cpu"))
    with pytest.raises(UserError, match="up to step 16.*--resume.*--overwrite"):
        train(recipe, LoopConfig(steps=2, progress=False, tensorboard=False), run)
    assert ckpt.read_best(run) == got["best"]  # the refusal touched nothing
    train(recipe, LoopConfig(steps=2, progress=False, tensorboard=False), run, overwrite=True)
    assert ckpt.read_best(run) is None and ckpt.best_checkpoint(run) is None
    assert [c.step for c in ckpt.list_checkpoints(run)] == [2]


def test_a_signal_stops_the_whole_budgeted_run(options, tmp_path, monkeypatch, signal_at_step):
    """Ctrl-C or SIGTERM during any phase stops the run with a checkpoint; the next phase does not start (the demo
    would otherwise go on to evaluate an unfinished model)."""
    import signal

    from counterfeit.train.loop import RunStopped
    from counterfeit.train.recipes.cyclegan import CycleGANRecipe

    _plan(monkeypatch, 20)
    signal_at_step(CycleGANRecipe, 3, signal.SIGTERM)  # handled by the loop: it finishes this step and saves
    with pytest.raises(RunStopped, match="stopped by a signal") as stopped:
        budget.train_for_budget("cyclegan", options, 600, tmp_path / "run", progress=False)
    assert stopped.value.exit_code == 143
    assert [c.step for c in ckpt.list_checkpoints(tmp_path / "run")][-1] == 4
    import pickle

    again = pickle.loads(pickle.dumps(stopped.value))  # from the demo's worker processes, with its exit code
    assert again.exit_code == 143 and str(again) == str(stopped.value)


# --- the train commands: --candidates and a --minutes plan -----------------------------------------------------


def _cli(options: dict, out: Path, *extra: str, command: str = "cyclegan"):
    from typer.testing import CliRunner

    from counterfeit.cli import app

    tiny = ["--phantom", options["phantom"], "--image-size", "32", "--ngf", "4", "--blocks", "1", "--ndf", "4",
            "--d-crop", "24", "--no-progress", "--device", "cpu"]
    return CliRunner().invoke(app, ["train", command, "--out", str(out), *tiny, *extra])


def test_train_command_candidates_keep_the_best_seed_of_an_otherwise_unchanged_run(options, tmp_path):
    got = _cli(options, tmp_path / "run", "--steps", "8", "--candidates", "2", "--seed", "3")
    assert got.exit_code == 0, got.output
    tried = json.loads((tmp_path / "run" / "candidates.json").read_text())
    assert [t["seed"] for t in tried] == [3, 4] and [t["steps"] for t in tried] == [2, 2]
    kept = next(t for t in tried if t["kept"])
    assert kept["value"] == min(t["value"] for t in tried)
    assert f"seed {kept['seed']} {kept['value']:.1f} HU (kept)" in got.output and "8 steps in" in got.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the other candidate is gone
    loop = read_run_config(tmp_path / "run")["loop"]
    assert loop["steps"] == 8 and loop["seed"] == kept["seed"]  # `--resume` goes on from the kept seed's plan
    # the kept run is the run of its seed alone, bitwise
    alone = _cli(options, tmp_path / "alone", "--steps", "8", "--seed", str(kept["seed"]))
    assert alone.exit_code == 0, alone.output
    a, b = _weights(tmp_path / "run"), _weights(tmp_path / "alone")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_command_minutes_alone_plans_the_steps_and_the_decay(options, tmp_path, monkeypatch):
    _plan(monkeypatch, 12)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # e.g. the phantom a train command generated into --out
    got = _cli(options, out, "--minutes", "5", "--decay-from", "0.75", "--checkpoint-every", "3", command="paired")
    assert got.exit_code == 0, got.output
    assert "12 steps, planned to fill 5 min" in got.output and "--checkpoint-every ignored" in got.output
    config = read_run_config(out)
    assert (config["config"]["lr_decay_start"], config["config"]["lr_decay_end"], config["loop"]["steps"]) == (9, 12, 12)
    state = ckpt.read_state_file(ckpt.list_checkpoints(out)[-1].path / "state.pt")
    assert state["optimizers"]["G"]["param_groups"][0]["lr"] == 0.0  # decayed to 0 at the end of the budget
    refused = _cli(options, out, "--minutes", "5", command="paired")
    assert isinstance(refused.exception, UserError) and "already holds a training run" in str(refused.exception)
    assert _cli(options, out, "--minutes", "5", "--overwrite", command="paired").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite clears the run, not the folder


@pytest.mark.parametrize("extra, message", [
    (["--candidates", "2", "--resume", "RUN"], "a resumed run goes on with its own"),
    (["--minutes", "1", "--compile"], "--compile with a --minutes plan"),
    (["--minutes", "1", "--decay-from", "0.3"], "--decay-from"),
])
def test_train_command_plan_and_candidates_errors(options, tmp_path, monkeypatch, extra, message):
    _plan(monkeypatch, 4)
    extra = [str(tmp_path / "run") if e == "RUN" else e for e in extra]
    got = _cli(options, tmp_path / "run", *extra)
    assert isinstance(got.exception, UserError) and message in str(got.exception), got.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_command_candidates_need_one_process_and_a_reference(options, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from counterfeit.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    got = _cli(options, tmp_path / "run", "--candidates", "2")
    assert isinstance(got.exception, UserError) and "under torchrun give --steps" in str(got.exception)
    monkeypatch.delenv("WORLD_SIZE")
    folders = ["--mr", options["phantom"], "--ct", str(tmp_path)]
    got = CliRunner().invoke(app, ["train", "cyclegan", "--out", str(tmp_path / "x"), *folders, "--candidates", "2"])
    assert isinstance(got.exception, UserError) and "add --val-subjects" in str(got.exception)
    same = ["--mr", options["phantom"], "--ct", options["phantom"]]
    got = CliRunner().invoke(app, ["train", "cyclegan", "--out", str(tmp_path / "x"), *same])
    assert isinstance(got.exception, UserError) and "--mr and --ct are the same folder" in str(got.exception)


def test_train_command_names_only_the_outputs_a_run_wrote(options, tmp_path):
    got = _cli(options, tmp_path / "zero", "--steps", "0", command="paired")
    assert got.exit_code == 0, got.output
    line = next(line for line in got.output.splitlines() if line.startswith("results in"))
    assert "loss.png" not in line and "config.json" in line  # no step, no loss curve
    got = _cli(options, tmp_path / "two", "--steps", "2", command="paired")
    line = next(line for line in got.output.splitlines() if line.startswith("results in"))
    assert "loss.png" in line and "checkpoints/" in line and "candidates.json" not in line


def test_candidates_that_cannot_finish_their_start_leave_nothing_behind(options, tmp_path, signal_at_step):
    import signal

    from counterfeit.train.loop import RunStopped
    from counterfeit.train.recipes.cyclegan import CycleGANRecipe

    # the time limit runs out during the candidates: a clear error, not "needs held-out cases", and no folders left
    got = _cli(options, tmp_path / "short", "--steps", "4000", "--candidates", "2", "--minutes", "0.002")
    assert isinstance(got.exception, UserError) and "time ran out while starting candidate 1 of 2" in str(got.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # --steps too small to start candidates, and a budget of 0 minutes, are refused before anything is touched
    got = _cli(options, tmp_path / "one", "--steps", "1", "--candidates", "2")
    assert isinstance(got.exception, UserError) and "--steps of at least 2" in str(got.exception)
    got = _cli(options, tmp_path / "none", "--minutes", "0")
    assert isinstance(got.exception, UserError) and "--minutes must be > 0" in str(got.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    # Ctrl-C while the candidates start: there is no run to resume, so say so and remove them
    signal_at_step(CycleGANRecipe, 1, signal.SIGINT)
    got = _cli(options, tmp_path / "stopped", "--steps", "40", "--candidates", "2")
    assert isinstance(got.exception, RunStopped) and got.exception.exit_code == 130
    assert "while starting candidate 1 of 2; no run to resume" in str(got.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_budgeted_run_stopped_in_its_first_phase_resumes_to_its_whole_plan(options, tmp_path, monkeypatch,
                                                                               signal_at_step):
    import signal

    from counterfeit.train.loop import RunStopped
    from counterfeit.train.recipes.cyclegan import CycleGANRecipe

    _plan(monkeypatch, 40)  # the first phase is 10 % of it: 4 steps
    signal_at_step(CycleGANRecipe, 1, signal.SIGTERM)
    with pytest.raises(RunStopped):
        budget.train_for_budget("cyclegan", options, 600, tmp_path / "run", progress=False)
    config = read_run_config(tmp_path / "run")
    assert config["loop"]["steps"] == 40 and config["config"]["lr_decay_end"] == 40  # not the phase's 4


def test_candidates_beside_a_run_folder_given_as_dot(options, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    got = _cli(options, Path("."), "--steps", "4", "--candidates", "2", command="paired")
    assert got.exit_code == 0, got.output
    assert (project / "candidates.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["project"]
