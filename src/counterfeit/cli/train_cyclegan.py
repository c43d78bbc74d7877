"""`counterfeit train cyclegan` and `counterfeit train paired`: MR -> CT synthesis on 2D slices.

Both read a phantom root (`--phantom DIR`) or folders of volumes (`--mr DIR --ct DIR [--mask
DIR]`); with neither, a phantom is generated into `<out>/phantom` first. Options left unset take
their value from `--preset` (fast: minutes on a CPU; wolterink2017: the paper's networks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from counterfeit.cli.app import app, train_app  # noqa: F401
from counterfeit.cli.options import (
    CheckpointEvery,
    Device,
    LogEvery,
    Compile,
    KeepBest,
    NoProgress,
    Overwrite,
    Out,
    Resume,
    SampleEvery,
    Seed,
    steps_option,
    run_recipe,
)

DEFAULT_STEPS = 3000  # of a new run; resuming finishes the run's own total
Steps = steps_option(DEFAULT_STEPS)
Minutes = Annotated[Optional[float], typer.Option("--minutes", help="Wall-clock budget. Without --steps: the steps are planned to fill it and the learning rate decays to 0 at its end, as the demo trains (re-planned twice from measured step times). With --steps, or with --resume: a limit; the run stops early with a checkpoint.")]
Candidates = Annotated[int, typer.Option("--candidates", min=1, help="Start this many seeds (--seed, --seed+1, ...) for a quarter of the steps each, finish the one with the lowest validation MAE and delete the others (against an early bad start; the demo does it for the CycleGAN, docs/mr2ct_ablation.md). The steps of the others come on top of --steps; a --minutes plan includes them. Needs the phantom's val split or --val-subjects.")]

DEFAULT_PHANTOM_SUBJECTS = 10

ValSubjects = Annotated[int, typer.Option("--val-subjects", min=0, help="With --mr/--ct: hold out the last N subjects (by name) whose CT is registered to the MR (same grid) for the validation MAE that --keep-best selects by.")]
Preset = Annotated[str, typer.Option("--preset", help="fast (default: sized for minutes on a CPU) | wolterink2017 (256x256 slices, 64 filters, 9 blocks).")]
Phantom = Annotated[Optional[Path], typer.Option("--phantom", help="Phantom root (`counterfeit phantom`). Default without --mr/--ct: generate one into <out>/phantom.")]
PhantomSubjects = Annotated[int, typer.Option("--phantom-subjects", help="Subjects of the generated phantom (when neither --phantom nor --mr/--ct is given).")]
PhantomShape = Annotated[str, typer.Option("--phantom-shape", help="Z,Y,X voxels of the generated phantom.")]
MrDir = Annotated[Optional[Path], typer.Option("--mr", help="Folder of MR volumes (NIfTI/MHA/NRRD files or DICOM series folders).")]
CtDir = Annotated[Optional[Path], typer.Option("--ct", help="Folder of CT volumes in HU (paired: named like the MRs, on the same grid).")]
MaskDir = Annotated[Optional[Path], typer.Option("--mask", help="Optional folder of body masks named like the MRs.")]
ImageSize = Annotated[Optional[int], typer.Option("--image-size", help="Side of the square training slices the generators see (random crops; multiple of 4). Preset fast: 128; wolterink2017: 256.")]
DCrop = Annotated[Optional[int], typer.Option("--d-crop", help="Side of the random crops fed to the discriminators (default 3/4 of --image-size, at least 70).")]
Context = Annotated[Optional[int], typer.Option("--context", help="1: 2D slices; 3: 2.5D (neighbouring MR slices as channels). Both presets: 1.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Slices per step (under torchrun: the global batch). Both presets: 1.")]
Ngf = Annotated[Optional[int], typer.Option("--ngf", help="Generator filters in the first layer. Preset fast: 16; wolterink2017: 64.")]
Blocks = Annotated[Optional[int], typer.Option("--blocks", help="Residual blocks of the ResNet generator. Preset fast: 6; wolterink2017: 9.")]
Ndf = Annotated[Optional[int], typer.Option("--ndf", help="Discriminator filters in the first layer. Preset fast: 32; wolterink2017: 64.")]
DNorm = Annotated[Optional[str], typer.Option("--d-norm", help="Normalisation in the discriminators: instance (default, as the generators) | layer | batch | none (docs/mr2ct_ablation.md, round 33).")]
DLayers = Annotated[Optional[int], typer.Option("--d-layers", help="Stride-2 layers of the PatchGAN (3: 70x70 patches, 2: 34x34). Both presets: 3.")]
Upsample = Annotated[Optional[str], typer.Option("--upsample", help="The ResNet generator's up-sampling: transpose (the paper's 3x3 transposed convolutions) | transpose4 (4x4) | resize (nearest x2 + 3x3 convolution, no checkerboard; docs/mr2ct_ablation.md, round 40). Preset fast: resize; wolterink2017: transpose.")]
Generator = Annotated[Optional[str], typer.Option("--generator", help="resnet (the CycleGAN's) | unet (pix2pix's, with skip connections). Both presets: resnet.")]
UnetDepth = Annotated[Optional[int], typer.Option("--unet-depth", help="U-Net levels (default: the deepest, up to 8, dividing --image-size).")]
Lr = Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate (default 2e-4, betas 0.5, 0.999).")]
DecayFrom = Annotated[float, typer.Option("--decay-from", help="Fraction of the steps (--steps, or the steps a --minutes plan fits) after which the learning rate decays linearly to 0 (1: constant; with a --minutes plan at least 0.5).")]
CtScale = Annotated[Optional[str], typer.Option("--ct-scale", help="How HU map onto the networks' [-1, 1]: asinh (default: soft tissue 5.6x wider, bone 2.4x narrower; docs/mr2ct_ablation.md, rounds 33-36) | linear (the paper's).")]
AsinhWidth = Annotated[Optional[float], typer.Option("--asinh-width", help="HU around soft tissue where the asinh CT scale is linear; beyond it, logarithmic (default 100; wider gives bone more of [-1, 1]).")]
DepthChannel = Annotated[Optional[bool], typer.Option("--depth-channel/--no-depth-channel", help="Give every network each slice's depth below the body surface (from the image's own body mask) as one more channel (default: on).")]
Flip = Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Random left-right flips of training slices (default: on).")]


def _data_source(out: Path, phantom: Path | None, mr: Path | None, ct: Path | None, mask: Path | None,
                 phantom_subjects: int, phantom_shape: str, seed: int, val_subjects: int,
                 keep_best: bool) -> dict[str, Any]:
    """Config entries for the data (absolute paths); generates a phantom when none is given."""
    from counterfeit.errors import InputFileError, UserError

    if phantom is not None and (mr or ct or mask):
        raise UserError("give either --phantom or --mr/--ct (and --mask), not both")
    if val_subjects and mr is None:
        raise UserError("--val-subjects is for --mr/--ct folders; a phantom has its own val split")
    if keep_best and mr is not None and not val_subjects:
        raise UserError("--keep-best selects by the MAE of held-out cases: with --mr/--ct add --val-subjects N "
                        "(subjects whose CT is registered to the MR)")
    if (mr is None) != (ct is None):
        raise UserError("--mr and --ct go together: give both folders")
    if mask is not None and mr is None:
        raise UserError("--mask needs --mr and --ct")
    if mr is not None:
        for path in (mr, ct, mask):
            if path is not None and not path.is_dir():
                raise InputFileError(path, "folder not found" if not path.exists() else "is not a folder")
        if mr.resolve() == ct.resolve():
            raise UserError(f"--mr and --ct are the same folder ({mr}): the MRs would be read as CTs")
        return {"mr_dir": str(mr.resolve()), "ct_dir": str(ct.resolve()), "mask_dir": str(mask.resolve()) if mask else None,
                "val_subjects": val_subjects}
    if phantom is None:  # no data given: the command's own phantom in <out>/phantom, made with these options
        from counterfeit.cli.phantom import parse_shape
        from counterfeit.data.phantom import phantom_in

        phantom = phantom_in(out / "phantom", phantom_subjects, shape=parse_shape(phantom_shape), seed=seed,
                             say=lambda message: typer.echo(f"no data given: {message}", err=True))
    from counterfeit.data.phantom import load_dataset

    load_dataset(phantom)  # a clear error now rather than after building the networks
    return {"phantom": str(phantom.resolve())}


def _check_run_plan(resume: Path | None, steps: int | None, minutes: float | None, candidates: int,
                    mr: Path | None, val_subjects: int) -> bool:
    """Check --candidates and --minutes against the rest; True if the steps are to be planned from --minutes."""
    from counterfeit.errors import UserError
    from counterfeit.train.distributed import launched_world_size

    plan = resume is None and minutes is not None and steps is None
    if candidates > 1 and resume is not None:
        raise UserError("--candidates chooses the seed of a new run; a resumed run goes on with its own")
    if (candidates > 1 or plan) and launched_world_size() > 1:
        raise UserError("--candidates and a --minutes plan (without --steps) train in one process; under torchrun "
                        "give --steps")
    if candidates > 1 and mr is not None and not val_subjects:
        raise UserError("--candidates compares validation MAEs: with --mr/--ct add --val-subjects N "
                        "(subjects whose CT is registered to the MR)")
    return plan


@train_app.command("cyclegan")
def train_cyclegan(
    ctx: typer.Context,
    out: Out = Path("runs/cyclegan"),
    preset: Preset = "fast",
    phantom: Phantom = None,
    mr: MrDir = None,
    ct: CtDir = None,
    mask: MaskDir = None,
    val_subjects: ValSubjects = 0,
    phantom_subjects: PhantomSubjects = DEFAULT_PHANTOM_SUBJECTS,
    phantom_shape: PhantomShape = "64,128,128",
    generator: Generator = None,
    unet_depth: UnetDepth = None,
    upsample: Upsample = None,
    image_size: ImageSize = None,
    d_crop: DCrop = None,
    context: Context = None,
    batch_size: BatchSize = None,
    ngf: Ngf = None,
    blocks: Blocks = None,
    ndf: Ndf = None,
    d_layers: DLayers = None,
    d_norm: DNorm = None,
    lambda_cycle: Annotated[Optional[float], typer.Option("--lambda-cycle", help="Weight λ of the cycle-consistency L1 terms (default 5; the paper's preset: 10).")] = None,
    lambda_identity: Annotated[Optional[float], typer.Option("--lambda-identity", help="Identity loss weight as a fraction of λ (0: off, as in the paper; CycleGAN code: 0.5).")] = None,
    lambda_structure: Annotated[Optional[float], typer.Option("--lambda-structure", help="Weight of the MIND structure-consistency loss between each generator's input and output (default 1; 0: off, as in the paper).")] = None,
    lambda_histogram: Annotated[Optional[float], typer.Option("--lambda-histogram", help="Weight of the loss matching each output's intensity distribution inside the body to a real image's of the target modality, band by band of depth with --depth-channel (default 5; 0: off).")] = None,
    pool_size: Annotated[Optional[int], typer.Option("--pool-size", help="History of generated images shown to the discriminators (default 50).")] = None,
    ema_decay: Annotated[Optional[float], typer.Option("--ema-decay", help="Synthesise with an exponential moving average of the MR->CT generator's weights with this decay per step (default 0: off).")] = None,
    lr: Lr = None,
    decay_from: DecayFrom = 0.5,
    flip: Flip = None,
    ct_scale: CtScale = None,
    asinh_width: AsinhWidth = None,
    depth_channel: DepthChannel = None,
    steps: Steps = None,
    minutes: Minutes = None,
    seed: Seed = 0,
    device: Device = "auto",
    log_every: LogEvery = 10,
    sample_every: SampleEvery = 200,
    checkpoint_every: CheckpointEvery = 500,
    metrics_every: Annotated[int, typer.Option("--metrics-every", help="Steps between validation MAE evaluations (0: at checkpoints only).")] = 0,
    resume: Resume = None,
    overwrite: Overwrite = False,
    no_progress: NoProgress = False,
    compile_: Compile = False,
    keep_best: KeepBest = False,
    candidates: Candidates = 1,
) -> None:
    """Unpaired CycleGAN MR -> CT (Wolterink et al. 2017): Syn_CT, Syn_MR, Dis_CT, Dis_MR with least-squares losses.

    Use the model with `counterfeit synthesize --model RUN --input MR --output sCT`.
    """
    config = None
    plan = _check_run_plan(resume, steps, minutes, candidates, mr, val_subjects)
    if resume is None:
        steps = DEFAULT_STEPS if steps is None else steps
        from counterfeit.train.recipes.cyclegan import PRESETS, CycleGANConfig, validate_config
        from counterfeit.train.recipes.mr2ct_common import apply_preset, decay_schedule

        config = apply_preset(
            CycleGANConfig, PRESETS, preset, generator=generator, unet_depth=unet_depth, upsample=upsample, image_size=image_size,
            d_crop=d_crop, context=context, batch_size=batch_size, ngf=ngf, n_blocks=blocks, ndf=ndf, d_layers=d_layers, d_norm=d_norm,
            lambda_cycle=lambda_cycle, lambda_identity=lambda_identity, lambda_structure=lambda_structure,
            lambda_histogram=lambda_histogram, pool_size=pool_size, ema_decay=ema_decay, lr=lr, flip=flip, ct_scale=ct_scale, asinh_width=asinh_width, depth_channel=depth_channel,
            **decay_schedule(steps, decay_from),
        )
        validate_config(config)
        for key, value in _data_source(out, phantom, mr, ct, mask, phantom_subjects, phantom_shape, seed, val_subjects, keep_best).items():
            setattr(config, key, value)
    run_recipe("cyclegan", config, out=out, ctx=ctx, steps=steps, minutes=minutes, seed=seed, device=device, log_every=log_every,
               sample_every=sample_every, checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite, no_progress=no_progress, compile=compile_,
               metrics_every=metrics_every, keep_best=keep_best, candidates=candidates, plan_minutes=plan,
               decay_from=decay_from)


@train_app.command("paired")
def train_paired(
    ctx: typer.Context,
    out: Out = Path("runs/paired"),
    preset: Preset = "fast",
    phantom: Phantom = None,
    mr: MrDir = None,
    ct: CtDir = None,
    mask: MaskDir = None,
    val_subjects: ValSubjects = 0,
    phantom_subjects: PhantomSubjects = DEFAULT_PHANTOM_SUBJECTS,
    phantom_shape: PhantomShape = "64,128,128",
    generator: Generator = None,
    unet_depth: UnetDepth = None,
    upsample: Upsample = None,
    image_size: ImageSize = None,
    d_crop: DCrop = None,
    context: Context = None,
    batch_size: BatchSize = None,
    ngf: Ngf = None,
    blocks: Blocks = None,
    ndf: Ndf = None,
    d_layers: DLayers = None,
    d_norm: DNorm = None,
    lambda_l1: Annotated[Optional[float], typer.Option("--lambda-l1", help="Weight of the L1 loss to the (possibly misaligned) paired CT (default 100, as pix2pix).")] = None,
    lr: Lr = None,
    decay_from: DecayFrom = 0.5,
    flip: Flip = None,
    ct_scale: CtScale = None,
    asinh_width: AsinhWidth = None,
    depth_channel: DepthChannel = None,
    steps: Steps = None,
    minutes: Minutes = None,
    seed: Seed = 0,
    device: Device = "auto",
    log_every: LogEvery = 10,
    sample_every: SampleEvery = 200,
    checkpoint_every: CheckpointEvery = 500,
    metrics_every: Annotated[int, typer.Option("--metrics-every", help="Steps between validation MAE evaluations (0: at checkpoints only).")] = 0,
    resume: Resume = None,
    overwrite: Overwrite = False,
    no_progress: NoProgress = False,
    compile_: Compile = False,
    keep_best: KeepBest = False,
    candidates: Candidates = 1,
) -> None:
    """Paired MR -> CT baseline: one generator with L1 + least-squares adversarial loss on same-position slices.

    The phantom's paired CT is slightly misaligned, like real data. Use the model with `counterfeit synthesize`.
    """
    config = None
    plan = _check_run_plan(resume, steps, minutes, candidates, mr, val_subjects)
    if resume is None:
        steps = DEFAULT_STEPS if steps is None else steps
        from counterfeit.train.recipes.mr2ct_common import apply_preset, decay_schedule
        from counterfeit.train.recipes.paired import PRESETS, PairedConfig, validate_config

        config = apply_preset(
            PairedConfig, PRESETS, preset, generator=generator, unet_depth=unet_depth, upsample=upsample, image_size=image_size,
            d_crop=d_crop, context=context, batch_size=batch_size, ngf=ngf, n_blocks=blocks, ndf=ndf, d_layers=d_layers, d_norm=d_norm,
            lambda_l1=lambda_l1, lr=lr, flip=flip, ct_scale=ct_scale, asinh_width=asinh_width, depth_channel=depth_channel, **decay_schedule(steps, decay_from),
        )
        validate_config(config)
        for key, value in _data_source(out, phantom, mr, ct, mask, phantom_subjects, phantom_shape, seed, val_subjects, keep_best).items():
            setattr(config, key, value)
    run_recipe("paired", config, out=out, ctx=ctx, steps=steps, minutes=minutes, seed=seed, device=device, log_every=log_every,
               sample_every=sample_every, checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite, no_progress=no_progress, compile=compile_,
               metrics_every=metrics_every, keep_best=keep_best, candidates=candidates, plan_minutes=plan,
               decay_from=decay_from)
