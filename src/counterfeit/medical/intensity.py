"""Intensity normalisation for MR and CT, and body masks.

Networks see both modalities in [-1, 1] (tanh outputs). CT maps linearly from a fixed HU window,
so `unit_to_ct` recovers Hounsfield units exactly inside the window; MR has no absolute scale,
so each volume is mapped by its own robust percentiles. The converters accept numpy arrays and
also torch tensors (anything with `.clip`), so training code can compute losses in HU.
"""

from __future__ import annotations

import numpy as np

from counterfeit.errors import UserError

HU_WINDOW = (-1024.0, 3000.0)
MR_PERCENTILES = (0.5, 99.5)
CT_BODY_THRESHOLD_HU = -500.0  # between air (-1000) and fat (-100)
MR_BODY_FRACTION = 0.2  # of the 99th percentile: above the background noise, below every tissue but bone


def ct_to_unit(hu, window: tuple[float, float] = HU_WINDOW):
    """Clip Hounsfield units to `window` and map it linearly onto [-1, 1]."""
    lo, hi = _window(window)
    hu = _as_array(hu)
    return (hu.clip(lo, hi) - lo) / (hi - lo) * 2.0 - 1.0  # divide, not multiply: exact at the edges


def unit_to_ct(x, window: tuple[float, float] = HU_WINDOW):
    """Inverse of `ct_to_unit`: [-1, 1] -> HU (values outside [-1, 1] are clipped first)."""
    lo, hi = _window(window)
    x = _as_array(x)
    return (x.clip(-1.0, 1.0) + 1.0) / 2.0 * (hi - lo) + lo


def mr_range(
    mr: np.ndarray, percentiles: tuple[float, float] = MR_PERCENTILES, mask: np.ndarray | None = None
) -> tuple[float, float]:
    """The intensities at the given percentiles of `mr` (within `mask` when given)."""
    mr = np.asarray(mr)
    values = mr[np.asarray(mask, dtype=bool)] if mask is not None else mr.ravel()
    if values.size == 0:
        raise UserError("MR normalisation: the mask selects no voxel")
    lo, hi = np.percentile(values, percentiles)
    if not hi > lo:
        lo_p, hi_p = percentiles
        raise UserError(f"MR normalisation: the volume is constant between its {lo_p}th and {hi_p}th percentiles")
    return float(lo), float(hi)


def mr_to_unit(mr: np.ndarray, percentiles: tuple[float, float] = MR_PERCENTILES, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-volume robust normalisation: the low percentile -> -1, the high one -> 1, clipped (float32)."""
    lo, hi = mr_range(mr, percentiles, mask)
    out = (np.asarray(mr, dtype=np.float32) - lo) * np.float32(2.0 / (hi - lo)) - 1.0
    return np.clip(out, -1.0, 1.0, out=out)


def body_mask(array: np.ndarray, modality: str) -> np.ndarray:
    """The body (head) as a boolean mask: threshold, keep the largest component, fill holes.

    CT thresholds at -500 HU; MR at a fraction of its 99th percentile after light smoothing (MR
    background is noise). Hole filling brings back dark bone, sinuses and CSF enclosed by tissue.
    Works on 2D or 3D arrays.
    """
    from scipy import ndimage

    array = np.asarray(array, dtype=np.float32)
    if modality == "ct":
        fg = array > CT_BODY_THRESHOLD_HU
    elif modality == "mr":
        smooth = ndimage.gaussian_filter(array, 0.7)
        fg = smooth > MR_BODY_FRACTION * np.percentile(smooth, 99)
    else:
        raise UserError(f"body_mask: unknown modality {modality!r}; expected 'ct' or 'mr'")
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(array.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    mask = ndimage.binary_fill_holes(mask)
    if mask.ndim == 3:
        # Cavities open at the volume's top or bottom (a slab through the head) are holes per slice.
        for k in range(mask.shape[0]):
            mask[k] = ndimage.binary_fill_holes(mask[k])
    return mask


def _window(window: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise UserError(f"HU window must be (low, high) with low < high, got {window}")
    return lo, hi


def _as_array(x):
    # torch tensors have .clip and pass through; integer arrays (int16 CT), numbers and lists become float32.
    if isinstance(x, np.ndarray):
        return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
    return x if hasattr(x, "clip") else np.asarray(x, dtype=np.float32)
