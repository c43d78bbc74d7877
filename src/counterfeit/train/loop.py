"""The training loop shared by every recipe, readable top to bottom.

    for step in range(start, steps):
        batch  = recipe.sample_batch(rng(seed, step))   # prefetched in a thread, sharded by rank
        losses = recipe.train_step(batch, step)          # the science lives in the recipe
        schedulers.step()
        log / evaluate / draw samples / checkpoint at their intervals
        (keep_best: also checkpoint whenever the validation MAE reaches a new low, and never prune that one)
        stop early on a wall-clock budget, Ctrl-C or SIGTERM (after saving a checkpoint)

Everything a run writes lands in its run directory:
config.json, metrics.csv, tensorboard/, samples/, loss.png, checkpoints/.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

import counterfeit
from counterfeit.atomic import atomic_write_text, ensure_folder
from counterfeit.device import resolve_device, seed_everything
from counterfeit.errors import UserError
from counterfeit.train import checkpoint as ckpt
from counterfeit.train.compiled import compile_for_training
from counterfeit.train.distributed import (
    DistContext,
    any_rank,
    barrier,
    broadcast_module,
    gather_to_main,
    init_distributed,
    is_main_process,
    launched_world_size,
    sync_gradients_before_step,
)
from counterfeit.train.metrics_log import MetricsLog
from counterfeit.train.recipe import Recipe, config_from_dict, recipe_class, shard_batch, validation_mae


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


SIGNAL_EXIT_CODES = {"interrupt": 130, "terminated": 143}  # TrainResult.stopped_early -> the shell's 128 + signal


class RunStopped(UserError):
    """A signal (Ctrl-C, SIGTERM) stopped a run that something else was to go on with (a budget's next phase, the
    demo's evaluation): it saved a checkpoint, and what follows must not use the unfinished model."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple:  # picklable with its exit code (the demo trains in worker processes)
        return RunStopped, (str(self), self.exit_code)

    @classmethod
    def check(cls, result: "TrainResult") -> None:
        """Raise if `result` was stopped by a signal."""
        code = SIGNAL_EXIT_CODES.get(result.stopped_early or "")
        if code is not None:
            raise cls(f"{result.run_dir}: stopped by a signal ({result.stopped_early}) at step {result.steps_done}, "
                      "with a checkpoint to resume from", code)


@dataclass
class LoopConfig:
    """Options common to every recipe's training."""

    steps: int = 1000
    minutes: float | None = None  # wall-clock budget for this invocation; stops early (with a checkpoint)
    seed: int = 0
    log_every: int = 10
    metrics_every: int = 0  # 0: only at checkpoints
    sample_every: int = 200  # 0: only at the end
    checkpoint_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 3
    progress: bool = True
    tensorboard: bool = True
    prefetch: int = 2  # batches prepared ahead in a background thread (0: inline)
    compile: bool = False  # torch.compile the networks' training forwards (a minute per network at the first step)
    # checkpoint each new low of the validation MAE (recipe.validation_mae) and keep it: `load_run` then uses it
    keep_best: bool = False

    def validate(self) -> None:
        if self.steps < 0:
            raise UserError(f"--steps must be >= 0, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise UserError(f"--minutes must be > 0, got {self.minutes}")
        for name in ("log_every", "metrics_every", "sample_every", "checkpoint_every", "prefetch"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0")
        if self.log_every == 0:
            raise UserError("log_every must be >= 1")


@dataclass
class TrainResult:
    run_dir: Path
    steps_done: int
    seconds: float
    last_losses: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: str | None = None  # "budget" | "interrupt" (Ctrl-C, SIGINT) | "terminated" (SIGTERM) | None
    data_wait_fraction: float = 0.0
    step_seconds: float = 0.0  # inside the steps (batch wait, train_step, schedulers): no logging, checkpoints, metrics
    first_step: int = 0  # the step this call started from (> 0 when it resumed)


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The numpy generator behind step `step`'s batch: the same on every rank and after resume."""
    return np.random.default_rng([seed, step])


class _Prefetcher:
    """Prepares the batches of the coming steps in a background thread (numpy work releases the GIL)."""

    def __init__(self, recipe: Recipe, seed: int, start: int, stop: int, ctx: DistContext, depth: int) -> None:
        self._make = lambda s: shard_batch(recipe.sample_batch(step_rng(seed, s)), ctx.rank, ctx.world)
        self._next = start
        self._depth = depth
        if depth > 0:
            self._q: queue.Queue = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._work, args=(start, stop), daemon=True)
            self._thread.start()

    def _work(self, start: int, stop: int) -> None:
        for s in range(start, stop):
            try:
                item: Any = (s, self._make(s), None)
            except BaseException as err:  # hand the error to the training thread
                item = (s, None, err)
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or item[2] is not None:
                return

    def get(self, step: int) -> Any:
        if self._depth == 0:
            return self._make(step)
        s, batch, err = self._q.get()
        if err is not None:
            raise err
        assert s == step, f"prefetcher out of order: {s} != {step}"
        return batch

    def close(self) -> None:
        if self._depth > 0:
            self._stop.set()
            self._thread.join(timeout=5)


class _InterruptFlag:
    """First Ctrl-C (SIGINT) or SIGTERM asks the loop to save a checkpoint and stop; a second Ctrl-C aborts at once.

    SIGTERM is what job schedulers (Slurm's preemption, `docker stop`, `timeout`) send before they kill a job:
    handled like Ctrl-C, the run can be resumed from the step it reached. A repeated SIGTERM changes nothing (a
    process manager and the demo's own forwarding may both send one); only a person presses Ctrl-C twice.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def raised(self) -> bool:
        return self.signum is not None

    @property
    def reason(self) -> str:
        return "terminated" if self.signum == signal.SIGTERM else "interrupt"

    def __enter__(self) -> "_InterruptFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.raised:
            self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def write_run_config(run_dir: Path, recipe: Recipe, loop: LoopConfig, ctx: DistContext) -> None:
    config = {
        "recipe": recipe.name,
        "config": dataclasses.asdict(recipe.config),
        "loop": dataclasses.asdict(loop),
        "world_size": ctx.world,
        "device": str(recipe.device),
        "counterfeit_version": counterfeit.__version__,
        "torch_version": torch.__version__,
    }
    atomic_write_text(Path(run_dir) / "config.json", json.dumps(config, indent=2) + "\n")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{run_dir}: not a run directory (no config.json)") from None
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("recipe"), str) \
            or not isinstance(config.get("config"), dict):
        raise UserError(f"{path}: not a run's config (expected an object with \"recipe\" and \"config\")")
    return config


def build_recipe_from_run(run_dir: Path, device: torch.device) -> tuple[Recipe, dict[str, Any]]:
    cfg = read_run_config(run_dir)
    return _build_recipe(cfg, device), cfg


def _build_recipe(cfg: dict[str, Any], device: torch.device) -> Recipe:
    cls = recipe_class(cfg["recipe"])
    try:
        return cls(config_from_dict(cls.Config, cfg["config"]), device)
    except (TypeError, ValueError, KeyError, AttributeError) as err:  # a value of the wrong type, edited by hand
        raise UserError(f"config.json: the {cls.name} recipe cannot be built from its \"config\" "
                        f"({type(err).__name__}: {err}); was it edited by hand?") from None


WEIGHTS = ("best", "latest")


def load_run(run_dir: str | Path, device: str | torch.device = "auto", weights: str = "best") -> Recipe:
    """A trained recipe for inference, in eval mode: networks from the checkpoint with the lowest validation MAE
    when the run kept one (`keep_best`) and `weights` is "best", else from the newest good checkpoint."""
    if weights not in WEIGHTS:
        raise UserError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    run_dir = Path(run_dir)
    device = resolve_device(device) if isinstance(device, str) else device
    recipe, _ = build_recipe_from_run(run_dir, device)
    best = ckpt.best_checkpoint(run_dir) if weights == "best" else None
    info = best or ckpt.latest_checkpoint(run_dir)
    if info is None:
        raise UserError(f"{run_dir}: no usable checkpoint in {run_dir}/{ckpt.CHECKPOINT_DIR}")
    for name, net in recipe.nets.items():
        ckpt.load_weights(net, info.path / f"{name}.safetensors", device)
    recipe.checkpoint = info.path
    if best is not None:
        record = ckpt.read_best(run_dir)
        recipe.checkpoint_choice = f"best: lowest {record['metric']}, {record['value']:.4g}"
    elif weights == "best":  # no record (a run without keep_best), or a damaged record or checkpoint (warned)
        recorded = (run_dir / ckpt.CHECKPOINT_DIR / ckpt.BEST_FILE).exists()
        recipe.checkpoint_choice = "newest: " + ("the best checkpoint is unusable" if recorded
                                                 else "the run kept no best checkpoint")
    else:
        recipe.checkpoint_choice = "newest"
    recipe.train_mode(False)
    return recipe


def resume_run(run_dir: Path, *, steps: int | None = None, minutes: float | None = None,
               device: str = "auto", progress: bool = True) -> TrainResult:
    """Continue a run from its newest good checkpoint with the configuration it was started with."""
    cfg = read_run_config(run_dir)
    changed = steps is not None and steps != cfg["loop"]["steps"]
    if changed:
        cfg = _change_total(run_dir, cfg, steps)
    loop = config_from_dict(LoopConfig, cfg["loop"])
    seed_everything(loop.seed)  # same initial weights as the original run (they are overwritten anyway)
    recipe = _build_recipe(cfg, resolve_device(device))
    loop.minutes = minutes
    loop.progress = progress
    return train(recipe, loop, run_dir, resume=True, new_run_config=cfg if changed else None)


def _change_total(run_dir: Path, cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    """The run's config with a new step total (`--resume --steps`), for `train` to record in config.json.

    A learning-rate schedule planned to end at the old total is stretched to the new one
    (`Recipe.retotal_config`), so that an extended run does not go on at the rate of 0 it decayed to.
    """
    old = int(cfg["loop"]["steps"])
    latest = ckpt.latest_checkpoint(run_dir)
    done = latest.step if latest else 0
    if steps < done:
        raise UserError(f"{run_dir}: --steps {steps} is below the step the run has reached ({done}; its total is "
                        f"{old}): give a total of at least {done}")
    cls = recipe_class(cfg["recipe"])
    recipe_config = cls.retotal_config(dict(cfg["config"]), old, steps)
    if recipe_config != cfg["config"] and is_main_process():
        warnings.warn(f"the learning-rate schedule, planned to end at step {old}, now ends at step {steps}; the "
                      f"steps from {done} on follow it, the earlier ones followed the old one", stacklevel=3)
    changes = [*cfg.get("total_changes", []), {"at_step": done, "steps_from": old, "steps_to": steps}]
    return {**cfg, "config": recipe_config, "loop": {**cfg["loop"], "steps": steps}, "total_changes": changes}


def _scalar(v: float | torch.Tensor) -> float:
    return float(v.detach().item()) if isinstance(v, torch.Tensor) else float(v)


def train(recipe: Recipe, loop: LoopConfig, run_dir: str | Path, *, resume: bool = False,
          overwrite: bool = False, new_run_config: dict[str, Any] | None = None) -> TrainResult:
    """Train `recipe` until `loop.steps` steps are done (or the budget / Ctrl-C stops it).

    `new_run_config`: a resumed run's changed config.json (a new step total), written once its checkpoint has
    loaded, so that a resume that fails changes nothing and a later one finishes the new total.

    A fresh run (`resume=False`) refuses a folder that already holds checkpoints unless `overwrite`,
    which deletes that run's outputs first: otherwise its old, later-numbered checkpoints would be
    "latest" for inference and resuming, under the new run's config.json.
    """
    loop.validate()
    run_dir = Path(run_dir)
    _check_batch_splits(recipe)
    ctx, device = init_distributed(recipe.device)
    if device != recipe.device:
        raise UserError(f"recipe built on {recipe.device} but this rank uses {device}")

    seed_everything(loop.seed)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: a file, not a run folder; choose another --out")
    if not resume:
        claim_run_dir(run_dir, overwrite, ctx, device)
    if ctx.is_main:
        ensure_folder(run_dir)
        if not resume:
            write_run_config(run_dir, recipe, loop, ctx)
    recipe.setup_data()
    recipe.train_mode(True)

    start, elapsed_before = 0, 0.0
    if resume:
        info = ckpt.latest_checkpoint(run_dir)
        if info is None:
            raise UserError(f"{run_dir}: nothing to resume (no usable checkpoint)")
        state = ckpt.load_checkpoint(info.path, recipe.nets, device)
        try:
            for name, opt in recipe.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            for name, sched in recipe.schedulers.items():
                sched.load_state_dict(_scheduler_state(sched, state["schedulers"][name]))
                _set_scheduled_lr(sched)
        except (KeyError, ValueError) as err:
            raise UserError(f"{info.path}: its optimiser or scheduler state does not fit this version of the "
                            f"{recipe.name} recipe ({type(err).__name__}: {err}); start a new run") from None
        if new_run_config is not None and ctx.is_main:
            atomic_write_text(run_dir / "config.json", json.dumps(new_run_config, indent=2) + "\n")
        own = _rank_state(state, ctx)
        recipe.load_extra_state(own.get("extra", {}))
        ckpt.set_rng_state(own["rng"])
        start, elapsed_before = int(state["step"]), float(state.get("elapsed", 0.0))
        window = state.get("log_window", {"sums": {}, "count": 0})  # checkpoints before it started a new window

    if ctx.world > 1:
        for net in recipe.nets.values():
            broadcast_module(net)
        for opt in recipe.optimizers.values():
            sync_gradients_before_step(opt, ctx.world)

    best = ckpt.read_best(run_dir) if resume and loop.keep_best else None
    log = MetricsLog.resume(run_dir / "metrics.csv", start) if resume else MetricsLog(run_dir / "metrics.csv")
    writer = _tensorboard(run_dir, loop) if ctx.is_main else None
    samples_dir = run_dir / "samples"

    def save(step: int, elapsed: float) -> None:
        # Each rank's own image pool and RNG state: they differ between ranks (each sees its shard of the batch).
        own = {"extra": recipe.extra_state(), "rng": ckpt.rng_state()}
        other_ranks = gather_to_main(own, ctx)
        if ctx.is_main:
            state = {
                "optimizers": {k: o.state_dict() for k, o in recipe.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in recipe.schedulers.items()},
                **own,
                "elapsed": elapsed,
                # the losses summed since the last metrics.csv row: a run stopped between rows logs, once resumed,
                # the row the uninterrupted run would have
                "log_window": {"sums": dict(sums), "count": count},
                **({"other_ranks": other_ranks} if ctx.world > 1 else {}),
            }
            ckpt.save_checkpoint(run_dir, step, recipe.nets, state, keep=loop.keep_checkpoints,
                                 protect=best["step"] if best else None)
            log.flush()
            _plot_losses(run_dir, recipe.log_labels)
        barrier(ctx)

    def evaluate(step: int) -> dict[str, float]:
        values = recipe.metrics(step) if ctx.is_main else {}
        recipe.train_mode(True)
        return values

    restore_forwards = compile_for_training(recipe.nets) if loop.compile else None
    t0 = time.perf_counter()
    data_wait = step_seconds = 0.0
    sums: dict[str, float] = dict(window["sums"]) if resume else {}
    count = int(window["count"]) if resume else 0
    last_losses: dict[str, float] = {}
    last_metrics: dict[str, float] = {}
    stopped: str | None = None
    warned_no_metric = False
    new_best: dict[str, Any] | None = None
    saved_at = -1
    step = start
    bar = tqdm(total=loop.steps, initial=start, desc=recipe.name, disable=not (loop.progress and ctx.is_main),
               dynamic_ncols=True, smoothing=0.05)
    prefetch = _Prefetcher(recipe, loop.seed, start, loop.steps, ctx, loop.prefetch)
    try:
        with _InterruptFlag() as interrupt:
            while step < loop.steps:
                t_wait = time.perf_counter()
                batch = prefetch.get(step)
                data_wait += time.perf_counter() - t_wait

                losses = {k: _scalar(v) for k, v in recipe.train_step(batch, step).items()}
                bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
                if bad:
                    good = ckpt.latest_checkpoint(run_dir)
                    where = good.path if good else "none yet"
                    raise TrainingDiverged(f"non-finite loss at step {step + 1}: {bad}; last good checkpoint: {where}")
                for sched in recipe.schedulers.values():
                    sched.step()
                step_seconds += time.perf_counter() - t_wait
                step += 1
                bar.update(1)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1

                at_end = step == loop.steps
                over_budget = loop.minutes is not None and time.perf_counter() - t0 > loop.minutes * 60
                stop_now = any_rank(interrupt.raised or over_budget, ctx, device) if not at_end else False
                checkpoint_now = at_end or stop_now or (loop.checkpoint_every and step % loop.checkpoint_every == 0)
                # with keep_best, a run stopped early (budget, Ctrl-C) is evaluated too: its last model may be the best
                metrics_now = ((checkpoint_now and (loop.keep_best or not stop_now))
                               or (loop.metrics_every and step % loop.metrics_every == 0))
                # a metrics step writes a row even between log steps (else metrics_every 25 with log_every 10
                # would evaluate only every 50 steps)
                if ctx.is_main and (step % loop.log_every == 0 or metrics_now):
                    last_losses = {k: s / count for k, s in sums.items()}
                    row = dict(last_losses)
                    if metrics_now:
                        last_metrics = evaluate(step)
                        row.update(last_metrics)
                        found = validation_mae(last_metrics) if loop.keep_best else None
                        if loop.keep_best and found is None and not warned_no_metric:
                            warnings.warn(f"keep_best: the {recipe.name} run has no validation MAE (held-out cases) to select "
                                          "by; inference will use the newest checkpoint", stacklevel=2)
                            warned_no_metric = True
                        if found is not None and (best is None or found[1] < best["value"]):
                            new_best = {"step": step, "metric": found[0], "value": found[1]}
                    elapsed = time.perf_counter() - t0
                    row["seconds"] = elapsed_before + elapsed
                    row["data_wait_frac"] = data_wait / max(elapsed, 1e-9)
                    row["lr"] = _first_lr(recipe)
                    log.append(step, row)
                    if writer is not None:
                        for k, v in row.items():
                            writer.add_scalar(k, v, step)
                    shown = {k: row[k] for k in (*recipe.progress_keys, *last_metrics) if k in row}
                    bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
                    sums, count = {}, 0
                    if step % (loop.log_every * 10) == 0:
                        log.flush()
                # every rank must take part in a save (barrier): agree on whether this step is a new best
                if loop.keep_best and metrics_now and any_rank(new_best is not None, ctx, device):
                    best, new_best = new_best or best, None
                    save(step, elapsed_before + time.perf_counter() - t0)
                    if ctx.is_main:
                        ckpt.write_best(run_dir, **best)
                    saved_at = step
                if ctx.is_main and loop.sample_every and step % loop.sample_every == 0:
                    recipe.write_samples(step, samples_dir)
                    recipe.train_mode(True)

                if checkpoint_now and saved_at != step:
                    save(step, elapsed_before + time.perf_counter() - t0)
                if stop_now:
                    stopped = interrupt.reason if interrupt.raised else "budget"
                    break
            if stopped is None and interrupt.raised:
                # a signal during the last step: the steps are done, but what was to follow them (a budget's next
                # phase, the demo's evaluation) must not start, and the exit code says a signal came
                stopped = interrupt.reason
    finally:
        if restore_forwards is not None:
            restore_forwards()
        prefetch.close()
        bar.close()
        if ctx.is_main:
            log.flush()
        if writer is not None:
            writer.close()

    if ctx.is_main:
        recipe.write_samples(step, samples_dir)
        _plot_losses(run_dir, recipe.log_labels)
    seconds = time.perf_counter() - t0
    return TrainResult(run_dir, step, seconds, last_losses, last_metrics, stopped, data_wait / max(seconds, 1e-9),
                       step_seconds, start)


def _scheduler_state(sched: Any, saved: dict[str, Any]) -> dict[str, Any]:
    """A saved scheduler state that `sched` can load. The toy's LinearLR became a LambdaLR with the same closed form:
    its state (step count, base rates) lacks only LambdaLR's `lr_lambdas`, which the recipe's config provides."""
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR) and "lr_lambdas" not in saved:
        return {**saved, "lr_lambdas": [None] * len(sched.lr_lambdas)}
    return saved


def _set_scheduled_lr(sched: Any) -> None:
    """The learning rate of the step a run resumes at, from the recipe's schedule. The optimiser's saved rate is the
    old schedule's, which differs when the run's total changed (`Recipe.retotal_config`); otherwise this rewrites the
    same value."""
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        for group, base, factor in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(sched.last_epoch)


def _rank_state(state: dict[str, Any], ctx: DistContext) -> dict[str, Any]:
    """This rank's "extra" and "rng" from a checkpoint: rank 0's at the top level, the others' in "other_ranks".

    A checkpoint written by another number of processes gives every rank rank 0's (the resumed run is then not
    bitwise the one it would have been, but it trains correctly).
    """
    others = state.get("other_ranks", [])
    if ctx.rank == 0 or len(others) != ctx.world - 1:
        if ctx.is_main and len(others) != ctx.world - 1:
            written = f"by {len(others) + 1} process(es)" if others or ctx.world == 1 else "without per-rank state"
            warnings.warn(f"checkpoint written {written}, resumed by {ctx.world}: every rank starts from rank 0's RNG "
                          "state and image pools", stacklevel=3)
        return state
    return others[ctx.rank - 1]


def _first_lr(recipe: Recipe) -> float:
    for opt in recipe.optimizers.values():
        return float(opt.param_groups[0]["lr"])
    return float("nan")


RUN_OUTPUTS = ("metrics.csv", "loss.png", "samples", "tensorboard")  # what the loop writes besides checkpoints


def claim_run_dir(run_dir: Path, overwrite: bool, ctx: DistContext = DistContext(), device: torch.device | str = "cpu"
                  ) -> None:
    """Refuse (on every rank) to start a fresh run over an existing one, or clear it with `overwrite`."""
    old = ckpt.list_checkpoints(run_dir) if ctx.is_main else []
    if any_rank(bool(old) and not overwrite, ctx, device):
        where = f" (checkpoints up to step {old[-1].step})" if old else ""
        raise UserError(f"{run_dir} already holds a training run{where}. Continue it with --resume {run_dir}, "
                        f"replace it with --overwrite, or choose another --out.")
    if ctx.is_main and overwrite:
        clear_run(run_dir)
    barrier(ctx)


def _check_batch_splits(recipe: Recipe) -> None:
    """Under torchrun the batch size is the global batch, split evenly across the processes: say so before anything
    starts (the first batch would otherwise fail on every rank, after the run folder exists)."""
    world, batch = launched_world_size(), getattr(recipe.config, "batch_size", None)
    if world > 1 and isinstance(batch, int) and batch % world:
        raise UserError(f"--batch-size {batch} is the global batch, split evenly across the {world} processes: give a "
                        f"multiple of {world} (e.g. --batch-size {world * max(1, batch // world)})")


def clear_run(run_dir: Path) -> None:
    """Delete what training wrote into `run_dir` (checkpoints and RUN_OUTPUTS); anything else in it stays, such as
    the phantom a `train` command generated there. A folder that holds no run (no config.json, no checkpoints) is
    left alone: a `samples/` or `metrics.csv` there is someone else's."""
    if not (run_dir / "config.json").is_file() and not (run_dir / ckpt.CHECKPOINT_DIR).is_dir():
        return
    ckpt.remove_checkpoints(run_dir)
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _tensorboard(run_dir: Path, loop: LoopConfig) -> Any:
    if not loop.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a missing one should not stop training
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _plot_losses(run_dir: Path, labels: dict[str, str]) -> None:
    from counterfeit.plots import plot_losses

    csv_path = run_dir / "metrics.csv"
    if csv_path.is_file():
        plot_losses(csv_path, run_dir / "loss.png", labels=labels)
