"""Image metrics for synthetic CT: MAE, PSNR and SSIM inside a body mask.

Definitions follow the SynthRAD2023 challenge's public evaluation code
(github.com/SynthRAD2023/metrics, `functions/image_metrics.py`, class `ImageMetrics`):

- MAE (HU): mean |ct - sct| over the binarised mask (mask > 0); no clipping.
- PSNR (dB): both volumes clipped to the population range [-1024, 3000] HU, MSE over
  masked voxels, PSNR = 10 log10(4024^2 / MSE) (skimage's `peak_signal_noise_ratio`
  with data_range=4024 on the masked voxels).
- SSIM: both volumes clipped to [-1024, 3000], voxels outside the mask set to -1024,
  shifted by +1024 (values in [0, 4024]); the full SSIM map of the whole volume from
  `skimage.metrics.structural_similarity(data_range=4024, full=True)` (7-voxel window,
  so 3D volumes use a 7x7x7 window); the map is averaged over the mask after cropping
  3 voxels off every border, exactly as skimage does for its own mean.

`psnr_peak="seed"` gives the seed talk's (Wolterink et al. 2017) PSNR instead:
20 log10(4095 / sqrt(MSE)) with MSE over masked voxels, no clipping (12-bit CT range).

Identical images inside the mask give MSE = 0 and PSNR = +inf (returned as float('inf')).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from counterfeit.errors import InputFileError, UserError

HU_RANGE = (-1024.0, 3000.0)  # SynthRAD2023 population dynamic range
SEED_PEAK = 4095.0  # the talk's 12-bit CT peak
PSNR_PEAKS = ("synthrad", "seed")
SSIM_WIN = 7  # skimage's default window; SynthRAD2023 keeps it
METRIC_KEYS = ("mae", "psnr", "ssim")


def image_metrics(
    ct: np.ndarray, sct: np.ndarray, mask: np.ndarray, *, psnr_peak: str = "synthrad"
) -> dict[str, float]:
    """MAE (HU), PSNR (dB) and SSIM of a synthetic CT `sct` against `ct`, inside `mask`.

    All arrays share one shape (2D or 3D, in HU; mask > 0 marks the body). See the
    module docstring for the exact definitions; `psnr_peak` picks "synthrad" (default,
    clipped, peak 4024) or "seed" (unclipped, peak 4095).
    """
    if psnr_peak not in PSNR_PEAKS:
        raise UserError(f"psnr_peak must be one of {PSNR_PEAKS}, got {psnr_peak!r}")
    ct, sct, inside = _validated(ct, sct, mask)

    diff = ct[inside] - sct[inside]
    mae = float(np.mean(np.abs(diff)))
    if psnr_peak == "seed":
        psnr = _psnr(float(np.mean(diff**2)), SEED_PEAK)
    else:
        lo, hi = HU_RANGE
        clipped = np.clip(ct[inside], lo, hi) - np.clip(sct[inside], lo, hi)
        psnr = _psnr(float(np.mean(clipped**2)), hi - lo)
    return {"mae": mae, "psnr": psnr, "ssim": masked_ssim(ct, sct, inside)}


def errors_by_label(
    cases: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], names: Mapping[int, str] | None = None
) -> list[dict]:
    """Where the MAE comes from: errors per label of a label map, pooled over `cases` of (ct, sct, mask, labels).

    Only voxels inside the mask (mask > 0) count. One row per label found there, in label order:
    label, name (from `names`, else the number), voxels, fraction of the masked voxels, mae, bias
    (mean of sct - ct: + means too bright) and contribution = fraction * mae (HU), so the
    contributions add up to the pooled MAE of all masked voxels (which weighs subjects by their
    voxels, unlike the mean of per-subject MAEs).
    """
    names = dict(names or {})
    voxels: dict[int, int] = {}
    abs_sum: dict[int, float] = {}
    signed_sum: dict[int, float] = {}
    for ct, sct, mask, labels in cases:
        ct, sct, inside = _validated(ct, sct, mask, min_size=1)
        labels = np.asarray(labels)
        if labels.shape != ct.shape:
            raise UserError(f"label map shape {tuple(labels.shape)} differs from the images' {tuple(ct.shape)}")
        lab = labels[inside].astype(np.int64)
        diff = sct[inside] - ct[inside]
        for value in np.unique(lab):
            sel = lab == value
            key = int(value)
            voxels[key] = voxels.get(key, 0) + int(sel.sum())
            abs_sum[key] = abs_sum.get(key, 0.0) + float(np.abs(diff[sel]).sum())
            signed_sum[key] = signed_sum.get(key, 0.0) + float(diff[sel].sum())
    total = sum(voxels.values())
    rows = []
    for key in sorted(voxels):
        n = voxels[key]
        rows.append({"label": key, "name": names.get(key, str(key)), "voxels": n, "fraction": n / total,
                     "mae": abs_sum[key] / n, "bias": signed_sum[key] / n, "contribution": abs_sum[key] / total})
    return rows


def masked_ssim(ct: np.ndarray, sct: np.ndarray, inside: np.ndarray) -> float:
    """SynthRAD2023 SSIM: clip, blank outside the mask, shift to [0, 4024], average the map in the mask.

    Returns NaN if no mask voxel lies at least 3 voxels from the border (the map is
    cropped there, as in the reference code).
    """
    from skimage.metrics import structural_similarity

    lo, hi = HU_RANGE
    a = np.where(inside, np.clip(ct, lo, hi), lo) - lo
    b = np.where(inside, np.clip(sct, lo, hi), lo) - lo
    _, ssim_map = structural_similarity(a, b, data_range=hi - lo, full=True, win_size=SSIM_WIN)
    pad = (SSIM_WIN - 1) // 2
    core = tuple(slice(pad, n - pad) for n in inside.shape)
    values = ssim_map[core][inside[core]]
    return float(values.mean(dtype=np.float64)) if values.size else float("nan")


def _psnr(mse: float, peak: float) -> float:
    return float("inf") if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _validated(ct: np.ndarray, sct: np.ndarray, mask: np.ndarray,
               min_size: int = SSIM_WIN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 copies of ct/sct and the boolean mask, after shape, mask and finiteness checks.

    `min_size`: voxels needed along every axis (SSIM's window by default; per-voxel errors need 1).
    """
    ct, sct, mask = np.asarray(ct), np.asarray(sct), np.asarray(mask)
    if not (ct.shape == sct.shape == mask.shape):
        raise UserError(
            f"shapes differ: ct {tuple(ct.shape)}, synthetic ct {tuple(sct.shape)}, mask {tuple(mask.shape)}"
        )
    if ct.ndim not in (2, 3) or min(ct.shape) < min_size:
        why = " (the SSIM window)" if min_size == SSIM_WIN else ""
        raise UserError(
            f"images must be 2D or 3D with at least {min_size} voxels along every axis{why}, got shape {tuple(ct.shape)}"
        )
    inside = mask > 0  # SynthRAD2023 binarises the mask this way
    if not inside.any():
        raise UserError("the mask is empty (no voxel > 0): nothing to evaluate")
    ct, sct = ct.astype(np.float64), sct.astype(np.float64)
    for name, arr in (("ct", ct), ("synthetic ct", sct)):
        if not np.isfinite(arr[inside]).all():
            raise UserError(f"{name} has NaN or infinite values inside the mask")
    return ct, sct, inside


