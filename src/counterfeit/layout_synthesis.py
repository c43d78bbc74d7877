"""Images from semantic layouts with a trained CRN run: all k variants plus a montage per layout.

`synthesize_from_layouts(run_dir, layouts, out_dir)` is what `counterfeit synthesize
--model RUN --layout L.png --out DIR` calls. A layout is read with the run's palette (colour
PNGs) or as label ids (grayscale PNGs), resized (nearest neighbour) to the size the network
was trained at, and turned into k images, written as `<stem>_k0.png` ... and
`<stem>_montage.png` (the layout's colours, then the k variants side by side). Images are
PNGs of the network's [-1, 1] range, linearly: 8-bit RGB, or 16-bit grayscale for one-channel
models (for CT that range is the HU window of `counterfeit.medical.intensity.ct_to_unit`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from counterfeit.errors import UserError

if TYPE_CHECKING:
    from counterfeit.data.layouts import Palette


def to_rgb01(image: np.ndarray) -> np.ndarray:
    """A [-1, 1] image (C, H, W) -> (3, H, W) in [0, 1] (grayscale replicated), for montages."""
    image = np.clip((np.asarray(image, dtype=np.float32) + 1.0) * 0.5, 0.0, 1.0)
    return np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]


def layout_row(labels: np.ndarray, palette: "Palette", images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Montage tiles (3, H, W) in [0, 1]: the layout in its palette's colours, then each [-1, 1] image."""
    from counterfeit.data.layouts import labels_to_colors

    return [labels_to_colors(labels, palette).transpose(2, 0, 1) / 255.0] + [to_rgb01(im) for im in images]


def save_montage(rows: Sequence[Sequence[np.ndarray]], path: str | os.PathLike) -> Path:
    """Tile rows of equally long (3, H, W) [0, 1] tile lists into one PNG."""
    from counterfeit.data.images import make_grid, save_image

    tiles = np.stack([t for row in rows for t in row])
    return save_image(make_grid(tiles, nrow=len(rows[0]), value_range=(0.0, 1.0)), path)


def synthesize_from_layouts(model_dir: Path, layouts: list[Path], out_dir: Path, device: str = "auto") -> list[Path]:
    """Run a trained CRN (`counterfeit train crn` run directory) on layout PNGs; returns the files written.

    Per layout: `<stem>_k0.png` ... `<stem>_k{k-1}.png` and `<stem>_montage.png` in `out_dir`.
    """
    from counterfeit.data.images import save_image
    from counterfeit.train.loop import load_run

    layouts = [Path(p) for p in layouts]
    if not layouts:
        raise UserError("synthesize: give at least one --layout PNG")
    stems = [p.stem for p in layouts]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise UserError(f"synthesize: several layouts are named {dupes[0]!r}; their outputs would overwrite each other")
    recipe = load_run(Path(model_dir), device)
    if getattr(recipe, "name", None) != "crn":
        raise UserError(f"{model_dir}: a {recipe.name!r} run; --layout needs a model trained with `counterfeit train crn`")
    out_dir = Path(out_dir)
    # every layout is read (and checked) before anything is written: a bad last one leaves no partial output
    all_labels = [recipe.read_layout(path) for path in layouts]
    written: list[Path] = []
    for path, labels in zip(layouts, all_labels):
        outputs = recipe.generate(labels[None])[0]  # (k, C, H, W)
        for i, image in enumerate(outputs):
            # One-channel outputs (CT/MR) as 16-bit PNGs: the CT window keeps ~0.06 HU steps.
            bits = 16 if image.shape[0] == 1 else 8
            written.append(save_image((image + 1.0) * 0.5, out_dir / f"{path.stem}_k{i}.png", bit_depth=bits))
        written.append(save_montage([layout_row(labels, recipe.palette, outputs)], out_dir / f"{path.stem}_montage.png"))
    return written


__all__ = ["layout_row", "save_montage", "synthesize_from_layouts", "to_rgb01"]
