"""2D (or 2.5D) slices of 3D volumes: training samplers and whole-volume slicing for inference.

Volumes are already normalised to [-1, 1] (see `counterfeit.medical.intensity`), where -1 is
background. Samplers are deterministic given the `np.random.Generator` passed to `sample`: the
training loop seeds one per step, which makes exact resume and sharding possible.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

BACKGROUND = -1.0
BODY_LEVEL = -0.75  # normalised value above which a voxel counts as body when no mask is given
MIN_BODY_FRACTION = 0.05


def volume_slices(array: np.ndarray, axis: int = 0, context: int = 1) -> np.ndarray:
    """All slices along `axis` as (S, context, H, W) float32; 2.5D edges repeat the end slices."""
    _check_context(context)
    vol = np.moveaxis(np.asarray(array, dtype=np.float32), axis, 0)
    half = context // 2
    padded = np.concatenate([vol[:1]] * half + [vol] + [vol[-1:]] * half, axis=0) if half else vol
    windows = np.lib.stride_tricks.sliding_window_view(padded, context, axis=0)  # (S, H, W, context)
    return np.ascontiguousarray(np.moveaxis(windows, -1, 1))


def stack_slices(slices: np.ndarray, axis: int = 0) -> np.ndarray:
    """Inverse of `volume_slices` for one-channel slices: (S, 1, H, W) or (S, H, W) -> volume."""
    slices = np.asarray(slices)
    if slices.ndim == 4:
        if slices.shape[1] != 1:
            raise ValueError(f"stack_slices expects one channel per slice, got shape {slices.shape}")
        slices = slices[:, 0]
    if slices.ndim != 3:
        raise ValueError(f"stack_slices expects (S, 1, H, W) or (S, H, W), got shape {slices.shape}")
    return np.moveaxis(slices, 0, axis)


def pad_to_multiple(
    array: np.ndarray, multiple: int, *, axes: Sequence[int] = (-2, -1), mode: str = "edge"
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad `axes` at their end up to a multiple of `multiple`; `padded[crop_back]` is the input again.

    Generators downsample by 4, so H and W must be multiples of 4; `mode` is numpy.pad's.
    """
    array = np.asarray(array)
    pad = [(0, 0)] * array.ndim
    crop_back = [slice(None)] * array.ndim
    for ax in axes:
        ax = ax % array.ndim
        size = array.shape[ax]
        pad[ax] = (0, (-size) % multiple)
        crop_back[ax] = slice(0, size)
    if any(after for _, after in pad):
        array = np.pad(array, pad, mode=mode)
    return array, tuple(crop_back)


class SliceStack:
    """Many normalised volumes seen as 2D slices along `axis`, with the slices that contain body.

    `items` lists (volume, slice) pairs whose body fraction (from `masks`, else from voxels above
    BODY_LEVEL) reaches `min_body_fraction`; a volume without any such slice keeps all its slices.
    """

    def __init__(
        self,
        volumes: Sequence[np.ndarray],
        *,
        axis: int = 0,
        masks: Sequence[np.ndarray] | None = None,
        min_body_fraction: float = MIN_BODY_FRACTION,
    ) -> None:
        if len(volumes) == 0:
            raise ValueError("SliceStack needs at least one volume")
        if masks is not None and len(masks) != len(volumes):
            raise ValueError(f"got {len(masks)} masks for {len(volumes)} volumes")
        self.axis = axis
        self.volumes = []
        items = []
        for i, vol in enumerate(volumes):
            vol = np.asarray(vol, dtype=np.float32)
            if vol.ndim != 3:
                raise ValueError(f"volume {i} has shape {vol.shape}; 3D volumes are expected")
            vol = np.moveaxis(vol, axis, 0)
            body = np.moveaxis(np.asarray(masks[i]) != 0, axis, 0) if masks is not None else vol > BODY_LEVEL
            if body.shape != vol.shape:
                raise ValueError(f"mask {i} has shape {body.shape}, its volume {vol.shape}")
            fraction = body.reshape(body.shape[0], -1).mean(axis=1)
            keep = np.flatnonzero(fraction >= min_body_fraction)
            if keep.size == 0:
                keep = np.arange(vol.shape[0])
            self.volumes.append(vol)
            items.append(np.stack([np.full_like(keep, i), keep], axis=1))
        self.items = np.concatenate(items).astype(np.int64)  # sorted by volume, then slice
        counts = np.bincount(self.items[:, 0], minlength=len(self.volumes))
        self.item_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.item_count = counts

    def __len__(self) -> int:
        return len(self.items)

    def slice_shape(self, volume: int) -> tuple[int, int]:
        return tuple(self.volumes[volume].shape[1:])

    def slices(self, volume: int, index: int, context: int = 1) -> np.ndarray:
        """Slice `index` of `volume` with its neighbours: (context, H, W); edges repeat end slices."""
        vol = self.volumes[volume]
        half = context // 2
        idx = np.clip(np.arange(index - half, index + half + 1), 0, vol.shape[0] - 1)
        return vol[idx]


