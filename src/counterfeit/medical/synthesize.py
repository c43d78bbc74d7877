"""Whole-volume MR -> CT synthesis with a trained 2D (or 2.5D) generator.

A volume goes through the generator slice by slice (axial slices, whatever the order the file stores
its axes in: `volumes.axial_view`; in batches, without gradients, in eval mode), normalised exactly
as the model was trained (`mr_to_unit` with the percentiles recorded in the run's config). Slices
are padded at their end to the size multiple the network needs and cropped back; the centre output
channel is the slice's synthetic CT, mapped back to Hounsfield units with `unit_to_ct` and the
training HU window. The result lies on the input's grid (spacing, origin, direction copied), so it
overlays the MR in any viewer.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from counterfeit.data.volumes import Volume
from counterfeit.medical.intensity import ASINH_WIDTH_HU, HU_WINDOW, MR_PERCENTILES, depth_map, mr_to_unit, unit_to_ct
from counterfeit.medical.slicing import pad_to_multiple, volume_slices


@dataclass(frozen=True)
class SynthesisSpec:
    """What inference needs to reproduce training: the MR->CT network and its data conventions."""

    generator: nn.Module
    context: int = 1  # neighbouring MR slices stacked as input channels (1 = 2D)
    multiple: int = 4  # input height and width must be multiples of this
    mr_percentiles: tuple[float, float] = MR_PERCENTILES
    hu_window: tuple[float, float] = HU_WINDOW
    ct_scale: str = "linear"
    asinh_width: float = ASINH_WIDTH_HU  # HU, for ct_scale "asinh"
    depth_channel: bool = False  # the MR's depth map (intensity.depth_map) follows its slices as one more channel


def synthesis_spec(model: Any) -> SynthesisSpec:
    """The spec of a trained MR->CT recipe (anything with `synthesis_spec()`), or defaults for a bare network."""
    if isinstance(model, SynthesisSpec):
        return model
    if hasattr(model, "synthesis_spec"):
        return model.synthesis_spec()
    if isinstance(model, nn.Module):
        depth = getattr(model, "depth", None)  # a U-Net needs 2**depth; the ResNet generator 4
        return SynthesisSpec(model, context=getattr(model, "in_channels", 1), multiple=2**depth if depth else 4)
    raise TypeError(f"expected an MR->CT recipe or an nn.Module, got {type(model).__name__}")


@torch.no_grad()
def predict_unit_slices(spec: SynthesisSpec, slices: np.ndarray, *, batch_size: int = 8,
                        device: torch.device | str | None = None) -> np.ndarray:
    """Generator output for normalised input slices (S, context, H, W): the centre channel, (S, H, W) float32."""
    generator = spec.generator
    if device is None:
        device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    padded, crop_back = pad_to_multiple(slices, spec.multiple, mode="edge")
    out = np.empty((slices.shape[0], *slices.shape[2:]), dtype=np.float32)
    try:
        for start in range(0, padded.shape[0], batch_size):
            x = torch.from_numpy(np.array(padded[start : start + batch_size], dtype=np.float32)).to(device)  # a writable copy
            y = generator(x)
            centre = y[:, y.shape[1] // 2]  # a 2.5D CycleGAN outputs a slab; its middle slice is this one
            out[start : start + batch_size] = centre.float().cpu().numpy()[(slice(None), *crop_back[-2:])]
    finally:
        generator.train(was_training)
    return out


def normalise_mr(spec: SynthesisSpec, mr: np.ndarray) -> np.ndarray:
    """MR voxels -> [-1, 1] exactly as in training."""
    return mr_to_unit(mr, tuple(spec.mr_percentiles))


def input_slices(spec: SynthesisSpec, mr_unit: np.ndarray, mr_depth: np.ndarray | None = None) -> np.ndarray:
    """The generator's input for a normalised MR volume (axis 0 slices): (S, context [+ 1 depth], H, W)."""
    slices = volume_slices(mr_unit, axis=0, context=spec.context)
    if not spec.depth_channel:
        return slices
    if mr_depth is None:
        raise ValueError("this model takes the MR's depth map as an input channel: pass mr_depth")
    return np.concatenate([slices, volume_slices(mr_depth, axis=0, context=1)], axis=1)


def synthesize_volume(model: Any, mr: Volume, *, batch_size: int = 8) -> Volume:
    """Synthetic CT (float32 HU) for the MR volume `mr`, on the same grid.

    `model`: a trained MR->CT recipe (e.g. `load_run(run_dir)`), a `SynthesisSpec`, or a bare
    generator (then: context from its input channels, default normalisation and HU window).
    """
    from counterfeit.data.volumes import axial_view

    spec = synthesis_spec(model)
    if mr.array.ndim != 3:
        raise ValueError(f"synthesize_volume expects a 3D volume, got shape {mr.array.shape}")
    axial, back = axial_view(mr)  # the networks were trained on axial slices
    depth = depth_map(axial.array, "mr", axial.spacing) if spec.depth_channel else None
    unit = predict_unit_slices(spec, input_slices(spec, normalise_mr(spec, axial.array), depth), batch_size=batch_size)
    hu = unit_to_ct(unit, tuple(spec.hu_window), spec.ct_scale, spec.asinh_width).astype(np.float32)
    return mr.with_array(np.ascontiguousarray(back(hu)))


