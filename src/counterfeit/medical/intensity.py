"""Intensity normalisation for MR and CT, and body masks.

Networks see both modalities in [-1, 1] (tanh outputs). CT maps from a fixed HU window, linearly
or (scale "asinh") through an inverse hyperbolic sine centred on soft tissue, which spreads the few
tens of HU between brain, CSF and fat over more of [-1, 1]; `unit_to_ct` recovers Hounsfield units
exactly inside the window. MR has no absolute scale, so each volume is mapped by its own robust
percentiles. The converters accept numpy arrays and also torch tensors (anything with `.clip`), so
training code can compute losses in HU. `depth_map` gives a volume's depth below its body surface
on the same [-1, 1] footing, an extra input channel for the MR -> CT networks.
"""

from __future__ import annotations

import numpy as np

from counterfeit.errors import UserError

HU_WINDOW = (-1024.0, 3000.0)
MR_PERCENTILES = (0.5, 99.5)
CT_BODY_THRESHOLD_HU = -500.0  # between air (-1000) and fat (-100)
MR_BODY_FRACTION = 0.2  # of the 99th percentile: above the background noise, below every tissue but bone
CT_SCALES = ("linear", "asinh")
# The "asinh" scale: linear within about ASINH_WIDTH_HU of ASINH_CENTRE_HU, logarithmic beyond. With the
# default window its slope at soft tissue is 5.6x the linear scale's, and 2.4x smaller at cortical bone.
ASINH_CENTRE_HU = 40.0
ASINH_WIDTH_HU = 100.0
DEPTH_SCALE_MM = 60.0  # depth_map: depth below the body surface mapped onto [-1, 1] up to this depth


def ct_to_unit(hu, window: tuple[float, float] = HU_WINDOW, scale: str = "linear",
               asinh_width: float = ASINH_WIDTH_HU):
    """Clip Hounsfield units to `window` and map it onto [-1, 1] on `scale` (see CT_SCALES).

    `asinh_width` (HU) sets where the "asinh" scale turns from linear to logarithmic: wider gives bone more of
    [-1, 1] and soft tissue less."""
    lo, hi = _window(window)
    hu = _as_array(hu)
    if _scale(scale) == "asinh":
        a, b = _asinh_coefficients(lo, hi, asinh_width)
        return (_asinh((hu.clip(lo, hi) - ASINH_CENTRE_HU) / asinh_width) * a + b).clip(-1.0, 1.0)
    return (hu.clip(lo, hi) - lo) / (hi - lo) * 2.0 - 1.0  # divide, not multiply: exact at the edges


def unit_to_ct(x, window: tuple[float, float] = HU_WINDOW, scale: str = "linear",
               asinh_width: float = ASINH_WIDTH_HU):
    """Inverse of `ct_to_unit`: [-1, 1] -> HU (values outside [-1, 1] are clipped first)."""
    lo, hi = _window(window)
    x = _as_array(x).clip(-1.0, 1.0)
    if _scale(scale) == "asinh":
        a, b = _asinh_coefficients(lo, hi, asinh_width)
        return (_sinh((x - b) / a) * asinh_width + ASINH_CENTRE_HU).clip(lo, hi)
    return (x + 1.0) / 2.0 * (hi - lo) + lo


def _asinh_coefficients(lo: float, hi: float, width: float) -> tuple[float, float]:
    """a, b with a * asinh((HU - centre) / width) + b equal to -1 at `lo` and 1 at `hi`."""
    if not width > 0:
        raise UserError(f"the asinh scale's width must be > 0 HU, got {width}")
    s_lo, s_hi = (float(np.arcsinh((v - ASINH_CENTRE_HU) / width)) for v in (lo, hi))
    a = 2.0 / (s_hi - s_lo)
    return a, 1.0 - a * s_hi


def _asinh(x):
    return x.asinh() if hasattr(x, "asinh") else np.arcsinh(x)  # a torch tensor, or numpy


def _sinh(x):
    return x.sinh() if hasattr(x, "sinh") else np.sinh(x)


def _scale(scale: str) -> str:
    if scale not in CT_SCALES:
        raise UserError(f"unknown CT scale {scale!r}; expected one of {', '.join(CT_SCALES)}")
    return scale


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


def depth_map(array: np.ndarray, modality: str, spacing: tuple[float, float, float],
              mask: np.ndarray | None = None) -> np.ndarray:
    """Depth below the body surface, normalised like the images: -1 outside the body and at its surface,
    rising linearly to 1 at `DEPTH_SCALE_MM` (mm) and beyond (float32, the volume's shape).

    `spacing` is (x, y, z) in mm as in `Volume.spacing`; the body is `mask` if given, else
    `body_mask(array, modality)`. In a head the scalp, fat and skull lie at nearly fixed depths
    (about 2-20 mm) and CSF and brain deeper, which MR intensity alone cannot tell: bone, air and
    CSF are all dark in T1 (docs/mr2ct_ablation.md, round 27).
    """
    from scipy import ndimage

    array = np.asarray(array)
    body = np.asarray(mask, dtype=bool) if mask is not None else body_mask(array, modality)
    if body.shape != array.shape:
        raise UserError(f"depth map: mask shape {body.shape} differs from the volume's {array.shape}")
    sampling = tuple(float(s) for s in spacing)[::-1][-array.ndim:]  # (x, y, z) -> the array's (z, y, x)
    depth = ndimage.distance_transform_edt(body, sampling=sampling) if body.any() else np.zeros(array.shape)
    return (np.clip(depth / DEPTH_SCALE_MM, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


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