class PairedSliceSampler:
    """Random MR/CT training slices from the same subject and slice position (paired data).

    mr_vols, ct_vols: normalised volumes, one pair per subject on the same grid. context: number
    of neighbouring MR slices as channels (1 = 2D, 3 = 2.5D); `ct_context` likewise for CT.
    crop: square crop size (None = whole slices, which must then share one size); slices smaller
    than the crop are padded with background. flip: random left-right flips. masks: body masks
    (one per subject) to find the slices worth training on. mr_aux: optional volumes on the MR
    grids (e.g. depth maps) appended to each MR sample as one more channel, same slice and crop.
    """

    def __init__(
        self,
        mr_vols: Sequence[np.ndarray],
        ct_vols: Sequence[np.ndarray],
        *,
        axis: int = 0,
        context: int = 1,
        crop: int | None = None,
        flip: bool = False,
        masks: Sequence[np.ndarray] | None = None,
        min_body_fraction: float = MIN_BODY_FRACTION,
        ct_context: int = 1,
        mr_aux: Sequence[np.ndarray] | None = None,
    ) -> None:
        if len(mr_vols) != len(ct_vols):
            raise ValueError(f"paired sampling needs as many MR as CT volumes, got {len(mr_vols)} and {len(ct_vols)}")
        for i, (mr, ct) in enumerate(zip(mr_vols, ct_vols)):
            if np.shape(mr) != np.shape(ct):
                raise ValueError(f"subject {i}: MR shape {np.shape(mr)} differs from CT shape {np.shape(ct)}")
        if masks is None:
            # Body where either modality shows it (CT is the more reliable of the two).
            masks = [(np.asarray(mr) > BODY_LEVEL) | (np.asarray(ct) > BODY_LEVEL) for mr, ct in zip(mr_vols, ct_vols)]
        self.mr = SliceStack(mr_vols, axis=axis, masks=masks, min_body_fraction=min_body_fraction)
        self.ct = SliceStack(ct_vols, axis=axis, masks=masks, min_body_fraction=min_body_fraction)
        self.mr_aux = _aux_stack(mr_aux, mr_vols, axis, "mr_aux")
        self.context, self.ct_context, self.crop, self.flip = context, ct_context, crop, flip
        _check_sampler_args(context, ct_context, crop, [self.mr, self.ct])

    def __len__(self) -> int:
        return len(self.mr)

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(mr (B, context, crop, crop), ct (B, ct_context, crop, crop)) float32, same subject and slice."""
        picks = self.mr.items[rng.integers(0, len(self.mr), size=batch_size)]
        windows = _crop_windows(rng, self.mr, picks[:, 0], self.crop, self.flip)
        mr = _gather(self.mr, picks, self.context, windows, self.crop, self.mr_aux)
        ct = _gather(self.ct, picks, self.ct_context, windows, self.crop)
        return mr, ct


class UnpairedSliceSampler:
    """Random MR and CT training slices drawn independently, as in unpaired (CycleGAN) training.

    MR and CT lists may differ in length. When they hold the same subjects in the same order
    (e.g. both taken from a paired data set), `distinct_subjects=True` never pairs an MR slice
    with a CT slice of the same subject. `masks` apply to MR (and to CT if `ct_masks` is None and
    the counts match). `ct_aux` is to CT what `mr_aux` is to MR. Other arguments as in
    `PairedSliceSampler`; crops and flips are independent.
    """

    def __init__(
        self,
        mr_vols: Sequence[np.ndarray],
        ct_vols: Sequence[np.ndarray],
        *,
        axis: int = 0,
        context: int = 1,
        crop: int | None = None,
        flip: bool = False,
        masks: Sequence[np.ndarray] | None = None,
        min_body_fraction: float = MIN_BODY_FRACTION,
        ct_context: int = 1,
        ct_masks: Sequence[np.ndarray] | None = None,
        distinct_subjects: bool = True,
        mr_aux: Sequence[np.ndarray] | None = None,
        ct_aux: Sequence[np.ndarray] | None = None,
    ) -> None:
        if ct_masks is None and masks is not None and len(masks) == len(ct_vols):
            ct_masks = masks
        self.mr = SliceStack(mr_vols, axis=axis, masks=masks, min_body_fraction=min_body_fraction)
        self.ct = SliceStack(ct_vols, axis=axis, masks=ct_masks, min_body_fraction=min_body_fraction)
        self.mr_aux = _aux_stack(mr_aux, mr_vols, axis, "mr_aux")
        self.ct_aux = _aux_stack(ct_aux, ct_vols, axis, "ct_aux")
        self.context, self.ct_context, self.crop, self.flip = context, ct_context, crop, flip
        self.distinct_subjects = distinct_subjects and len(mr_vols) == len(ct_vols) > 1
        _check_sampler_args(context, ct_context, crop, [self.mr, self.ct])

    def __len__(self) -> int:
        return max(len(self.mr), len(self.ct))

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(mr (B, context, crop, crop), ct (B, ct_context, crop, crop)) float32, independent draws."""
        mr_picks = self.mr.items[rng.integers(0, len(self.mr), size=batch_size)]
        if self.distinct_subjects:
            # Draw among the CT items of all other subjects: skip over the MR subject's block.
            start, count = self.ct.item_start[mr_picks[:, 0]], self.ct.item_count[mr_picks[:, 0]]
            u = np.floor(rng.random(batch_size) * (len(self.ct) - count)).astype(np.int64)
            ct_index = np.where(u < start, u, u + count)
        else:
            ct_index = rng.integers(0, len(self.ct), size=batch_size)
        ct_picks = self.ct.items[ct_index]
        mr_windows = _crop_windows(rng, self.mr, mr_picks[:, 0], self.crop, self.flip)
        ct_windows = _crop_windows(rng, self.ct, ct_picks[:, 0], self.crop, self.flip)
        mr = _gather(self.mr, mr_picks, self.context, mr_windows, self.crop, self.mr_aux)
        ct = _gather(self.ct, ct_picks, self.ct_context, ct_windows, self.crop, self.ct_aux)
        return mr, ct


