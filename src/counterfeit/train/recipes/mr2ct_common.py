"""Pieces shared by the MR -> CT recipes (unpaired CycleGAN and the paired baseline).

- `MR2CTConfig`: data source, slice size, networks, optimiser and schedule options.
- `load_mr2ct_data`: training volumes from a phantom root or from folders of volumes,
  normalised to [-1, 1] (MR by per-volume percentiles, CT by a fixed HU window), plus a few
  held-out cases for sample grids and a validation MAE.
- `linear_decay`: the CycleGAN schedule, constant then linearly decaying to zero, per step.
- `crop_batch`: the random crops fed to the discriminators (Wolterink et al. 2017: cropping
  what the discriminator sees makes it insensitive to imperfect registration).
- `MR2CTRecipe`: base class with data setup, sample grids, validation MAE and the
  `synthesis_spec` that `counterfeit.medical.synthesize` uses for inference.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from counterfeit.errors import UserError
from counterfeit.medical.intensity import (ASINH_WIDTH_HU, CT_SCALES, HU_WINDOW, MR_PERCENTILES, ct_to_unit, depth_map,
                                           mr_to_unit)
from counterfeit.nets.norm import NORM_KINDS
from counterfeit.nets.patchgan import min_input_size, receptive_field
from counterfeit.nets.resnet import UPSAMPLE_KINDS, ResnetGenerator
from counterfeit.train.recipe import Recipe

PREVIEW_LEVELS = (0.35, 0.6)  # fractions of the body's height where sample grids cut axial slices
ERROR_DISPLAY_HU = 500.0  # |sCT - CT| shown from 0 (black) to this (bright) in the error map


@dataclass
class MR2CTConfig:
    """Options shared by the MR -> CT recipes. Paths are stored absolute so a run can be resumed anywhere.

    Defaults (the "fast" preset) are sized for CPU runs of minutes: 128x128 slices, batch 1, 16
    generator / 32 discriminator filters and 6 residual blocks take ~0.5 s per CycleGAN step on
    one core. They were chosen by measured ablation (benchmarks/mr2ct_ablation.py, table in
    docs/mr2ct_ablation.md); the recipes' PRESETS hold the paper's configuration.
    """

    # data: a phantom root, or folders of volumes (masks optional, matched to MR by file name)
    phantom: str | None = None
    mr_dir: str | None = None
    ct_dir: str | None = None
    mask_dir: str | None = None
    # side of the square training slices the generators see (random crops of larger slices); 128 = the phantom's
    # whole slices, 7 % (CycleGAN) and 14 % (paired) lower MAE than 96 at equal time (rounds 43-44)
    image_size: int = 128
    context: int = 1  # MR slices stacked as input channels: 1 = 2D, 3 = 2.5D
    batch_size: int = 1
    flip: bool = True  # random left-right flips
    # networks
    generator: str = "resnet"  # "resnet" (the CycleGAN's) or "unet" (pix2pix's, with skip connections)
    unet_depth: int | None = None  # None: the deepest (<= 8) that divides image_size
    ngf: int = 16
    n_blocks: int = 6  # residual blocks of the ResNet generator
    # the ResNet generator's up-sampling (nets.resnet.UPSAMPLE_KINDS): nearest x2 + 3x3 conv has no checkerboard;
    # 8 % lower CycleGAN MAE than the paper's transposed convolutions (4 seeds, 4 minutes), paired unchanged
    # (rounds 40-41)
    upsample: str = "resize"
    norm: str = "instance"
    # the discriminators' norm; None: the same as `norm`. Instance norm removes each feature map's mean over
    # the crop, which leaves a PatchGAN nearly blind to an offset of a whole region (docs/mr2ct_ablation.md, round 33)
    d_norm: str | None = None
    ndf: int = 32
    d_layers: int = 3  # PatchGAN depth: 3 gives 70x70 patches
    d_crop: int | None = None  # side of the random crops fed to D; None: 3/4 of image_size, at least the patch size
    # optimisation: Adam, constant learning rate then linear decay to 0 between the two steps
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_start: int = 0
    lr_decay_end: int = 0  # <= lr_decay_start: constant learning rate
    # intensity conventions (recorded so that synthesis normalises exactly as training did)
    mr_percentiles: tuple = MR_PERCENTILES
    hu_window: tuple = HU_WINDOW
    # how HU map onto the networks' [-1, 1] (intensity.CT_SCALES): "asinh" gives soft tissue 5.6x more of the range
    # than "linear", so a brain offset shows to every loss; 15 % and 13 % lower MAE (rounds 33-36)
    ct_scale: str = "asinh"
    asinh_width: float = ASINH_WIDTH_HU  # HU; where the asinh scale turns logarithmic (wider: more range for bone)
    depth_channel: bool = True  # networks also see each slice's depth below the body surface (rounds 27-32)
    preview_subjects: int = 2  # held-out cases for sample grids and the validation MAE (0: none)
    # --mr/--ct folders: the last N subjects (by name) with a CT on their MR's grid are held out for validation
    # (the phantom has its own val split)
    val_subjects: int = 0

    # Options added after older runs were saved, with the value those runs trained with (train.recipe.config_from_dict).
    ABSENT_IN_OLD_RUNS: ClassVar[dict[str, Any]] = {"depth_channel": False, "ct_scale": "linear",
                                                    "upsample": "transpose", "asinh_width": ASINH_WIDTH_HU}


def apply_preset(config_cls: type, presets: dict[str, dict[str, Any]], preset: str, **overrides: Any) -> Any:
    """A config from a named preset with explicit (non-None) options on top."""
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    values = dict(presets[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{config_cls.__name__}: unknown option(s) {unknown}")
    return config_cls(**values)


def resolve_d_crop(config: MR2CTConfig) -> int:
    """Side of the discriminator's random crops, checked against the image and the PatchGAN."""
    size = config.image_size
    if config.d_crop is None:
        crop = min(size, max(int(round(0.75 * size)), receptive_field(config.d_layers)))
    else:
        crop = int(config.d_crop)
    smallest = min_input_size(config.d_layers)
    if config.d_crop is None and size < smallest:  # the user gave no crop: name what they did give
        raise UserError(f"--image-size {size} is smaller than the smallest input of a {config.d_layers}-layer "
                        f"PatchGAN ({smallest}): give --image-size {smallest} or more, or fewer --d-layers")
    if not smallest <= crop <= size:
        raise UserError(f"--d-crop must be between {smallest} (the smallest input of a {config.d_layers}-layer "
                        f"PatchGAN) and the image size {size}, got {crop}")
    return crop


