"""`counterfeit toy`: the 2D GAN lab (a GAN learning a mixture of Gaussians, with the discriminator as contours)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from counterfeit.cli.app import app, train_app  # noqa: F401
from counterfeit.cli.options import (
    CheckpointEvery,
    Device,
    LogEvery,
    Minutes,
    NoProgress,
    Overwrite,
    Out,
    Resume,
    check_resume_kind,
    describe_steps,
    exit_if_signalled,
    results_line,
    check_resume_or_overwrite,
    warn_options_ignored_on_resume,
    steps_option,
    Seed,
)

DEFAULT_STEPS = 6000  # of a new run; resuming finishes the run's own total
Steps = steps_option(DEFAULT_STEPS)

_DISTS = "ring8 (8 Gaussians on the unit circle, σ=0.01) | grid25 (5×5 grid at {-4..4}, σ=0.05) | spiral | gaussian."
_LOSSES = "hinge | nonsaturating | minimax | lsgan | wgan-gp."


@app.command("toy")
def toy(
    ctx: typer.Context,
    dist: Annotated[str, typer.Option("--dist", help=_DISTS)] = "ring8",
    loss: Annotated[str, typer.Option("--loss", help=_LOSSES)] = "hinge",
    out: Out = Path("runs/toy"),
    steps: Steps = None,
    seed: Seed = 0,
    lr_g: Annotated[float, typer.Option("--lr-g", help="Generator Adam learning rate (decays linearly to 1% by the last step).")] = 1e-3,
    lr_d: Annotated[float, typer.Option("--lr-d", help="Discriminator Adam learning rate (same decay).")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Real and generated points per step.")] = 512,
    g_hidden: Annotated[int, typer.Option("--g-hidden", help="Width of the generator's hidden layers.")] = 64,
    d_hidden: Annotated[int, typer.Option("--d-hidden", help="Width of the discriminator's hidden layers.")] = 128,
    g_depth: Annotated[int, typer.Option("--g-depth", help="Linear layers in the generator.")] = 4,
    d_depth: Annotated[int, typer.Option("--d-depth", help="Linear layers in the discriminator.")] = 4,
    z_dim: Annotated[int, typer.Option("--z-dim", help="Latent dimensions.")] = 2,
    n_critic: Annotated[Optional[int], typer.Option("--n-critic", help="D steps per G step (default 5 for wgan-gp, else 1).")] = None,
    pac: Annotated[int, typer.Option("--pac", help="PacGAN packing: points per discriminator input (1: plain GAN).")] = 1,
    frames: Annotated[int, typer.Option("--frames", help="Pictures (PNG + GIF frames) over the run.")] = 25,
    metrics_every: Annotated[int, typer.Option("--metrics-every", help="Steps between mode/quality/JS evaluations.")] = 100,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for torch (tiny networks: 1 is usually fastest).")] = 1,
    minutes: Minutes = None,
    device: Device = "cpu",
    log_every: LogEvery = 50,
    checkpoint_every: CheckpointEvery = 0,
    resume: Resume = None,
    overwrite: Overwrite = False,
    no_progress: NoProgress = False,
) -> None:
    """Train an MLP GAN on a 2D distribution: metrics.csv (modes covered, high-quality fraction, JS),
    samples/step_*.png and training.gif (samples over real data, D as contours), loss.png, samples.npy, summary.json.
    """
    import torch
    from rich.console import Console

    from counterfeit.errors import UserError
    from counterfeit.train.recipes.toy import finish_toy_run

    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if frames < 1:
        raise UserError(f"--frames must be >= 1, got {frames}")
    console = Console(stderr=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_dir, recipe, result = _train_or_resume(
            dist=dist, loss=loss, out=out, steps=steps, seed=seed, lr_g=lr_g, lr_d=lr_d, batch_size=batch_size,
            g_hidden=g_hidden, d_hidden=d_hidden, g_depth=g_depth, d_depth=d_depth, z_dim=z_dim, n_critic=n_critic, pac=pac, frames=frames, metrics_every=metrics_every,
            minutes=minutes, device=device, log_every=log_every, checkpoint_every=checkpoint_every, resume=resume,
            overwrite=overwrite, no_progress=no_progress, ctx=ctx)
        summary = finish_toy_run(recipe, run_dir, result.steps_done, result.seconds)
    finally:
        torch.set_num_threads(previous_threads)  # callers in the same process (tests) keep their setting
    verdict = "" if summary["target_met"] is None else ("  target met" if summary["target_met"] else "  target NOT met")
    console.print(
        f"[bold]toy {summary['dist']}[/] ({summary['loss']}): {describe_steps(result)} in {result.seconds:.1f} s; "
        f"modes {summary['modes_covered']}/{summary['n_modes']} ({summary['modes_well_covered']} with at least 20 % of "
        f"an equal share), high quality {100 * summary['high_quality']:.1f} %, "
        f"JS {summary['js']:.3f} (real vs real {summary['js_real_vs_real']:.3f}){verdict}"
    )
    console.print(f"samples per mode: {summary['per_mode_counts']}")
    console.print(results_line(run_dir, TOY_OUTPUTS))
    exit_if_signalled(result)


TOY_OUTPUTS = ("samples.npy", "summary.json", "metrics.csv", "loss.png", "training.gif", "samples/")


def _train_or_resume(*, dist: str, loss: str, out: Path, steps: int | None, seed: int, lr_g: float, lr_d: float,
                     batch_size: int, g_hidden: int, d_hidden: int, g_depth: int, d_depth: int, z_dim: int, n_critic: int | None, pac: int, frames: int,
                     metrics_every: int, minutes: float | None, device: str, log_every: int, checkpoint_every: int,
                     resume: Path | None, overwrite: bool, no_progress: bool, ctx: typer.Context):
    """Train a new toy run (or resume one); return (run_dir, trained recipe, TrainResult)."""
    from counterfeit.device import resolve_device, seed_everything
    from counterfeit.train.loop import LoopConfig, load_run, resume_run, train
    from counterfeit.train.recipes.toy import ToyConfig, ToyRecipe

    check_resume_or_overwrite(resume, overwrite)
    if resume is not None:
        check_resume_kind(resume, "toy")
        warn_options_ignored_on_resume(ctx, also_applied=("threads",))  # set before training, resumed or not
        result = resume_run(resume, steps=steps, minutes=minutes, device=device, progress=not no_progress)
        return resume, load_run(resume, device=device), result
    steps = DEFAULT_STEPS if steps is None else steps
    config = ToyConfig(dist=dist, loss=loss, lr_g=lr_g, lr_d=lr_d, batch_size=batch_size, g_hidden=g_hidden,
                       d_hidden=d_hidden, g_depth=g_depth, d_depth=d_depth, z_dim=z_dim, n_critic=n_critic, pac=pac, decay_steps=max(steps, 1))
    dev = resolve_device(device)
    seed_everything(seed)  # the networks are initialised when the recipe is built
    recipe = ToyRecipe(config, dev)
    loop = LoopConfig(steps=steps, minutes=minutes, seed=seed, log_every=log_every, metrics_every=metrics_every,
                      sample_every=max(1, steps // frames), checkpoint_every=checkpoint_every,
                      progress=not no_progress)
    return out, recipe, train(recipe, loop, out, overwrite=overwrite)
