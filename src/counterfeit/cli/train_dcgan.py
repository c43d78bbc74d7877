"""`counterfeit train dcgan`: DCGAN on a folder of images or a built-in data set."""

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
    Compile,
    NoProgress,
    Overwrite,
    Out,
    Resume,
    SampleEvery,
    Seed,
    steps_option,
    run_recipe,
)

DEFAULT_STEPS = 5000  # of a new run; resuming finishes the run's own total
Steps = steps_option(DEFAULT_STEPS)

_DATASET_HELP = "folder (with --images) | phantom-mr | phantom-ct (slices of the built-in head phantom) | digits (scikit-learn's 8x8 digits, upsampled)."


@train_app.command("dcgan")
def train_dcgan(
    ctx: typer.Context,
    out: Out = Path("runs/dcgan"),
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder of PNG/TIFF/JPEG images (8- or 16-bit, searched recursively); each is cut to its central square and resized to --image-size.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help=_DATASET_HELP + " Default: folder with --images, else phantom-mr.")] = None,
    scale: Annotated[str, typer.Option("--scale", help="Folder images: dtype (divide by 255 / 65535) | minmax (stretch each image).")] = "dtype",
    phantom_dir: Annotated[Optional[Path], typer.Option("--phantom-dir", help="phantom-*: slice this phantom folder (`counterfeit phantom`) instead of rendering subjects in memory.")] = None,
    phantom_subjects: Annotated[int, typer.Option("--phantom-subjects", help="phantom-*: subjects rendered in memory.")] = 16,
    image_size: Annotated[int, typer.Option("--image-size", help="32 | 64 | 128 pixels.")] = 64,
    channels: Annotated[int, typer.Option("--channels", help="1 (grayscale) | 3 (RGB).")] = 1,
    loss: Annotated[str, typer.Option("--loss", help="nonsaturating | minimax | lsgan | hinge | wgan-gp.")] = "nonsaturating",
    n_critic: Annotated[Optional[int], typer.Option("--n-critic", help="D steps per G step (default 5 for wgan-gp, else 1).")] = None,
    gp_weight: Annotated[float, typer.Option("--gp-weight", help="wgan-gp: gradient penalty weight.")] = 10.0,
    critic_norm: Annotated[Optional[str], typer.Option("--critic-norm", help="batch | layer | none (default layer for wgan-gp, else batch).")] = None,
    z_dim: Annotated[int, typer.Option("--z-dim", help="Latent dimensions.")] = 100,
    ngf: Annotated[int, typer.Option("--ngf", help="Generator width (channels of its last hidden layer).")] = 64,
    ndf: Annotated[int, typer.Option("--ndf", help="Discriminator width (channels of its first layer).")] = 64,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate (default 2e-4; 1e-4 for wgan-gp).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 64,
    holdout: Annotated[Optional[int], typer.Option("--holdout", help="Real images held out for SWD and the memorisation check (default 256, at most a quarter of the data; a larger number asked for is capped with a warning).")] = None,
    interpolation: Annotated[str, typer.Option("--interpolation", help="Latent path of the interpolation strip: slerp | linear.")] = "slerp",
    fid_weights: Annotated[Optional[Path], typer.Option("--fid-weights", help="Local Inception-v3 weights (.pth/.safetensors): adds FID/KID to the metrics. Slow on CPU.")] = None,
    fid_variant: Annotated[str, typer.Option("--fid-variant", help="fid (pytorch-fid pt_inception-2015-12-05) | torchvision (inception_v3_google).")] = "fid",
    metrics_every: Annotated[int, typer.Option("--metrics-every", help="Steps between SWD evaluations (0: at checkpoints only).")] = 200,
    steps: Steps = None,
    minutes: Minutes = None,
    seed: Seed = 0,
    device: Device = "auto",
    log_every: LogEvery = 10,
    sample_every: SampleEvery = 200,
    checkpoint_every: CheckpointEvery = 500,
    resume: Resume = None,
    overwrite: Overwrite = False,
    no_progress: NoProgress = False,
    compile_: Compile = False,
) -> None:
    """Train a DCGAN (Radford et al. 2016): samples/grid_*.png, samples/interp_*.png, SWD in metrics.csv.

    Use the model with `counterfeit sample --model RUN`.
    """
    config = None
    if resume is None:
        steps = DEFAULT_STEPS if steps is None else steps
        from counterfeit.errors import InputFileError
        from counterfeit.train.recipes.dcgan import DCGANConfig

        for folder in (images, phantom_dir):
            if folder is not None and not folder.is_dir():
                raise InputFileError(folder, "not a folder (give a folder of images)" if folder.exists()
                                     else "folder not found")
        if fid_weights is not None and not fid_weights.is_file():
            raise InputFileError(fid_weights, "Inception weights file not found (nothing is downloaded)")
        # Absolute paths: config.json stays valid for --resume and `sample` from any folder.
        images, phantom_dir, fid_weights = (p.resolve() if p else None for p in (images, phantom_dir, fid_weights))

        config = DCGANConfig(
            dataset=dataset, images=str(images) if images else None, scale=scale,
            phantom_dir=str(phantom_dir) if phantom_dir else None, phantom_subjects=phantom_subjects,
            image_size=image_size, channels=channels, z_dim=z_dim, ngf=ngf, ndf=ndf, loss=loss, n_critic=n_critic,
            gp_weight=gp_weight, critic_norm=critic_norm, lr=lr, batch_size=batch_size, holdout=holdout,
            interpolation=interpolation, fid_weights=str(fid_weights) if fid_weights else None, fid_variant=fid_variant,
        )
    run_recipe("dcgan", config, out=out, ctx=ctx, steps=steps, minutes=minutes, seed=seed, device=device, log_every=log_every,
               sample_every=sample_every, checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite, no_progress=no_progress, compile=compile_,
               metrics_every=metrics_every)
