"""Options shared by every `counterfeit train ...` command, and the function that runs a recipe.

Each train command declares its recipe's own options and adds these with
`**LOOP_OPTIONS`-style parameters; `run_recipe` builds the loop config, trains
(or resumes) and prints where the results landed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

Out = Annotated[Path, typer.Option("--out", help="Run directory (config, metrics.csv, samples, checkpoints).")]


def steps_option(default: int) -> Any:
    """--steps with a command's own default for new runs; resuming without it finishes the run's saved total."""
    return Annotated[Optional[int], typer.Option(
        "--steps", help=f"Total training steps (default {default}; with --resume: the run's own total).")]


Minutes = Annotated[Optional[float], typer.Option("--minutes", help="Wall-clock budget; stops early with a checkpoint.")]
Seed = Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Random seed (weights, data order, noise).")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N]; auto prefers CUDA.")]
LogEvery = Annotated[int, typer.Option("--log-every", help="Steps between metrics.csv rows.")]
SampleEvery = Annotated[int, typer.Option("--sample-every", help="Steps between sample pictures (0: end only).")]
CheckpointEvery = Annotated[int, typer.Option("--checkpoint-every", help="Steps between checkpoints (0: end only).")]
Resume = Annotated[Optional[Path], typer.Option("--resume", help="Continue this run directory from its newest good checkpoint (its saved config wins).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Start over in an --out folder that already holds a "
                                         "run: deletes its checkpoints, samples, metrics and TensorBoard logs first.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the networks for training: about a minute "
                                       "of compiling per network at the first step (seconds once cached); on CPU the "
                                       "default CycleGAN's steps were 7-11 % faster, paper-size ones ~4 % "
                                       "(docs/performance.md). Worth it for runs longer than ~20 minutes.")]

KeepBest = Annotated[bool, typer.Option("--keep-best/--no-keep-best", help="Checkpoint each new low of the validation "
                                        "MAE and keep it; `synthesize` then uses it (--weights best). Needs held-out "
                                        "cases with a reference CT.")]


def run_recipe(recipe_name: str, recipe_config: object, *, out: Path, steps: int | None, minutes: float | None, seed: int,
               device: str, log_every: int, sample_every: int, checkpoint_every: int, resume: Path | None,
               no_progress: bool, metrics_every: int = 0, compile: bool = False, keep_best: bool = False,
               overwrite: bool = False, ctx: typer.Context | None = None, candidates: int = 1,
               plan_minutes: bool = False, decay_from: float = 0.5) -> None:
    """Train a freshly configured recipe, or resume `resume`, and print a short summary. `ctx`: the command's,
    to name options that a resume ignores. `candidates` > 1: the new run's seed is the best of that many
    (`budget.train_with_candidates`). `plan_minutes`: plan the steps to fill `minutes`, with the learning rate
    decaying from `decay_from` of the plan to 0 at its end (`budget.train_for_budget`, as the demo trains)."""
    from rich.console import Console

    from counterfeit.device import resolve_device, seed_everything
    from counterfeit.train.loop import LoopConfig, resume_run, train
    from counterfeit.train.recipe import recipe_class

    console = Console(stderr=True, soft_wrap=True)  # a summary line stays one line in logs
    check_resume_or_overwrite(resume, overwrite)
    if resume is not None:
        check_resume_kind(resume, recipe_name)
        if ctx is not None:
            warn_options_ignored_on_resume(ctx)
        result = resume_run(resume, steps=steps, minutes=minutes, device=device, progress=not no_progress)
    elif plan_minutes:
        _train_planned(recipe_name, recipe_config, out=out, minutes=minutes, seed=seed, device=device,
                       no_progress=no_progress, compile=compile, keep_best=keep_best, overwrite=overwrite,
                       ctx=ctx, candidates=candidates, decay_from=decay_from, console=console)
        return
    else:
        if steps is None:
            raise ValueError("a new run needs its step count (the command's default)")
        loop = LoopConfig(steps=steps, minutes=minutes, seed=seed, log_every=log_every, metrics_every=metrics_every,
                          sample_every=sample_every, checkpoint_every=checkpoint_every, progress=not no_progress,
                          compile=compile, keep_best=keep_best)
        if candidates > 1:
            from counterfeit.train.budget import train_with_candidates

            result = train_with_candidates(recipe_name, recipe_config, loop, out, candidates=candidates, device=device,
                                           overwrite=overwrite)
            console.print(_candidates_line(out))
        else:
            seed_everything(seed)  # network initialisation happens when the recipe is built
            recipe = recipe_class(recipe_name)(recipe_config, resolve_device(device))
            result = train(recipe, loop, out, overwrite=overwrite)
    from counterfeit.train.distributed import is_main_process

    if is_main_process():  # under torchrun, one summary
        console.print(f"[bold]{recipe_name}[/]: {describe_steps(result)} in {result.seconds:.1f} s; "
                      f"data wait {100 * result.data_wait_fraction:.1f} % of the time")
        console.print(results_line(result.run_dir))
    exit_if_signalled(result)


PLAN_DERIVED = ("log_every", "sample_every", "checkpoint_every", "metrics_every")  # set by a --minutes plan


def _train_planned(recipe_name: str, recipe_config: object, *, out: Path, minutes: float | None, seed: int,
                   device: str, no_progress: bool, compile: bool, keep_best: bool, overwrite: bool,
                   ctx: typer.Context | None, candidates: int, decay_from: float, console: Any) -> None:
    """A new run whose steps are planned to fill `minutes` (see `run_recipe`), and its summary."""
    import dataclasses

    from counterfeit.errors import UserError
    from counterfeit.train.budget import train_for_budget

    if compile:
        raise UserError("--compile with a --minutes plan: the first step's compiling would distort the plan; give "
                        "--steps too")
    if ctx is not None:
        given = [f"--{name.replace('_', '-')}" for name in PLAN_DERIVED
                 if (source := ctx.get_parameter_source(name)) is not None and source.name == "COMMANDLINE"]
        if given:
            typer.echo(f"note: {', '.join(given)} ignored: a --minutes plan without --steps logs every 10 steps, "
                       "samples every fifth and checkpoints every quarter of the plan", err=True)
    info = train_for_budget(recipe_name, dataclasses.asdict(recipe_config), 60.0 * minutes, out, seed=seed,
                            device=device, progress=not no_progress, decay_from=decay_from, candidates=candidates,
                            keep_best=keep_best, overwrite=overwrite)
    if info["candidates"]:
        console.print(_candidates_line(out))
    stopped = f" (stopped early: {info['stopped_early']})" if info["stopped_early"] else ""
    console.print(f"[bold]{recipe_name}[/]: {info['steps']} steps, planned to fill {minutes:g} min, trained in "
                  f"{info['seconds']:.1f} s{stopped}; data wait {100 * info['data_wait_fraction']:.1f} % of the time")
    console.print(results_line(out))


RUN_FILES = ("config.json", "metrics.csv", "loss.png", "samples/", "checkpoints/", "candidates.json")


def results_line(run_dir: Path, names: tuple[str, ...] = RUN_FILES) -> str:
    """Where the results are, naming only the outputs the run wrote (a run of 0 steps writes no loss curve)."""
    written = [name for name in names if (Path(run_dir) / name.rstrip("/")).exists()]
    return f"results in {run_dir}/ ({', '.join(written)})"


def _candidates_line(run_dir: Path) -> str:
    """Which seed a run with candidates kept, and what each scored (from its candidates.json)."""
    import json

    tried = json.loads((Path(run_dir) / "candidates.json").read_text())
    scores = ", ".join(f"seed {t['seed']} {t['value']:.1f} HU" + (" (kept)" if t["kept"] else "") for t in tried)
    return f"candidates after {tried[0]['steps']} steps each, by {tried[0]['metric']}: {scores}"


def describe_steps(result: Any) -> str:
    """"N steps", "steps A to B" for a resumed run, and why it stopped early."""
    done = result.steps_done - result.first_step
    steps = f"steps {result.first_step} to {result.steps_done}" if result.first_step else f"{done} steps"
    return steps + (f" (stopped early: {result.stopped_early})" if result.stopped_early else "")


def exit_if_signalled(result: Any) -> None:
    """A run stopped by Ctrl-C or SIGTERM saved a checkpoint, but did not finish: say so in the exit code (130 or
    143, through `RunStopped`), so that a script does not go on to use an unfinished model."""
    from counterfeit.train.loop import RunStopped

    RunStopped.check(result)


def check_resume_or_overwrite(resume: Path | None, overwrite: bool) -> None:
    """--resume continues a run and --overwrite replaces one: asking for both is a mistake worth naming."""
    from counterfeit.errors import UserError

    if resume is not None and overwrite:
        raise UserError("--resume continues a run and --overwrite starts a new one: use one of them")


def check_resume_kind(resume: Path, recipe_name: str) -> None:
    """`train cyclegan --resume` of a DCGAN run would train it under the wrong name: say which command resumes it."""
    from counterfeit.errors import UserError
    from counterfeit.train.loop import read_run_config

    kind = read_run_config(resume).get("recipe")
    if kind != recipe_name:
        command = "toy" if kind == "toy" else f"train {kind}"
        raise UserError(f"{resume}: a {kind!r} run, not {recipe_name!r}; resume it with "
                        f"`counterfeit {command} --resume {resume}`")


RESUME_OPTIONS = {"resume", "steps", "minutes", "device", "no_progress"}  # what a resume takes; its config wins


def warn_options_ignored_on_resume(ctx: typer.Context, also_applied: tuple[str, ...] = ()) -> None:
    """Name the options typed together with --resume that the run's saved config overrides (they did nothing).
    `also_applied`: a command's own options that act on a resume too."""
    ignored = []
    for param in ctx.command.params:
        applies = param.name in RESUME_OPTIONS or param.name in also_applied
        source = None if applies else ctx.get_parameter_source(param.name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            ignored.append(param.opts[0] if param.opts else param.name)
    if ignored:
        typer.echo(f"note: {', '.join(ignored)} ignored with --resume: the run continues with its saved config "
                   "(--steps, --minutes and --device apply)", err=True)
