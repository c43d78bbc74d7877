"""Training for a wall-clock budget instead of a step count.

    plan     = steps the budget allows, from a few timed steps of a throw-away copy
    start    = the first part of the plan (10 %; with K candidates, K seeds train a quarter each)
    choose   = with candidates, the one with the lowest validation MAE; the others are deleted
    re-plan  = the steps the rest of the budget allows at the step time measured in the start;
               resume (exactly) to 45 % of that plan, re-plan once more from the step time measured there
    finish   = resume to the end of the last plan

The learning rate decays linearly over the second half of the plan, so it reaches 0 when the
budget ends (a schedule in steps would otherwise stop half-decayed). It is constant during the
start, which is what lets the plan change there without changing a step already taken. A few
timed steps alone misjudge a long run by 10-40 % (first steps run slower or faster than later
ones, and a second process starting on the other core slows them), hence the re-plan.
Candidates exist because a CycleGAN run at a few thousand steps can settle early in a bad mode
that no later step repairs (docs/mr2ct_ablation.md); picking among short starts by validation
error is cheaper than training each to the end.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from counterfeit.atomic import atomic_write_text
from counterfeit.errors import UserError

# The loop also logs, draws samples, validates and checkpoints: 7 % of a 4-minute CycleGAN run's time
# (docs/mr2ct_ablation.md, section 4), a little less of longer runs. Kept aside from the time for steps.
LOOP_OVERHEAD = 0.07
REPLAN_AT = 0.1  # fraction of the first plan after which a single run re-plans
SECOND_REPLAN_AT = 0.45  # fraction of the re-planned plan after which it re-plans once more (decay starts at 0.5)


def train_for_budget(recipe_name: str, options: dict[str, Any], seconds: float, run_dir: Path, *, seed: int = 0,
                     device: str = "auto", progress: bool = True, decay_from: float = 0.5, candidates: int = 1,
                     probe_fraction: float = 0.25, keep_best: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train `recipe_name` with `options` for `seconds` of wall clock into `run_dir`.

    The run trains the first 10 % of a plan estimated from a few timed steps, re-plans from the
    step time it measured, resumes (exactly) to 45 % of the new plan, re-plans once more, and
    resumes to the end. With `candidates` = K > 1, seeds `seed`, `seed + 1`, ... each train the
    first `probe_fraction` of the plan; the one whose validation MAE is lowest is the one
    resumed, and the others are deleted. The plan counts the probes' steps, so the total still
    fits `seconds`. The learning rate decays linearly from `decay_from` of the plan to 0 at its end (1: constant;
    at least 0.5, so that both re-plans fall before the decay). Returns steps, timing, the resolved config and, with
    candidates, each one's seed and validation MAE (also written to `run_dir/candidates.json`). `keep_best`
    validates 8 times per plan instead of 4 and keeps the checkpoint with the lowest validation MAE, which inference
    then uses (`LoopConfig.keep_best`). A `run_dir` that holds a run is refused unless `overwrite`
    (`loop.claim_run_dir`: other files in it stay).
    """
    from counterfeit.device import resolve_device
    from counterfeit.train.checkpoint import read_best
    from counterfeit.train.loop import LoopConfig, RunStopped, train
    from counterfeit.train.recipe import recipe_class
    from counterfeit.train.recipes.mr2ct_common import decay_schedule

    _check_candidates(candidates, probe_fraction)
    if not 0.5 <= decay_from <= 1.0:
        raise UserError(f"a wall-clock budget re-plans its steps twice in the first half, at a constant learning rate: "
                        f"the decay (--decay-from) can start at 0.5 of the plan or later (1: none), got {decay_from}")
    if not 0 < seconds < math.inf:
        raise UserError(f"--minutes must be > 0, got {seconds / 60:g}")
    run_dir = Path(run_dir).resolve()  # `--out .` has a name to put candidates beside
    _claim(run_dir, overwrite)
    dev = resolve_device(device)
    cls = recipe_class(recipe_name)
    step_budget = _affordable_steps(cls, dict(options), dev, seconds)
    t_start = time.perf_counter()  # the budget is for training: reading data and timing steps come before it
    # the kept run does `steps`; each of the other K-1 candidates costs probe_fraction of them
    first_plan = steps = max(10, int(step_budget / (1 + (candidates - 1) * probe_fraction)))
    start = max(1, round((probe_fraction if candidates > 1 else REPLAN_AT) * steps))

    def configured(plan: int) -> dict[str, Any]:
        return {**options, **decay_schedule(plan, decay_from)}

    def loop_config(run_seed: int, stop_at: int, plan: int, minutes: float | None) -> LoopConfig:
        return LoopConfig(steps=stop_at, minutes=minutes, seed=run_seed, log_every=10,
                          sample_every=max(plan // 5, 1), checkpoint_every=max(plan // 4, 1), progress=progress,
                          metrics_every=max(plan // 8, 1) if keep_best else 0, keep_best=keep_best)

    def build(run_seed: int, plan: int) -> Any:
        return _seeded(cls, cls.Config(**configured(plan)), dev, run_seed)

    def record_whole_plan() -> None:  # a run stopped in its first phase resumes (`train --resume`) to the whole plan
        _record_plan(run_dir, cls.Config(**configured(steps)), loop_config(seed, steps, steps, None))

    started = time.time()
    begun = _start_candidates(lambda s: build(s, steps), lambda s, left: loop_config(s, start, steps, left),
                              range(seed, seed + candidates), run_dir, seconds / 60, on_stop=record_whole_plan)
    train_seconds, kept_seed = begun.seconds, begun.kept_seed

    # Re-plan from the measured step time and go on to just before the LR decays; re-plan again from the
    # (longer, steadier) measurement of that stretch and finish. Both changes fall in the constant-LR half.
    done = start if begun.tried else begun.steps  # a single run may have stopped short of `start` (its time ran out)
    seconds_per_step = begun.step_seconds / max(begun.steps, 1)
    for last in (False, True):
        left = seconds - (time.perf_counter() - t_start)
        steps = _replanned_steps(done, seconds_per_step, left)
        stop_at = steps if last else int(SECOND_REPLAN_AT * steps)
        if stop_at <= done:
            continue
        loop = loop_config(kept_seed, stop_at, steps, max(left, 1.0) / 60)
        recipe = build(kept_seed, steps)
        # `train --resume` later continues with the whole plan
        _record_plan(run_dir, recipe.config, replace(loop, steps=steps))
        result = train(recipe, loop, run_dir, resume=True)
        RunStopped.check(result)
        train_seconds += result.seconds
        if result.steps_done > done:
            seconds_per_step = result.step_seconds / (result.steps_done - done)
        done = result.steps_done
        if result.stopped_early:
            break
    tried = begun.tried
    wasted = sum(t["steps"] for t in tried if not t["kept"])
    return {"recipe": cls.name, "started": started, "steps": result.steps_done, "planned_steps": steps,
            "first_plan": first_plan, "steps_all_candidates": result.steps_done + wasted, "seconds": train_seconds,
            "s_per_step": train_seconds / max(result.steps_done + wasted, 1),
            "stopped_early": result.stopped_early, "data_wait_fraction": result.data_wait_fraction,
            "seed": kept_seed, "candidates": tried, "config": asdict(recipe.config),
            **({"best": read_best(run_dir)} if keep_best else {})}


def train_with_candidates(recipe_name: str, config: Any, loop: Any, run_dir: Path, *, candidates: int,
                          device: str = "auto", probe_fraction: float = 0.25, overwrite: bool = False) -> Any:
    """A run of `loop.steps` steps whose seed is the best of `candidates`: seeds `loop.seed`, `loop.seed + 1`, ...
    each train the first `probe_fraction` of the steps (in `<run_dir>.candidateK`), the one with the lowest
    validation MAE goes on to the end in `run_dir`, the others are deleted. The kept run is the run its seed gives
    alone, bitwise (resuming is exact). `loop.minutes` bounds all of it. Returns the loop's `TrainResult` of the
    whole run (from step 0, with every candidate's training time), with `candidates.json` in `run_dir`.
    """
    from counterfeit.device import resolve_device
    from counterfeit.train.loop import RunStopped, train
    from counterfeit.train.recipe import recipe_class

    _check_candidates(candidates, probe_fraction)
    if loop.steps < 2:
        raise UserError(f"--candidates needs --steps of at least 2 (a start shorter than the run), got {loop.steps}")
    run_dir = Path(run_dir).resolve()  # `--out .` has a name to put candidates beside
    _claim(run_dir, overwrite)
    dev = resolve_device(device)
    cls = recipe_class(recipe_name)
    t_start = time.perf_counter()
    probe = min(max(1, round(probe_fraction * loop.steps)), loop.steps - 1)
    begun = _start_candidates(lambda s: _seeded(cls, config, dev, s),
                              lambda s, left: replace(loop, steps=probe, seed=s, minutes=left),
                              range(loop.seed, loop.seed + candidates), run_dir, loop.minutes)
    minutes = loop.minutes - (time.perf_counter() - t_start) / 60 if loop.minutes is not None else None
    rest = replace(loop, seed=begun.kept_seed, minutes=None if minutes is None else max(minutes, 1 / 60))
    _record_plan(run_dir, config, replace(rest, minutes=loop.minutes))
    result = train(_seeded(cls, config, dev, begun.kept_seed), rest, run_dir, resume=True)
    RunStopped.check(result)
    return replace(result, first_step=0, seconds=result.seconds + begun.seconds)


@dataclass
class _CandidatesStart:
    kept_seed: int
    tried: list[dict[str, Any]]  # per candidate: seed, steps, metric, value, kept (empty for a single seed)
    seconds: float  # training time of all candidates
    step_seconds: float  # of which in steps
    steps: int  # steps of all candidates


def _start_candidates(build: Callable[[int], Any], loop: Callable[[int, float | None], Any], seeds: Sequence[int],
                      run_dir: Path, minutes: float | None, on_stop: Callable[[], None] = lambda: None
                      ) -> _CandidatesStart:
    """Train each seed's run to `loop(seed, minutes_left).steps`; with several seeds, each in `<run_dir>.candidateK`,
    and the one with the lowest validation MAE moves into `run_dir` (the others are deleted). One seed trains in
    `run_dir` itself. `minutes` bounds all of them together. On Ctrl-C or SIGTERM a single seed's run calls `on_stop`
    (to record the whole plan) and stops resumable; candidates are deleted, since none of them is a run to resume."""
    from counterfeit.train.loop import RunStopped, train

    seeds = list(seeds)
    several = len(seeds) > 1
    paths = {s: _fresh(run_dir.with_name(f"{run_dir.name}.candidate{k}")) if several else run_dir
             for k, s in enumerate(seeds)}
    tried: list[dict[str, Any]] = []
    seconds = step_seconds = 0.0
    steps = 0
    t0 = time.perf_counter()
    for k, s in enumerate(seeds):
        left = None if minutes is None else max(minutes - (time.perf_counter() - t0) / 60, 1 / 60)
        probe = loop(s, left)
        begun = train(build(s), probe, paths[s])
        try:
            RunStopped.check(begun)  # Ctrl-C or SIGTERM: stop here, not in the next phase
        except RunStopped as stop:
            if not several:
                on_stop()
                raise
            for path in paths.values():
                shutil.rmtree(path, ignore_errors=True)
            raise RunStopped(f"{run_dir}: stopped by a signal while starting candidate {k + 1} of {len(seeds)}; "
                             "no run to resume (the candidates' folders are removed): run the command again",
                             stop.exit_code) from None
        seconds, step_seconds, steps = seconds + begun.seconds, step_seconds + begun.step_seconds, steps + begun.steps_done
        if several:
            if begun.steps_done < probe.steps:
                for path in paths.values():
                    shutil.rmtree(path, ignore_errors=True)
                raise UserError(f"the time ran out while starting candidate {k + 1} of {len(seeds)} (step "
                                f"{begun.steps_done} of {probe.steps}): give more --minutes or fewer --candidates")
            metric, value = _validation_mae(begun.last_metrics)
            tried.append({"seed": s, "steps": begun.steps_done, "metric": metric, "value": value})
    kept_seed = min(tried, key=lambda t: t["value"])["seed"] if tried else seeds[0]
    for t in tried:
        t["kept"] = t["seed"] == kept_seed
        if not t["kept"]:
            shutil.rmtree(paths[t["seed"]])
    if tried:
        _adopt(paths[kept_seed], run_dir)
        atomic_write_text(run_dir / "candidates.json", json.dumps(tried, indent=2) + "\n")
    return _CandidatesStart(kept_seed, tried, seconds, step_seconds, steps)


def _check_candidates(candidates: int, probe_fraction: float) -> None:
    if candidates < 1:
        raise UserError(f"candidates must be >= 1, got {candidates}")
    if candidates > 1 and not 0 < probe_fraction <= 0.5:
        raise UserError(f"probe_fraction must be in (0, 0.5] (the constant-LR half of the plan), got {probe_fraction}")


def _seeded(cls: type, config: Any, device: Any, seed: int) -> Any:
    """The recipe as a run of `seed` builds it (network initialisation draws from the seeded generators)."""
    from counterfeit.device import seed_everything

    seed_everything(seed)
    return cls(copy.deepcopy(config), device)


def _claim(run_dir: Path, overwrite: bool) -> None:
    """As a fresh `train` claims its folder (`loop.claim_run_dir`); a candidates.json there is stale once it may."""
    from counterfeit.train.loop import claim_run_dir

    claim_run_dir(run_dir, overwrite)
    (run_dir / "candidates.json").unlink(missing_ok=True)


def _fresh(path: Path) -> Path:
    """A candidate's folder, emptied of what a stopped earlier attempt left; anything else there is refused."""
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: in the way of a candidate's folder, and not one left by an earlier attempt; "
                            "move it or choose another --out")
        shutil.rmtree(path)
    return path


def _adopt(candidate: Path, run_dir: Path) -> None:
    """Move the kept candidate's run (checkpoints, logs, config) into `run_dir`, which may hold other files."""
    from counterfeit.train.checkpoint import CHECKPOINT_DIR
    from counterfeit.train.loop import RUN_OUTPUTS

    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (CHECKPOINT_DIR, *RUN_OUTPUTS, "config.json"):
        if (candidate / name).exists():
            os.replace(candidate / name, run_dir / name)
    shutil.rmtree(candidate)


def _replanned_steps(done: int, seconds_per_step: float, seconds_left: float) -> int:
    """The whole plan, re-estimated from the step time measured so far and the time left.

    Never shorter than twice the steps done, so that those stay inside its constant-LR half (if
    the steps got that much slower, the loop's wall-clock limit stops the run before the end).
    """
    more = int((1 - LOOP_OVERHEAD) * max(seconds_left, 0.0) / max(seconds_per_step, 1e-9))
    return max(done + more, 2 * done, 10)


def _validation_mae(metrics: dict[str, float]) -> tuple[str, float]:
    """The run's validation MAE (HU) and its key; candidates cannot be compared without one."""
    from counterfeit.train.recipe import validation_mae

    found = validation_mae(metrics)
    if found is None:
        raise UserError("choosing among candidates needs held-out cases with a reference CT "
                        "(the phantom's val split, or --val-subjects N of --mr/--ct folders)")
    return found


def _record_plan(run_dir: Path, recipe_config: Any, loop: Any) -> None:
    from counterfeit.train.loop import read_run_config

    config = read_run_config(run_dir)
    config["config"] = asdict(recipe_config)
    config["loop"] = asdict(loop)
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")


def _affordable_steps(cls: type, options: dict[str, Any], device: Any, seconds: float) -> int:
    """Steps that fit `seconds`, from a few timed steps of a throw-away copy."""
    import torch

    from counterfeit.train.loop import step_rng

    recipe = cls(cls.Config(**options), device)
    recipe.setup_data()
    recipe.train_mode(True)
    recipe.train_step(recipe.sample_batch(step_rng(0, 0)), 0)  # warm-up (allocations, first-call costs)
    # At least 2 timed steps, more while they take under 3 s (up to 10): a steadier estimate for fast steps.
    n, t0 = 0, time.perf_counter()
    while n < 2 or (n < 10 and time.perf_counter() - t0 < 3.0):
        n += 1
        recipe.train_step(recipe.sample_batch(step_rng(0, n)), n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / n
    return max(10, int((1 - LOOP_OVERHEAD) * seconds / per_step))
