"""Training for a wall-clock budget instead of a step count.

    plan   = steps the budget allows (a few timed steps of a throw-away copy)
    probes = with K candidates: K seeds train the first `probe_fraction` of the plan each
    keep   = the candidate with the lowest validation MAE, resumed to the end of the plan

The learning rate decays linearly over the second half of the plan, so it reaches 0 when the
budget ends (a schedule in steps would otherwise stop half-decayed). Candidates exist because
a CycleGAN run at a few thousand steps can settle early in a bad mode that no later step
repairs (docs/mr2ct_ablation.md); picking among short starts by validation error is cheaper
than training each to the end.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from counterfeit.atomic import atomic_write_text
from counterfeit.errors import UserError

# The loop also logs, draws samples, validates and checkpoints: keep ~5 % of the budget for that.
LOOP_OVERHEAD = 0.05


def train_for_budget(recipe_name: str, options: dict[str, Any], seconds: float, run_dir: Path, *, seed: int = 0,
                     device: str = "auto", progress: bool = True, decay: bool = True, candidates: int = 1,
                     probe_fraction: float = 0.25) -> dict[str, Any]:
    """Train `recipe_name` with `options` for `seconds` of wall clock into a fresh `run_dir`.

    With `candidates` = K > 1, seeds `seed`, `seed + 1`, ... each train for `probe_fraction` of
    the planned steps; the one whose validation MAE is lowest then continues (an exact resume)
    to the end, and the others are deleted. The plan counts the probes' steps, so the total
    still fits `seconds`. `decay=False` keeps the learning rate constant. Returns steps, timing,
    the resolved config and, with candidates, each one's seed and validation MAE (also written
    to `run_dir/candidates.json`).
    """
    from counterfeit.device import resolve_device, seed_everything
    from counterfeit.train.loop import LoopConfig, train
    from counterfeit.train.recipe import recipe_class

    if candidates < 1:
        raise UserError(f"candidates must be >= 1, got {candidates}")
    if candidates > 1 and not 0 < probe_fraction < 1:
        raise UserError(f"probe_fraction must be in (0, 1), got {probe_fraction}")
    dev = resolve_device(device)
    cls = recipe_class(recipe_name)
    options = dict(options)
    step_budget = _affordable_steps(cls, options, dev, seconds)
    t_start = time.perf_counter()  # the budget is for training: reading data and timing steps come before it
    # the kept run does `steps`; each of the other K-1 candidates wastes probe_fraction of them
    steps = max(10, int(step_budget / (1 + (candidates - 1) * probe_fraction)))
    options.update(lr_decay_start=steps // 2, lr_decay_end=steps if decay else 0)
    run_dir = Path(run_dir)

    def loop_config(run_seed: int, stop_at: int, minutes: float | None) -> LoopConfig:
        return LoopConfig(steps=stop_at, minutes=minutes, seed=run_seed, log_every=10,
                          sample_every=max(steps // 5, 1), checkpoint_every=max(steps // 4, 1), progress=progress)

    def build(run_seed: int) -> Any:
        seed_everything(run_seed)
        return cls(cls.Config(**options), dev)

    def remaining_minutes() -> float:
        return max(seconds - (time.perf_counter() - t_start), 1.0) / 60

    def fresh(path: Path) -> Path:
        if path.exists():
            shutil.rmtree(path)  # a budgeted run starts fresh; use `train --resume` to continue a run
        return path

    started = time.time()
    tried: list[dict[str, Any]] = []
    train_seconds, wasted_steps = 0.0, 0
    if candidates == 1:
        recipe = build(seed)
        result = train(recipe, loop_config(seed, steps, remaining_minutes()), fresh(run_dir))
        kept_seed = seed
    else:
        probe = max(1, round(probe_fraction * steps))
        paths = {}
        for k in range(candidates):
            paths[seed + k] = fresh(run_dir.with_name(f"{run_dir.name}.candidate{k}"))
            probe_result = train(build(seed + k), loop_config(seed + k, probe, None), paths[seed + k])
            train_seconds += probe_result.seconds
            metric, value = _validation_mae(probe_result.last_metrics)
            tried.append({"seed": seed + k, "steps": probe_result.steps_done, "metric": metric, "value": value})
        kept_seed = min(tried, key=lambda t: t["value"])["seed"]
        for t in tried:
            t["kept"] = t["seed"] == kept_seed
            if not t["kept"]:
                wasted_steps += t["steps"]
                shutil.rmtree(paths[t["seed"]])
        paths[kept_seed].rename(fresh(run_dir))
        final_loop = loop_config(kept_seed, steps, remaining_minutes())
        _record_loop(run_dir, final_loop)  # so that `train --resume` continues with the full plan
        recipe = build(kept_seed)
        result = train(recipe, final_loop, run_dir, resume=True)
        atomic_write_text(run_dir / "candidates.json", json.dumps(tried, indent=2) + "\n")
    train_seconds += result.seconds
    return {"recipe": cls.name, "started": started, "steps": result.steps_done, "planned_steps": steps,
            "steps_all_candidates": result.steps_done + wasted_steps, "seconds": train_seconds,
            "s_per_step": train_seconds / max(result.steps_done + wasted_steps, 1),
            "stopped_early": result.stopped_early, "data_wait_fraction": result.data_wait_fraction,
            "seed": kept_seed, "candidates": tried, "config": asdict(recipe.config)}


def _validation_mae(metrics: dict[str, float]) -> tuple[str, float]:
    """The run's validation MAE (HU) and its key; candidates cannot be compared without one."""
    keys = sorted(k for k in metrics if k.endswith("_mae_hu"))
    if not keys:
        raise UserError("choosing among candidates needs held-out cases with a reference CT "
                        "(the phantom's val split, or MR and CT of a subject on the same grid)")
    return keys[0], float(metrics[keys[0]])


def _record_loop(run_dir: Path, loop: Any) -> None:
    from counterfeit.train.loop import read_run_config

    config = read_run_config(run_dir)
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
