"""PNG montage of a phantom data set: MR, CT and mask slices for a few subjects."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CT_DISPLAY = (-200.0, 1600.0)  # HU: brain, soft tissue and bone all visible
AXIAL_LEVELS = (0.15, 0.4)  # fractions of the height: sinus level, ventricle level


def write_preview(root: str | os.PathLike, out_png: str | os.PathLike, n_subjects: int = 4) -> Path:
    """One row per subject: axial MR/CT at two levels, the CT-MR misalignment, mask, coronal MR/CT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from counterfeit.atomic import atomic_path
    from counterfeit.data.phantom import load_dataset, subject_paths
    from counterfeit.data.volumes import read_volume

    info = load_dataset(root)
    subjects = info["subjects"][: max(1, n_subjects)]
    columns = ["MR low", "CT low", "MR mid", "CT mid", "CT - aligned CT", "mask", "MR coronal", "CT coronal"]
    fig, axes = plt.subplots(len(subjects), len(columns), figsize=(2.0 * len(columns), 2.1 * len(subjects)), squeeze=False)
    for row, sid in enumerate(subjects):
        paths = subject_paths(info["root"], sid)
        mr = read_volume(paths["mr"], modality="mr")
        ct = read_volume(paths["ct"], modality="ct").array
        ct_aligned = read_volume(paths["ct_aligned"], modality="ct").array
        mask = read_volume(paths["mask"], modality="mask").array
        nz, ny, _ = mr.shape
        low, mid = (int(f * (nz - 1)) for f in AXIAL_LEVELS)
        mr_range = (0.0, float(np.percentile(mr.array, 99.5)))
        aspect = mr.spacing[2] / mr.spacing[1]  # coronal: z rows over x columns
        images = [
            (mr.array[low], "gray", mr_range, 1.0),
            (ct[low], "gray", CT_DISPLAY, 1.0),
            (mr.array[mid], "gray", mr_range, 1.0),
            (ct[mid], "gray", CT_DISPLAY, 1.0),
            (ct[low] - ct_aligned[low], "RdBu_r", (-500.0, 500.0), 1.0),
            (mask[mid], "gray", (0, 1), 1.0),
            (mr.array[::-1, ny // 2], "gray", mr_range, aspect),
            (ct[::-1, ny // 2], "gray", CT_DISPLAY, aspect),
        ]
        for col, (img, cmap, (vmin, vmax), asp) in enumerate(images):
            ax = axes[row, col]
            ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, aspect=asp, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row, 0].set_ylabel(sid, fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return out_png