def output_paths(input_path: Path, output_path: Path, *, input_name: str | None = None,
                 suffix: str = ".nii.gz") -> list[tuple[Path, Path]]:
    """(input, output) pairs: a file -> that file (or `<input's name><suffix>` in it, when `output_path` is an
    existing folder); a folder -> one output per subject in `output_path`.

    A folder holds one volume per subject (files or DICOM series folders), or, with `input_name`
    (e.g. 'mr.nii.gz'), one sub-folder per subject holding that file (a phantom root). Outputs
    are named `<subject><suffix>`.
    """
    from counterfeit.data.volumes import WRITE_SUFFIXES
    from counterfeit.errors import InputFileError, UserError
    from counterfeit.medical.evaluate import find_subject_volumes, volume_stem

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise InputFileError(input_path, "file or folder not found")
    is_series = input_path.is_dir() and input_name is None and _is_dicom_series(input_path)
    if input_path.is_file() or is_series:
        if output_path.is_dir():
            output_path = output_path / f"{volume_stem(input_path)}{suffix}"
        if not output_path.name.lower().endswith(WRITE_SUFFIXES):
            raise UserError(f"{output_path}: the output file needs a volume extension ({', '.join(WRITE_SUFFIXES)})")
        return _not_over_inputs([(input_path, output_path)])
    if not suffix.lower().endswith(WRITE_SUFFIXES) or not suffix.startswith("."):
        raise UserError(f"output suffix {suffix!r} must be one of {', '.join(WRITE_SUFFIXES)}")
    if output_path.name.lower().endswith(WRITE_SUFFIXES) or (output_path.exists() and not output_path.is_dir()):
        raise UserError(f"{output_path}: the input is a folder, so the output must be a folder too")
    if input_name is None:
        from counterfeit.data.volumes import list_volumes

        if not list_volumes(input_path):
            hint = "; for one sub-folder per subject, name the MR file inside them with --input-name (e.g. mr.nii.gz)"
            raise InputFileError(input_path, "no volume files or DICOM series folders" +
                                 (hint if any(p.is_dir() for p in input_path.iterdir()) else ""))
    subjects = find_subject_volumes(input_path, input_name)
    return _not_over_inputs([(path, output_path / f"{subject}{suffix}") for subject, path in sorted(subjects.items())])


def _not_over_inputs(pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Refuse, before anything is written, outputs that would replace an input MR (`--output` = the input's folder)."""
    from counterfeit.errors import UserError

    inputs = {src.resolve(): src for src, _ in pairs}
    for src, dest in pairs:
        if dest.resolve() in inputs:
            raise UserError(f"{dest}: the synthetic CT would overwrite the input MR {inputs[dest.resolve()]}; "
                            "give --output a folder or file of its own")
    return pairs


def _is_dicom_series(folder: Path) -> bool:
    from counterfeit.data.volumes import _holds_dicom

    return _holds_dicom(folder)


def synthesize_path(model_dir: str | os.PathLike, input_path: str | os.PathLike, output_path: str | os.PathLike,
                    device: str = "auto", *, input_name: str | None = None, suffix: str = ".nii.gz",
                    batch_size: int = 8, model: Any = None, weights: str = "best",
                    dtype: str = "float32") -> list[tuple[Path, float]]:
    """Synthesize CT for an MR file (-> file) or a folder of MR volumes (-> folder).

    Loads the run `model_dir`'s `weights` checkpoint (`load_mr2ct_run`; unless `model` is given), writes each
    output atomically in the format its extension names (HU as `dtype`: float32, or int16 rounded), and returns
    (output path, seconds for that volume) pairs. Seconds cover read, inference and write.
    """
    from counterfeit.atomic import ensure_folder
    from counterfeit.data.volumes import probe_volume, read_volume, write_volume
    from counterfeit.errors import InputFileError, UserError

    pairs = output_paths(Path(input_path), Path(output_path), input_name=input_name, suffix=suffix)
    for src, _ in pairs:  # every input, before any output is written: a bad last one leaves no partial output
        probe_volume(src)
    for folder in {dest.parent for _, dest in pairs}:  # before any volume is computed
        ensure_folder(folder)
    if model is None:
        model = load_mr2ct_run(Path(model_dir), device, weights)
    results = []
    for src, dest in pairs:
        t0 = time.perf_counter()
        mr = read_volume(src, modality="mr")
        try:
            sct = synthesize_volume(model, mr, batch_size=batch_size)
        except UserError as err:  # e.g. a constant MR: name the file, as every input error does
            raise InputFileError(src, str(err)) from None
        write_volume(sct, dest, dtype=dtype)
        results.append((dest, time.perf_counter() - t0))
    return results


def load_mr2ct_run(model_dir: str | os.PathLike, device: str = "auto", weights: str = "best") -> Any:
    """A trained MR->CT recipe from its run directory; a clear error for other kinds of runs. `weights`: "best" (the
    checkpoint with the lowest validation MAE, when the run kept one) or "latest"."""
    from counterfeit.errors import UserError
    from counterfeit.train.loop import load_run, read_run_config

    model_dir = Path(model_dir)
    kind = read_run_config(model_dir).get("recipe")
    if kind not in MR2CT_RECIPES:
        raise UserError(f"{model_dir}: a {kind!r} run cannot synthesize CT from MR (needs one of {', '.join(MR2CT_RECIPES)})")
    return load_run(model_dir, device, weights)


MR2CT_RECIPES = ("cyclegan", "paired")