GENERATORS = ("resnet", "unet")
MAX_UNET_DEPTH = 8


def unet_depth(config: MR2CTConfig) -> int:
    """The U-Net depth to use: the configured one, or the deepest whose 2**depth divides image_size."""
    if config.unet_depth is not None:
        return int(config.unet_depth)
    depth = 0
    while depth < MAX_UNET_DEPTH and config.image_size % 2 ** (depth + 1) == 0:
        depth += 1
    return depth


def generator_multiple(config: MR2CTConfig) -> int:
    """The side length the generator's input must be a multiple of (checked, with a clear message)."""
    if config.generator not in GENERATORS:
        raise UserError(f"--generator must be one of {', '.join(GENERATORS)}, got {config.generator!r}")
    if config.generator == "resnet":
        return 4  # two stride-2 convolutions
    depth = unet_depth(config)
    if depth < 2 or config.image_size % 2**depth:
        raise UserError(f"a U-Net of depth {depth} needs --image-size divisible by {2**depth} "
                        f"(and depth >= 2); got image size {config.image_size}")
    return 2**depth


def build_generator(config: MR2CTConfig, in_channels: int, out_channels: int) -> nn.Module:
    """The configured generator: ResNet (c7s1, 2 down, n_blocks residual, 2 up, c7s1 + tanh) or U-Net."""
    from counterfeit.nets.unet import UNetGenerator

    if config.generator == "unet":
        return UNetGenerator(in_channels, out_channels, ngf=config.ngf, depth=unet_depth(config), norm=config.norm)
    return ResnetGenerator(in_channels, out_channels, ngf=config.ngf, n_blocks=config.n_blocks, norm=config.norm,
                           upsample=config.upsample)


