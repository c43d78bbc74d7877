"""Trivial MR -> CT baselines a trained synthesis model must beat.

- `all_soft_tissue_baseline`: every body voxel is soft tissue (40 HU), air (-1000 HU) outside.
- `linear_regression_baseline`: HU as a least-squares line in the normalised MR intensity
  (`counterfeit.medical.intensity.mr_to_unit`) fitted on the body voxels of training pairs.
  MR intensity alone cannot tell bone from air (both dark), so this is a floor, not a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from counterfeit.errors import UserError

AIR_HU = -1000.0
SOFT_TISSUE_HU = 40.0


def all_soft_tissue_baseline(mr: np.ndarray, mask: np.ndarray, hu: float = SOFT_TISSUE_HU) -> np.ndarray:
    """Synthetic CT with `hu` inside the body mask (mask > 0) and air outside; float32, shape of `mr`."""
    mr, inside = _checked_pair(mr, mask, "mr")
    return np.where(inside, np.float32(hu), np.float32(AIR_HU)).astype(np.float32)


@dataclass(frozen=True)
class LinearMrToHu:
    """HU = slope * mr_to_unit(mr, mask) + intercept inside the mask, air outside."""

    slope: float
    intercept: float

    def __call__(self, mr: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mr, inside = _checked_pair(mr, mask, "mr")
        unit = _unit(mr, inside)
        sct = np.full(mr.shape, AIR_HU, dtype=np.float32)
        sct[inside] = self.slope * unit[inside] + self.intercept
        return sct


def linear_regression_baseline(
    train_mr_vols: Sequence[np.ndarray],
    train_ct_vols: Sequence[np.ndarray],
    train_masks: Sequence[np.ndarray],
) -> LinearMrToHu:
    """Least-squares fit of CT HU on normalised MR intensity over all training body voxels.

    Returns a callable `(mr, mask) -> sct` (float32, -1000 HU outside the mask).
    """
    if not (len(train_mr_vols) == len(train_ct_vols) == len(train_masks)) or not train_mr_vols:
        raise UserError(
            "linear baseline needs the same, non-zero number of MR volumes, CT volumes and masks, got "
            f"{len(train_mr_vols)}, {len(train_ct_vols)}, {len(train_masks)}"
        )
    xs, ys = [], []
    for i, (mr, ct, mask) in enumerate(zip(train_mr_vols, train_ct_vols, train_masks)):
        mr, inside = _checked_pair(mr, mask, f"training MR {i}")
        ct = np.asarray(ct, dtype=np.float64)
        if ct.shape != mr.shape:
            raise UserError(f"training pair {i}: MR shape {tuple(mr.shape)} != CT shape {tuple(ct.shape)}")
        xs.append(_unit(mr, inside)[inside].astype(np.float64))
        ys.append(ct[inside])
    x, y = np.concatenate(xs), np.concatenate(ys)
    # Closed form of the 1D least-squares line; a constant MR gives slope 0 (predict the mean HU).
    var = float(np.var(x))
    slope = float(np.mean((x - x.mean()) * (y - y.mean())) / var) if var > 0 else 0.0
    return LinearMrToHu(slope=slope, intercept=float(y.mean() - slope * x.mean()))


def _unit(mr: np.ndarray, inside: np.ndarray) -> np.ndarray:
    from counterfeit.medical.intensity import mr_to_unit

    return np.asarray(mr_to_unit(mr, mask=inside), dtype=np.float64)


def _checked_pair(mr: np.ndarray, mask: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mr, mask = np.asarray(mr), np.asarray(mask)
    if mr.shape != mask.shape:
        raise UserError(f"{name}: shape {tuple(mr.shape)} != mask shape {tuple(mask.shape)}")
    inside = mask > 0
    if not inside.any():
        raise UserError(f"{name}: the mask is empty (no voxel > 0)")
    return mr, inside
