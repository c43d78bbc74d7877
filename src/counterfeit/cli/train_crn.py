"""`counterfeit train crn`: Cascaded Refinement Network, semantic layout -> image (Chen & Koltun 2017)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

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
)

DEFAULT_STEPS = 2000  # of a new run; resuming finishes the run's own total
Steps = steps_option(DEFAULT_STEPS)


def _floats(text: str, option: str) -> tuple[float, ...]:
    from counterfeit.errors import UserError

    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise UserError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str, option: str) -> tuple[int, ...]:
    values = _floats(text, option)
    if any(v != int(v) or v < 1 for v in values):
        from counterfeit.errors import UserError

        raise UserError(f"{option} must be comma-separated positive integers, got {text!r}")
    return tuple(int(v) for v in values)


@train_app.command("crn")
def train_crn(
    ctx: typer.Context,
    out: Out = Path("runs/crn"),
    dataset: str = typer.Option("street", "--dataset", help="street | phantom-ct | phantom-mr | folder."),
    layouts: Optional[Path] = typer.Option(None, "--layouts", help="folder: directory of layout PNGs (label ids, or colours with --palette)."),
    images: Optional[Path] = typer.Option(None, "--images", help="folder: directory of images with the same stems."),
    palette: Optional[Path] = typer.Option(None, "--palette", help="folder: palette JSON for colour layouts (Cityscapes-style)."),
    num_classes: int = typer.Option(0, "--num-classes", help="folder: number of classes (0: from the palette or the largest id)."),
    height: int = typer.Option(64, "--height", help="Output height: base height x a power of two."),
    width: int = typer.Option(128, "--width", help="Output width (2 x height for the paper's 4x8 base)."),
    base_height: int = typer.Option(4, "--base-height", help="Height of the first refinement module (the paper: 4)."),
    widths: str = typer.Option("", "--widths", help="Feature width per module, coarse to fine, e.g. 256,256,256,128,64 (default: a CPU-sized taper)."),
    k: int = typer.Option(3, "--k", help="Images per layout for the diversity loss (the paper: 9; 1 = plain perceptual loss)."),
    layer_weights: str = typer.Option("", "--layer-weights", help="Weights of conv1_2..conv5_2 (default: the released code's 1/2.6,1/4.8,1/3.7,1/5.6,10/1.5)."),
    vgg_layers: str = typer.Option("", "--vgg-layers", help="VGG19 layers of the loss (default conv1_2,conv2_2,conv3_2,conv4_2,conv5_2)."),
    pixel_weight: float = typer.Option(1.0, "--pixel-weight", help="Weight of the pixel L1 term."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="torchvision vgg19 state dict (vgg19-dcbb9e9d.pth) or a .safetensors copy. Without it the loss uses RANDOM features."),
    vgg_pool: str = typer.Option("avg", "--vgg-pool", help="avg (the released code) | max (torchvision)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate (the paper: 1e-4)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Layouts per step (the paper: 1)."),
    no_flip: bool = typer.Option(False, "--no-flip", help="No random horizontal flips."),
    adv_weight: float = typer.Option(0.0, "--adv-weight", help="Weight of an adversarial term (0: off, as in the paper)."),
    gan_objective: str = typer.Option("lsgan", "--gan-objective", help="lsgan | nonsaturating | hinge | minimax (with --adv-weight)."),
    n_train: int = typer.Option(400, "--n-train", min=1, help="street: number of training scenes."),
    phantom_subjects: int = typer.Option(6, "--phantom-subjects", help="phantom: training subjects rendered in memory."),
    phantom_dir: Optional[Path] = typer.Option(None, "--phantom-dir", help="phantom: use a `counterfeit phantom` data set (train/val splits) instead."),
    data_seed: int = typer.Option(0, "--data-seed", help="Seed of the built-in data sets."),
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
    """Train a Cascaded Refinement Network: semantic layout in, photographic (or CT/MR) image out."""
    from counterfeit.cli.options import run_recipe
    from counterfeit.errors import UserError
    from counterfeit.train.recipes.crn import ADV_OBJECTIVES, DATASETS, CRNConfig, complete_folder_config

    config = None
    if resume is None:
        steps = DEFAULT_STEPS if steps is None else steps
        if dataset not in DATASETS:
            raise UserError(f"--dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
        if vgg_pool not in ("avg", "max"):
            raise UserError(f"--vgg-pool must be avg or max; got {vgg_pool!r}")
        if adv_weight > 0 and gan_objective not in ADV_OBJECTIVES:
            raise UserError(f"--gan-objective must be one of {', '.join(ADV_OBJECTIVES)}; got {gan_objective!r}")
        if vgg_weights is not None and not vgg_weights.is_file():
            raise UserError(f"{vgg_weights}: --vgg-weights file not found")
        palette_list = None
        if palette is not None:
            from counterfeit.data.layouts import read_palette

            palette_list = read_palette(palette).to_list()  # stored in the run's config: the run is self-contained
        kwargs = {}
        if layer_weights:
            kwargs["layer_weights"] = _floats(layer_weights, "--layer-weights")
        if vgg_layers:
            kwargs["vgg_layers"] = tuple(n.strip() for n in vgg_layers.split(",") if n.strip())
        config = CRNConfig(
            dataset=dataset, layouts=str(layouts) if layouts else None, images=str(images) if images else None,
            palette=palette_list, num_classes=num_classes, height=height, width=width, base_height=base_height,
            widths=_ints(widths, "--widths"), k=k, pixel_weight=pixel_weight,
            vgg_weights=str(vgg_weights.resolve()) if vgg_weights else None, vgg_pool=vgg_pool, lr=lr,
            batch_size=batch_size, flip=not no_flip, adv_weight=adv_weight, gan_objective=gan_objective,
            n_train=n_train, phantom_subjects=phantom_subjects, phantom_dir=str(phantom_dir) if phantom_dir else None,
            data_seed=data_seed, **kwargs,
        )
        config = complete_folder_config(config)
    run_recipe("crn", config, out=out, ctx=ctx, steps=steps, minutes=minutes, seed=seed, device=device, log_every=log_every,
               sample_every=sample_every, checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite, no_progress=no_progress, compile=compile_)