def volume_stem(path: str | os.PathLike) -> str:
    """Subject id from a volume file name: 'sub-001.nii.gz' -> 'sub-001' (a DICOM folder keeps its name)."""
    from counterfeit.data.volumes import VOLUME_SUFFIXES

    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_subject_volumes(folder: str | os.PathLike, name: str | None = None, *,
                         name_options: str | None = "--pred-name/--ref-name/--mask-name") -> dict[str, Path]:
    """Map subject id -> volume path in `folder`.

    With `name=None` the folder holds one volume file per subject, matched by stem
    ('sub-001.nii.gz'). With `name` (e.g. 'ct_aligned.nii.gz') each subject is a
    sub-folder holding that file ('sub-001/ct_aligned.nii.gz'), as in a phantom root.
    `name_options`: the caller's options that set `name`, for the error hint (None: it has none).
    """
    from counterfeit.data.volumes import list_volumes

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "folder not found" if not folder.exists() else "is not a folder")
    found: dict[str, Path] = {}
    if name is None:
        for path in list_volumes(folder):
            stem = volume_stem(path)
            if stem in found:
                raise InputFileError(folder, f"two volumes for subject {stem!r}: {found[stem].name}, {path.name}")
            found[stem] = Path(path)
        where = "no volume files (.nii.gz, .nii, .mha, .mhd, .nrrd) or DICOM series folders"
        if any(p.is_dir() for p in folder.iterdir()):
            where += (f"; for one folder per subject, name the file inside them ({name_options})" if name_options
                      else "; sub-folders are not searched: put one volume file per subject here, named by subject")
    else:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if (sub / name).is_file():
                found[sub.name] = sub / name
        where = f"no subject folders containing {name}"
    if not found:
        raise InputFileError(folder, where)
    return found


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    mask_dir: str | os.PathLike,
    *,
    psnr_peak: str = "synthrad",
    pred_name: str | None = None,
    ref_name: str | None = None,
    mask_name: str | None = None,
) -> list[dict]:
    """Per-subject metrics for every synthetic CT in `pred_dir`, sorted by subject.

    Subjects are matched by stem (or by sub-folder when the matching `*_name` is given,
    see `find_subject_volumes`); the three volumes of a subject must share one grid (shape,
    spacing, origin, direction). Every predicted subject needs a reference CT and a mask;
    extra reference/mask subjects (e.g. training cases in a phantom root) are ignored.
    Rows are {"subject", "mae", "psnr", "ssim"}.
    """
    from counterfeit.data.volumes import check_same_grid, read_volume

    if psnr_peak not in PSNR_PEAKS:
        raise UserError(f"--psnr-peak must be one of {PSNR_PEAKS}, got {psnr_peak!r}")
    preds = find_subject_volumes(pred_dir, pred_name)
    refs = find_subject_volumes(ref_dir, ref_name)
    masks = find_subject_volumes(mask_dir, mask_name)
    for label, folder, available in (("reference CT", ref_dir, refs), ("mask", mask_dir, masks)):
        missing = sorted(set(preds) - set(available))
        if missing:
            raise UserError(
                f"{folder}: no {label} for predicted subject(s) {', '.join(missing)} "
                f"(available: {_first(sorted(available))})"
            )
    rows = []
    for subject in sorted(preds):
        ct = read_volume(refs[subject], modality="ct")
        sct = read_volume(preds[subject], modality="ct")
        mask = read_volume(masks[subject], modality="mask")
        # Voxel-wise metrics are only meaningful on one grid (`check_same_grid`).
        check_same_grid(ct, sct, (str(refs[subject]), str(preds[subject])))
        check_same_grid(ct, mask, (str(refs[subject]), str(masks[subject])))
        try:
            metrics = image_metrics(ct.array, sct.array, mask.array, psnr_peak=psnr_peak)
        except UserError as err:
            raise UserError(f"subject {subject} ({preds[subject]}): {err}") from None
        rows.append({"subject": subject, **metrics})
    return rows


def _first(names: Sequence[str], n: int = 10) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def summarize(rows: Sequence[Mapping[str, float]], keys: Iterable[str] = METRIC_KEYS) -> dict:
    """Mean and sample SD (ddof=1, as in the seed's results table) of each metric over rows.

    Returns {"n": n, key: {"mean": m, "sd": s}, ...}; keys absent from the rows are
    skipped. With a single row the SD is NaN; an infinite PSNR makes mean and SD inf/NaN.
    """
    summary: dict = {"n": len(rows)}
    for key in keys:
        if not rows or any(key not in row for row in rows):
            continue
        values = np.array([float(row[key]) for row in rows], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            sd = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
        summary[key] = {"mean": float(np.mean(values)), "sd": sd}
    return summary