def validate_common(config: MR2CTConfig) -> int:
    """Clear messages for option values the networks or samplers cannot use; returns the size multiple."""
    multiple = generator_multiple(config)
    if config.image_size < 8 or config.image_size % multiple:
        raise UserError(f"--image-size must be a multiple of {multiple} and at least 8, got {config.image_size}")
    if config.context < 1 or config.context % 2 == 0:
        raise UserError(f"--context must be an odd number of slices (1 = 2D, 3 = 2.5D), got {config.context}")
    for name in ("batch_size", "ngf", "ndf", "d_layers"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.n_blocks < 0:
        raise UserError(f"--blocks must be >= 0, got {config.n_blocks}")
    if config.val_subjects < 0:
        raise UserError(f"--val-subjects must be >= 0, got {config.val_subjects}")
    if config.val_subjects and config.phantom:
        raise UserError("--val-subjects is for --mr/--ct folders; a phantom has its own val split")
    if not 0 < config.lr < math.inf:  # also refuses NaN
        raise UserError(f"--lr must be a finite number > 0, got {config.lr}")
    if config.ct_scale not in CT_SCALES:
        raise UserError(f"--ct-scale must be one of {', '.join(CT_SCALES)}, got {config.ct_scale!r}")
    if not config.asinh_width > 0:
        raise UserError(f"--asinh-width must be > 0 HU, got {config.asinh_width}")
    if config.upsample not in UPSAMPLE_KINDS:
        raise UserError(f"--upsample must be one of {', '.join(UPSAMPLE_KINDS)}, got {config.upsample!r}")
    if config.d_norm is not None and config.d_norm not in NORM_KINDS:
        raise UserError(f"--d-norm must be one of {', '.join(NORM_KINDS)}, got {config.d_norm!r}")
    resolve_d_crop(config)
    return multiple


def discriminator_norm(config: MR2CTConfig) -> str:
    """The discriminators' normalisation: `d_norm`, or the generators' `norm` when it is unset."""
    return config.norm if config.d_norm is None else config.d_norm


# --- schedule and crops ---------------------------------------------------------------


def decay_schedule(steps: int, decay_from: float) -> dict[str, int]:
    """Config entries for a learning rate constant until `decay_from` of `steps`, then linearly down to 0 at the
    end (1: constant throughout)."""
    if not 0.0 <= decay_from <= 1.0:
        raise UserError(f"--decay-from must be a fraction in [0, 1], got {decay_from}")
    start = int(decay_from * steps)
    return {"lr_decay_start": start, "lr_decay_end": steps if start < steps else start}


def linear_decay(start: int, end: int, step: int) -> float:
    """LR factor: 1 until `start`, then linearly down to 0 at `end` (CycleGAN's schedule, in steps)."""
    if end <= start or step < start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / (end - start))


def adam_with_schedule(params: Any, config: MR2CTConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    opt = torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2))
    # A partial, whose bounds LambdaLR's state_dict does not record: the schedule comes from the run's config, so a
    # run resumed with a re-planned config (train_for_budget) follows the new plan from the step it resumes at.
    schedule = functools.partial(linear_decay, config.lr_decay_start, config.lr_decay_end)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def draw_crop_offsets(rng: np.random.Generator, batch: int, n_crops: int, image_size: int, crop: int) -> np.ndarray:
    """(batch, n_crops, 2) top-left corners of `crop`-sized windows in `image_size` images (batch on axis 0)."""
    return rng.integers(0, image_size - crop + 1, size=(batch, n_crops, 2)).astype(np.int64)


