"""Phantom tissue label maps paired with MR or CT slices: the seed's "semantic labels -> MRI / CT".

Axial slices of `counterfeit.data.phantom` subjects: the tissue labels (ids as in
`phantom.TISSUES`) and, aligned with them, either the CT in the labels' pose
(`ct_ground_truth` / `ct_aligned.nii.gz`, mapped to [-1, 1] with `ct_to_unit`) or the MR
(per-volume robust normalisation `mr_to_unit` inside the body mask). Slices with little
body are skipped. The body mask comes along for evaluation (MAE in HU inside the mask).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from counterfeit.data.layouts import LayoutPairs, Palette, resize_images, resize_labels
from counterfeit.errors import UserError

MODALITIES = ("ct", "mr")
PHANTOM_PALETTE = Palette(
    ("air", "scalp", "fat", "cortical bone", "diploe", "csf", "grey matter", "white matter", "sinus air"),
    np.array([[0, 0, 0], [205, 140, 110], [250, 225, 110], [255, 255, 255], [185, 160, 120],
              [60, 120, 220], [130, 130, 130], [205, 205, 205], [0, 150, 150]], dtype=np.uint8),
)
MIN_BODY_FRACTION = 0.05


def _check_palette() -> None:
    from counterfeit.data.phantom import TISSUES

    if [TISSUES[i] for i in sorted(TISSUES)] != list(PHANTOM_PALETTE.names) or sorted(TISSUES) != list(range(len(TISSUES))):
        raise RuntimeError("PHANTOM_PALETTE is out of date with counterfeit.data.phantom.TISSUES")


def slices_from_volumes(labels: np.ndarray, image: np.ndarray, mask: np.ndarray, modality: str, group: str,
                        size: tuple[int, int] | None = None, min_body_fraction: float = MIN_BODY_FRACTION) -> LayoutPairs:
    """Axial slices of one subject's (z, y, x) labels / image (CT in HU or MR) / mask, as LayoutPairs."""
    from counterfeit.medical.intensity import ct_to_unit, mr_to_unit

    if modality not in MODALITIES:
        raise UserError(f"phantom layouts: modality must be one of {MODALITIES}, got {modality!r}")
    mask = np.asarray(mask) > 0
    unit = ct_to_unit(np.asarray(image, dtype=np.float32)) if modality == "ct" else mr_to_unit(image, mask=mask)
    keep = np.flatnonzero(mask.mean(axis=(1, 2)) >= min_body_fraction)
    labs, imgs, masks = np.asarray(labels)[keep], unit[keep, None].astype(np.float32), mask[keep]
    if size is not None:
        labs, masks = resize_labels(labs, size), resize_labels(masks, size)
        imgs = resize_images(imgs, size)
    names = [f"{group}-z{z:03d}" for z in keep]
    return LayoutPairs(labs.astype(np.uint8), imgs, names, masks.astype(bool), [group] * len(keep))


def concat_pairs(parts: Sequence[LayoutPairs]) -> LayoutPairs:
    """One LayoutPairs from several (e.g. one per subject)."""
    if not parts:
        raise UserError("no layout/image pairs to concatenate")
    masks = [p.masks for p in parts]
    return LayoutPairs(
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.images for p in parts]),
        [n for p in parts for n in p.names],
        np.concatenate(masks) if all(m is not None for m in masks) else None,
        [g for p in parts for g in (p.groups or p.names)],
    )


def phantom_layout_pairs(modality: str, subjects: Sequence[int], *, height: int = 64, width: int = 64, depth: int = 32,
                         seed: int = 0, min_body_fraction: float = MIN_BODY_FRACTION) -> LayoutPairs:
    """Render phantom subjects `subjects` (indices) in memory at (depth, height, width) and slice them.

    Subject i is `make_subject(subject_seed(seed, i))`, exactly the subject `counterfeit phantom
    --seed seed` writes as sub-00i; the target is the CT in the labels' pose (no misalignment).
    """
    from counterfeit.data.phantom import make_subject, subject_id, subject_seed

    _check_palette()
    parts = []
    for i in subjects:
        s = make_subject(subject_seed(seed, i), (depth, height, width), misalign=False)
        image = s["ct_ground_truth"] if modality == "ct" else s["mr"]
        parts.append(slices_from_volumes(s["labels"], image, s["mask"], modality, subject_id(i),
                                         min_body_fraction=min_body_fraction))
    return concat_pairs(parts)


def phantom_dir_pairs(root: str | os.PathLike, modality: str, split: str = "train", *, size: tuple[int, int] | None = None,
                      min_body_fraction: float = MIN_BODY_FRACTION) -> LayoutPairs:
    """Slices of the subjects of `split` in a dataset written by `counterfeit phantom` (labels, ct_aligned/mr, mask)."""
    from counterfeit.data.phantom import load_dataset, subject_paths
    from counterfeit.data.volumes import read_volume

    _check_palette()
    info = load_dataset(root)
    ids = info["splits"].get(split)
    if not ids:
        raise UserError(f"{info['root']}: split {split!r} has no subjects (splits: {sorted(info['splits'])})")
    parts = []
    for sid in ids:
        paths = subject_paths(info["root"], sid)
        labels = read_volume(paths["labels"]).array
        image = read_volume(paths["ct_aligned" if modality == "ct" else "mr"]).array
        mask = read_volume(paths["mask"]).array
        parts.append(slices_from_volumes(labels, image, mask, modality, sid, size, min_body_fraction))
    return concat_pairs(parts)


__all__ = ["MODALITIES", "PHANTOM_PALETTE", "concat_pairs", "phantom_dir_pairs", "phantom_layout_pairs", "slices_from_volumes"]