def _check_context(context: int) -> None:
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be an odd number of slices (1 = 2D, 3 = 2.5D), got {context}")


def _check_sampler_args(context: int, ct_context: int, crop: int | None, stacks: list[SliceStack]) -> None:
    _check_context(context)
    _check_context(ct_context)
    if crop is None:
        shapes = {s.slice_shape(i) for s in stacks for i in range(len(s.volumes))}
        if len(shapes) > 1:
            raise ValueError(f"slices differ in size {sorted(shapes)}; set a crop size to batch them")
    elif crop < 1:
        raise ValueError(f"crop must be a positive size, got {crop}")


def _crop_windows(
    rng: np.random.Generator, stack: SliceStack, volumes: np.ndarray, crop: int | None, flip: bool
) -> np.ndarray:
    """Per sample (top, left, flip); always draws the same numbers so streams stay aligned."""
    n = len(volumes)
    sizes = np.array([stack.slice_shape(v) for v in volumes]).reshape(n, 2)
    u = rng.random((n, 3))
    if crop is None:
        top = left = np.zeros(n, dtype=np.int64)
    else:
        top = np.floor(u[:, 0] * (np.maximum(sizes[:, 0] - crop, 0) + 1)).astype(np.int64)
        left = np.floor(u[:, 1] * (np.maximum(sizes[:, 1] - crop, 0) + 1)).astype(np.int64)
    flips = (u[:, 2] < 0.5) & flip
    return np.stack([top, left, flips.astype(np.int64)], axis=1)


def _aux_stack(aux: Sequence[np.ndarray] | None, volumes: Sequence[np.ndarray], axis: int, name: str) -> SliceStack | None:
    """Auxiliary volumes as a SliceStack (only its `slices` are used: samples follow the main stack's picks)."""
    if aux is None:
        return None
    if len(aux) != len(volumes):
        raise ValueError(f"got {len(aux)} {name} volumes for {len(volumes)} images")
    for i, (a, v) in enumerate(zip(aux, volumes)):
        if np.shape(a) != np.shape(v):
            raise ValueError(f"{name} {i} has shape {np.shape(a)}, its image {np.shape(v)}")
    return SliceStack(aux, axis=axis, masks=[np.ones(np.shape(a), dtype=bool) for a in aux])


def _gather(stack: SliceStack, picks: np.ndarray, context: int, windows: np.ndarray, crop: int | None,
            aux: SliceStack | None = None) -> np.ndarray:
    """The picked slices (with `context` neighbours, plus the centre slice of `aux` as a last channel), cropped."""
    out = []
    for (vol, index), (top, left, flipped) in zip(picks, windows):
        img = stack.slices(int(vol), int(index), context)
        if aux is not None:
            img = np.concatenate([img, aux.slices(int(vol), int(index), 1)], axis=0)
        if crop is not None:
            img = img[:, top : top + crop, left : left + crop]
            if img.shape[1] < crop or img.shape[2] < crop:
                pad = ((0, 0), (0, crop - img.shape[1]), (0, crop - img.shape[2]))
                img = np.pad(img, pad, constant_values=BACKGROUND)
        if flipped:
            img = img[:, :, ::-1]
        out.append(img)
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)