def crop_batch(x: torch.Tensor, offsets: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """Per-sample square crops: x (B, C, H, W), offsets (B, 2) top-left corners -> (B, C, size, size)."""
    if size == x.shape[-1] == x.shape[-2]:
        return x
    corners = offsets.tolist()
    return torch.stack([x[i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(corners)])


def split_depth(x: torch.Tensor, depth_channel: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A sampled batch's image channels and, with `depth_channel`, its last channel: the depth map."""
    return (x[:, :-1], x[:, -1:]) if depth_channel else (x, None)


def with_depth(x: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
    """Images with their depth map as one more channel (unchanged without one)."""
    return x if depth is None else torch.cat([x, depth], 1)


def set_requires_grad(nets: Sequence[nn.Module], flag: bool) -> None:
    """Freeze discriminators during the generator update (saves computing their weight gradients)."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


# --- data -------------------------------------------------------------------------------


@dataclass
class PreviewCase:
    """A held-out volume for sample grids and validation: normalised MR, reference CT (HU) and mask."""

    name: str
    mr_unit: np.ndarray
    ct_hu: np.ndarray | None  # reference on the MR grid (the phantom's aligned CT), or None
    mask: np.ndarray | None
    mr_depth: np.ndarray | None = None  # with `depth_channel`: intensity.depth_map of the MR


@dataclass
class MR2CTData:
    """Normalised training volumes and preview cases."""

    mr: list[np.ndarray]
    ct: list[np.ndarray]
    masks: list[np.ndarray] | None  # body masks on the MR grids
    preview: list[PreviewCase]
    preview_split: str  # "val" (held out) or "train"
    mr_depth: list[np.ndarray] | None = None  # with `depth_channel`: intensity.depth_map of each volume
    ct_depth: list[np.ndarray] | None = None


def load_mr2ct_data(config: MR2CTConfig, *, paired: bool) -> MR2CTData:
    """Read and normalise training data from `config.phantom` or `config.mr_dir`/`ct_dir`/`mask_dir`.

    The phantom's training CT is `ct.nii.gz`, slightly misaligned to the MR like real paired
    data; its aligned ground truth is used only for previews and validation of held-out subjects.
    """
    if config.phantom:
        if config.mr_dir or config.ct_dir or config.mask_dir:
            raise UserError("give either a phantom or --mr/--ct folders, not both")
        return _phantom_data(config, paired=paired)
    if config.mr_dir and config.ct_dir:
        return _folder_data(config, paired=paired)
    raise UserError("no training data: give a phantom root or both --mr DIR and --ct DIR")


def _norm_mr(config: MR2CTConfig, array: np.ndarray) -> np.ndarray:
    return mr_to_unit(array, tuple(config.mr_percentiles))


def _norm_ct(config: MR2CTConfig, array: np.ndarray) -> np.ndarray:
    return np.asarray(ct_to_unit(array, tuple(config.hu_window), config.ct_scale, config.asinh_width), dtype=np.float32)


def _phantom_data(config: MR2CTConfig, *, paired: bool) -> MR2CTData:
    from counterfeit.data.phantom import load_dataset, subject_paths
    from counterfeit.data.volumes import read_volume

    info = load_dataset(config.phantom)
    train_ids = info["splits"].get("train", [])
    if not train_ids:
        raise UserError(f"{config.phantom}: the phantom has no training subjects")
    mr, ct, masks = [], [], []
    for sid in train_ids:
        paths = subject_paths(info["root"], sid)
        mr.append(read_volume(paths["mr"], modality="mr"))
        ct.append(read_volume(paths["ct"], modality="ct"))
        masks.append(read_volume(paths["mask"], modality="mask").array)
    held_out = info["splits"].get("val") or []
    split = "val" if held_out else "train"
    preview = []
    for sid in (held_out or train_ids)[: config.preview_subjects]:
        paths = subject_paths(info["root"], sid)
        mr_vol = read_volume(paths["mr"], modality="mr")
        preview.append(PreviewCase(
            sid,
            _norm_mr(config, mr_vol.array),
            read_volume(paths["ct_aligned"], modality="ct").array,
            read_volume(paths["mask"], modality="mask").array.astype(bool),
            _depth(config, mr_vol, "mr"),
        ))
    return MR2CTData([_norm_mr(config, v.array) for v in mr], [_norm_ct(config, v.array) for v in ct], masks,
                     preview, split, *_depths(config, mr, ct, paired=paired))


def _depth(config: MR2CTConfig, volume: Any, modality: str) -> np.ndarray | None:
    """The volume's depth map when the config asks for one; from its own body mask, as synthesis computes it."""
    return depth_map(volume.array, modality, volume.spacing) if config.depth_channel else None


def _depths(config: MR2CTConfig, mr: list[Any], ct: list[Any], *, paired: bool) -> tuple[list | None, list | None]:
    """Depth maps of the training MRs and, for unpaired training (only there do CTs enter a network), CTs."""
    if not config.depth_channel:
        return None, None
    return [_depth(config, v, "mr") for v in mr], None if paired else [_depth(config, v, "ct") for v in ct]


def _folder_data(config: MR2CTConfig, *, paired: bool) -> MR2CTData:
    from counterfeit.data.volumes import axial_view, check_same_grid, grid_mismatch, read_volume
    from counterfeit.medical.evaluate import find_subject_volumes

    mr_paths = find_subject_volumes(config.mr_dir, name_options=None)
    ct_paths = find_subject_volumes(config.ct_dir, name_options=None)
    mask_paths = find_subject_volumes(config.mask_dir, name_options=None) if config.mask_dir else {}
    if mask_paths:
        missing = sorted(set(mr_paths) - set(mask_paths))
        if missing:
            raise UserError(f"{config.mask_dir}: no mask for MR subject(s) {', '.join(missing[:5])}")
    if paired:
        missing = sorted(set(mr_paths) - set(ct_paths))
        if missing:
            raise UserError(f"{config.ct_dir}: paired training needs a CT named like each MR; missing {', '.join(missing[:5])}")
    def read_axial(path: Path, modality: str) -> Any:
        """Axial slices whatever the file's axis order, as synthesis sees them (`volumes.axial_view`)."""
        return axial_view(read_volume(path, modality=modality))[0]

    mr_vols = {s: read_axial(p, "mr") for s, p in mr_paths.items()}
    ct_vols = {s: read_axial(p, "ct") for s, p in ct_paths.items()}
    masks = {s: read_axial(p, "mask") for s, p in mask_paths.items()}
    for s, m in masks.items():
        check_same_grid(mr_vols[s], m, (str(mr_paths[s]), str(mask_paths[s])))
    val_ids = _held_out_subjects(config, mr_vols, ct_vols, mr_paths, ct_paths)
    subjects = [s for s in sorted(mr_vols) if s not in val_ids]
    if paired:
        for s in subjects:
            check_same_grid(mr_vols[s], ct_vols[s], (str(mr_paths[s]), str(ct_paths[s])))
    # a held-out subject's CT stays out of the unpaired CT pool too: validation must not score seen anatomy
    ct_subjects = subjects if paired else [s for s in sorted(ct_vols) if s not in val_ids]
    ct_list = [_norm_ct(config, ct_vols[s].array) for s in ct_subjects]
    mr_list = [_norm_mr(config, mr_vols[s].array) for s in subjects]
    mask_list = [masks[s].array for s in subjects] if masks else None
    mr_depth, ct_depth = _depths(config, [mr_vols[s] for s in subjects], [ct_vols[s] for s in ct_subjects], paired=paired)
    def network_inputs(s: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A subject's normalised MR and depth map: a training subject's are already computed."""
        if s in subjects:
            i = subjects.index(s)
            return mr_list[i], mr_depth[i] if mr_depth else None
        return _norm_mr(config, mr_vols[s].array), _depth(config, mr_vols[s], "mr")

    preview = []
    for s in (val_ids or subjects)[: config.preview_subjects]:
        ref = ct_vols.get(s)
        # only a CT on the MR's grid can be scored voxel by voxel (train_mae_hu when nothing is held out)
        same_grid = ref is not None and grid_mismatch(mr_vols[s], ref) is None
        mr_unit, depth = network_inputs(s)
        preview.append(PreviewCase(s, mr_unit, ref.array if same_grid else None,
                                   masks[s].array.astype(bool) if s in masks else None, depth))
    return MR2CTData(mr_list, ct_list, mask_list, preview, "val" if val_ids else "train", mr_depth, ct_depth)


def _held_out_subjects(config: MR2CTConfig, mr_vols: dict[str, Any], ct_vols: dict[str, Any],
                       mr_paths: dict[str, Path], ct_paths: dict[str, Path]) -> list[str]:
    """The last `val_subjects` subjects (by name) whose CT lies on their MR's grid, so that MAE can be scored.

    Subjects whose same-named CT lies on another grid are passed over (unpaired training does not need registered
    CTs), but if that leaves too few, the error says why the first of them did not qualify.
    """
    from counterfeit.data.volumes import grid_mismatch

    n = config.val_subjects
    if not n:
        return []
    mismatches = {s: grid_mismatch(mr_vols[s], ct_vols[s], (str(mr_paths[s]), str(ct_paths[s])))
                  for s in sorted(mr_vols) if s in ct_vols}
    scorable = [s for s, mismatch in mismatches.items() if mismatch is None]
    if len(scorable) < n:
        off_grid = [s for s, mismatch in mismatches.items() if mismatch is not None]
        why = (f"; e.g. {ct_paths[off_grid[0]]}: {mismatches[off_grid[0]]}" if off_grid else "")
        raise UserError(f"--val-subjects {n}: only {len(scorable)} subject(s) have a CT named like the MR on the "
                        f"same grid, which validation needs (registered MR and CT, as in SynthRAD2023){why}")
    if len(mr_vols) - n < 1:
        raise UserError(f"--val-subjects {n} leaves no subject to train on ({len(mr_vols)} MR volumes)")
    return scorable[-n:]


def _warn_if_slices_are_smaller(image_size: int, volumes: list[np.ndarray]) -> None:
    """Slices smaller than the training size are padded: legitimate at an edge, wasteful when it is all of them."""
    import warnings

    height = max(v.shape[1] for v in volumes)
    width = max(v.shape[2] for v in volumes)
    if image_size > max(height, width):
        warnings.warn(f"--image-size {image_size} is larger than every training slice (at most {height}x{width} "
                      f"voxels): the networks will mostly see padding; --image-size {max(height, width)} or less "
                      f"fits the data", stacklevel=2)


# --- the base recipe --------------------------------------------------------------------


class MR2CTRecipe(Recipe):
    """Data setup, sample grids, validation MAE and the inference spec shared by MR -> CT recipes.

    Subclasses build their networks, set `paired_data`, and implement `make_sampler`,
    `synthesis_generator` and (if not the ResNet's 4) `size_multiple`.
    """

    paired_data: ClassVar[bool] = False
    size_multiple: int = 4
    log_labels: ClassVar[dict[str, str]] = {
        "val_mae_hu": "validation MAE in the mask (HU)",
        "train_mae_hu": "MAE on a training subject (HU)",
    }

    @classmethod
    def retotal_config(cls, config: dict[str, Any], old_steps: int, new_steps: int) -> dict[str, Any]:
        """A decay that ends at the run's total (the CLI's and the demo's) ends at the new total, and starts at the
        same fraction of it: an extended run does not go on at the learning rate of 0 it had decayed to."""
        start, end = config["lr_decay_start"], config["lr_decay_end"]
        if end != old_steps or end <= start:
            return config
        return {**config, "lr_decay_start": round(start * new_steps / old_steps), "lr_decay_end": new_steps}

    def setup_data(self) -> None:
        self.data = load_mr2ct_data(self.config, paired=self.paired_data)
        _warn_if_slices_are_smaller(self.config.image_size, self.data.mr)
        self.sampler = self.make_sampler(self.data)

    def make_sampler(self, data: MR2CTData) -> Any:
        raise NotImplementedError

    def synthesis_generator(self) -> nn.Module:
        raise NotImplementedError

    def synthesis_spec(self) -> Any:
        from counterfeit.medical.synthesize import SynthesisSpec

        c = self.config
        return SynthesisSpec(self.synthesis_generator(), context=c.context, multiple=self.size_multiple,
                             mr_percentiles=tuple(c.mr_percentiles), hu_window=tuple(c.hu_window),
                             ct_scale=c.ct_scale, asinh_width=c.asinh_width, depth_channel=c.depth_channel)

    def _preview(self) -> list[PreviewCase]:
        data = getattr(self, "data", None)
        return data.preview if data is not None else []

    def metrics(self, step: int) -> dict[str, float]:
        """Mean absolute error (HU, inside the body) of whole-volume synthesis on the preview cases."""
        from counterfeit.medical.intensity import body_mask, unit_to_ct
        from counterfeit.medical.synthesize import input_slices, predict_unit_slices

        cases = [c for c in self._preview() if c.ct_hu is not None]
        if not cases:
            return {}
        spec = self.synthesis_spec()
        errors = []
        for case in cases:
            unit = predict_unit_slices(spec, input_slices(spec, case.mr_unit, case.mr_depth))
            sct = unit_to_ct(unit, spec.hu_window, spec.ct_scale, spec.asinh_width)
            inside = case.mask if case.mask is not None else body_mask(case.ct_hu, "ct")
            errors.append(float(np.abs(sct - case.ct_hu)[inside].mean()))
        return {f"{self.data.preview_split}_mae_hu": float(np.mean(errors))}

    def write_samples(self, step: int, out_dir: Path) -> None:
        """A grid per call: rows of axial slices, columns MR | synthetic CT | real CT | |error|."""
        from counterfeit.medical.intensity import unit_to_ct
        from counterfeit.medical.synthesize import input_slices, predict_unit_slices

        cases = self._preview()
        if not cases:
            return
        spec = self.synthesis_spec()
        rows = []
        for case in cases:
            for z in _preview_levels(case):
                # Only the slab around z is sliced; at the volume's ends it repeats end slices as inference does.
                first, last = max(0, z - spec.context // 2), z + spec.context // 2 + 1
                depth = case.mr_depth[first:last] if case.mr_depth is not None else None
                window = input_slices(spec, case.mr_unit[first:last], depth)
                mid = z - first
                sct = unit_to_ct(predict_unit_slices(spec, window[mid : mid + 1])[0], spec.hu_window, spec.ct_scale,
                                 spec.asinh_width)
                ref = case.ct_hu[z] if case.ct_hu is not None else None
                rows.append((case.mr_unit[z], sct, ref))
        write_sample_grid(rows, Path(out_dir) / f"step_{step:08d}.png", title=f"step {step}")


def _preview_levels(case: PreviewCase) -> list[int]:
    """Axial slice indices at PREVIEW_LEVELS of the body's extent along z."""
    body = case.mask if case.mask is not None else case.mr_unit > -0.75
    zs = np.flatnonzero(body.reshape(body.shape[0], -1).any(axis=1))
    lo, hi = (int(zs[0]), int(zs[-1])) if zs.size else (0, body.shape[0] - 1)
    return sorted({int(round(lo + f * (hi - lo))) for f in PREVIEW_LEVELS})


# --- sample grids -------------------------------------------------------------------------


def write_sample_grid(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], out_png: Path,
                      title: str = "") -> Path:
    """PNG grid: per row MR (normalised), synthetic CT (HU), real CT (HU or None), |error| map."""
    import matplotlib
    from PIL import Image, ImageDraw

    from counterfeit.atomic import atomic_path
    from counterfeit.data.phantom_preview import CT_DISPLAY

    magma = matplotlib.colormaps["magma"]

    def gray(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
        v = np.clip((np.asarray(img, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
        return np.repeat(v[..., None], 3, axis=2)

    tiles = []
    for mr, sct, ref in rows:
        blank = np.full((*mr.shape, 3), 0.15, dtype=np.float32)
        row = [gray(mr, -1.0, 1.0), gray(sct, *CT_DISPLAY)]
        if ref is None:
            row += [blank, blank]
        else:
            err = np.clip(np.abs(sct - ref) / ERROR_DISPLAY_HU, 0.0, 1.0)
            row += [gray(ref, *CT_DISPLAY), magma(err)[..., :3].astype(np.float32)]
        tiles.append(row)
    h = max(t[0].shape[0] for t in tiles)
    w = max(t[0].shape[1] for t in tiles)
    scale = max(1, int(np.ceil(128 / max(h, w))))  # small test images are enlarged for readability
    gap, header = 2, 14
    cell_h, cell_w = h * scale, w * scale
    canvas = np.ones((header + len(tiles) * (cell_h + gap), 4 * (cell_w + gap), 3), dtype=np.float32)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            big = np.kron(tile, np.ones((scale, scale, 1), dtype=np.float32))
            top, left = header + r * (cell_h + gap), c * (cell_w + gap)
            canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
    image = Image.fromarray((canvas * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    labels = ["MR", "synthetic CT", "real CT", f"|error| 0-{ERROR_DISPLAY_HU:g} HU"]
    for c, label in enumerate(labels):
        draw.text((c * (cell_w + gap) + 2, 1), label if c or not title else f"{label} ({title})", fill=(0, 0, 0))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        image.save(tmp, format="PNG")
    return out_png
