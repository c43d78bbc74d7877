"""Semantic layouts: palettes, reading layout PNGs, one-hot maps, and paired layout/image folders.

A layout is an integer label map (H, W), class ids 0 .. num_classes-1. On disk it is a PNG
holding either the ids themselves (grayscale, 16-bit, or palettised "P" PNGs, whose pixel
values are the ids) or colours (RGB) translated through a palette, Cityscapes-style. A "P" PNG
whose colours are all the palette's but at other indices (an editor's own order) is read by colour.

Palette JSON, any of:
- the CRN code's dataset file: {"palette": [[128, 64, 128], [244, 35, 232], ...], "names": [...]}
  (names optional; other keys ignored);
- a list of classes: [{"name": "road", "color": [128, 64, 128]}, ...] (optionally "id": 0..n-1,
  or wrapped as {"classes": [...]});
- a mapping {"road": [128, 64, 128], "sidewalk": [244, 35, 232], ...} (ids in file order);
- a list of [r, g, b] or [name, r, g, b] (the form stored in a run's config).

A paired folder holds `layouts/*.png` and `images/*.png` with the same stems.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from counterfeit.data.images import check_image_size
from counterfeit.errors import InputFileError, UserError

IMAGE_SUFFIX = ".png"


@dataclass(frozen=True, eq=False)
class Palette:
    """Class names and their RGB colours; class id = position."""

    names: tuple[str, ...]
    colors: np.ndarray = field(repr=False)  # (n, 3) uint8

    def __len__(self) -> int:
        return len(self.names)

    def to_list(self) -> list[list]:
        """JSON-friendly [[name, r, g, b], ...] (what a run's config stores)."""
        return [[n, *(int(c) for c in rgb)] for n, rgb in zip(self.names, self.colors)]


def parse_palette(data: Any, source: str = "palette") -> Palette:
    """A Palette from parsed JSON (see the module docstring for the accepted forms); UserError if malformed."""
    if isinstance(data, dict) and "palette" in data:
        if not isinstance(data["palette"], list):
            raise UserError(f"{source}: \"palette\" must be a list of [r, g, b] colours, "
                            f"got {type(data['palette']).__name__}")
        names = data.get("names")
        entries = ([[n, *c] if isinstance(c, list) else [n, c] for n, c in zip(names, data["palette"])]
                   if isinstance(names, list) else data["palette"])
        if isinstance(names, list) and len(names) != len(data["palette"]):
            raise UserError(f"{source}: {len(names)} names for {len(data['palette'])} colours")
    elif isinstance(data, dict) and "classes" in data:
        entries = data["classes"]
    elif isinstance(data, dict):
        entries = [[name, *(rgb if isinstance(rgb, list) else [rgb])] for name, rgb in data.items()]
    else:
        entries = data
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{source}: expected a non-empty list of classes with colours")
    names, colors, ids = [], [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            rgb = entry.get("color", entry.get("colour"))
            name = entry.get("name", f"class {i}")
            ids.append(entry.get("id", i))
        elif isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str):
            name, rgb = entry[0], entry[1:]
            ids.append(i)
        else:
            name, rgb = f"class {i}", entry
            ids.append(i)
        if not (isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rgb)):
            raise UserError(f"{source}: class {i} ({name!r}): colour must be three integers 0..255, got {rgb!r}")
        names.append(str(name))
        colors.append(rgb)
    bad_ids = [i for i in ids if not isinstance(i, int) or isinstance(i, bool)]
    if bad_ids:
        raise UserError(f"{source}: class ids must be integers, got {bad_ids[0]!r}")
    if sorted(ids) != list(range(len(ids))):
        raise UserError(f"{source}: class ids must be 0..{len(ids) - 1}, each once; got {sorted(ids)}")
    order = np.argsort(ids)
    names = [names[i] for i in order]
    colors_arr = np.array([colors[i] for i in order], dtype=np.uint8)
    codes = _codes(colors_arr)
    if len(set(codes.tolist())) != len(codes):
        dup = [int(c) for c in codes if (codes == c).sum() > 1][0]
        which = [names[j] for j in np.flatnonzero(codes == dup)]
        raise UserError(f"{source}: classes {which} share the colour {_rgb_text(dup)}")
    return Palette(tuple(names), colors_arr)


def read_palette(path: str | os.PathLike) -> Palette:
    """Parse a palette JSON file (InputFileError if unreadable or malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(path, "palette file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(path, f"cannot read palette ({err})") from None
    except json.JSONDecodeError as err:
        raise InputFileError(path, f"palette is not valid JSON (line {err.lineno}: {err.msg})") from None
    except RecursionError:
        raise InputFileError(path, "palette JSON is nested too deeply") from None
    return parse_palette(data, source=str(path))


def default_palette(num_classes: int) -> Palette:
    """Distinct colours for id layouts without a palette (for pictures only): class 0 black, then spread hues."""
    import colorsys

    colors = [(0, 0, 0)]
    for i in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * ((i // 2) % 2))
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return Palette(tuple(f"class {i}" for i in range(num_classes)), np.array(colors[:num_classes], dtype=np.uint8))


def _codes(colors: np.ndarray) -> np.ndarray:
    c = colors.astype(np.int64)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def _rgb_text(code: int) -> str:
    return f"({code >> 16}, {(code >> 8) & 255}, {code & 255})"


def colors_to_labels(rgb: np.ndarray, palette: Palette, source: str = "layout") -> np.ndarray:
    """(H, W, 3) uint8 colours -> (H, W) class ids; UserError naming unknown colours and where they are."""
    codes = _codes(rgb[..., :3])
    pal = _codes(palette.colors)
    order = np.argsort(pal)
    pos = np.clip(np.searchsorted(pal[order], codes), 0, len(pal) - 1)
    known = pal[order][pos] == codes
    if not known.all():
        bad, counts = np.unique(codes[~known], return_counts=True)
        y, x = np.argwhere(~known)[0]
        listed = ", ".join(f"{_rgb_text(int(c))} x{int(n)}" for c, n in list(zip(bad, counts))[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise UserError(f"{source}: {int((~known).sum())} pixels have colours not in the palette: {listed}{more} "
                        f"(first at row {y}, column {x})")
    return order[pos].astype(np.int64)


def labels_to_colors(labels: np.ndarray, palette: Palette) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours (ids beyond the palette become black)."""
    labels = np.asarray(labels)
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    ok = (labels >= 0) & (labels < len(palette))
    out[ok] = palette.colors[labels[ok]]
    return out


def check_label_range(labels: np.ndarray, num_classes: int, source: str = "layout") -> None:
    """UserError if any id is negative or >= num_classes."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.max()) if labels.max() >= num_classes else int(labels.min())
        y, x = np.argwhere((labels < 0) | (labels >= num_classes))[0]
        raise UserError(f"{source}: label id {bad} (first bad pixel at row {y}, column {x}) is outside 0..{num_classes - 1} "
                        f"({num_classes} classes)")


@contextmanager
def _pillow_errors(path: Path, *, missing: str, unreadable: str) -> Iterator[None]:
    """Pillow's ways of failing on a missing or damaged file, as one-line InputFileErrors naming it."""
    from PIL import Image

    try:
        yield
    except InputFileError:
        raise
    except FileNotFoundError:
        raise InputFileError(path, missing) from None
    # Pillow reports some damaged headers as ValueError or SyntaxError (a PNG whose IHDR chunk is empty)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputFileError(path, f"{unreadable} ({err})") from None


def read_layout(path: str | os.PathLike, palette: Palette | None = None, num_classes: int | None = None) -> np.ndarray:
    """A layout PNG -> (H, W) int64 class ids.

    Grayscale / 16-bit / palettised PNGs hold ids (a palettised one showing `palette`'s colours at other
    indices is read by colour, with a warning); RGB PNGs need `palette`. Ids are checked
    against `num_classes` (default: the palette's size, when given).
    """
    from PIL import Image

    path = Path(path)
    with _pillow_errors(path, missing="layout file not found", unreadable="cannot read layout image"):
        with Image.open(path) as img:
            check_image_size(path, *img.size)
            img.load()
            mode = img.mode
            if mode == "P" and palette is not None and _palette_colours_disagree(img, palette):
                warnings.warn(f"{path}: a palettised layout whose colours are the run's palette but whose indices "
                              "are not its class ids: reading the colours", stacklevel=2)
                mode = "RGB"
            if mode in ("RGB", "RGBA"):
                if palette is None:
                    raise InputFileError(path, "colour layout (RGB) but no palette given (pass --palette FILE.json)")
                array = np.asarray(img.convert("RGB"))
            else:
                array = np.asarray(img)
    if mode in ("RGB", "RGBA"):
        labels = colors_to_labels(array, palette, source=str(path))  # type: ignore[arg-type]
    elif array.ndim == 2:
        labels = array.astype(np.int64)
    else:
        raise InputFileError(path, f"unsupported layout image mode {mode!r} (use label ids in a grayscale PNG, or RGB with a palette)")
    n = num_classes if num_classes is not None else (len(palette) if palette is not None else None)
    if n is not None:
        check_label_range(labels, n, source=str(path))
    return labels


def _palette_colours_disagree(img: Any, palette: Palette) -> bool:
    """True for a "P" image whose used colours are all in `palette` but not at their class ids (an editor saved the
    coloured layout with its own index order): its colours, not its indices, are what it shows."""
    used = np.unique(np.asarray(img))
    colours = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    if used.max(initial=0) >= len(colours):
        return False
    ids = {tuple(int(v) for v in colour): i for i, colour in enumerate(palette.colors)}
    found = [ids.get(tuple(int(v) for v in colours[u])) for u in used]
    return all(f is not None for f in found) and any(f != u for f, u in zip(found, used))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A PNG -> float32 (C, H, W) in [-1, 1]: grayscale (8 or 16 bit) gives C = 1, colour C = 3 (alpha dropped)."""
    from PIL import Image

    path = Path(path)
    with _pillow_errors(path, missing="image file not found", unreadable="cannot read image"):
        with Image.open(path) as img:
            check_image_size(path, *img.size)
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img).astype(np.float32) / 65535.0
            elif img.mode in ("L", "LA", "1"):
                array = np.asarray(img.convert("L")).astype(np.float32) / 255.0
            else:
                array = np.asarray(img.convert("RGB")).astype(np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array * 2.0 - 1.0, dtype=np.float32)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (..., H, W) label maps (pixel centres)."""
    h, w = labels.shape[-2:]
    if (h, w) == tuple(size):
        return labels
    rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64)
    return labels[..., rows[:, None], cols[None, :]]


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of float (N, C, H, W) images."""
    if images.shape[-2:] == tuple(size):
        return images
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).numpy()


def one_hot(labels, num_classes: int):
    """(B, H, W) integer ids (tensor) -> (B, num_classes, H, W) float32 one-hot maps."""
    import torch
    import torch.nn.functional as F

    labels = torch.as_tensor(labels).long()
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(torch.float32)


@dataclass
class LayoutPairs:
    """Layouts with their images: labels (N, H, W) int, images (N, C, H, W) float32 in [-1, 1].

    `masks` (N, H, W) bool marks the pixels an evaluation should count (e.g. a body mask);
    `groups` names what each example came from (file stem, subject id...).
    """

    labels: np.ndarray
    images: np.ndarray
    names: list[str]
    masks: np.ndarray | None = None
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | np.ndarray) -> "LayoutPairs":
        index = np.asarray(index, dtype=np.int64)
        pick = lambda xs: [xs[i] for i in index] if xs is not None else None  # noqa: E731
        return LayoutPairs(self.labels[index], self.images[index], pick(self.names),
                           self.masks[index] if self.masks is not None else None, pick(self.groups))


def paired_stems(layouts_dir: Path, images_dir: Path) -> list[str]:
    """Stems present in both folders; UserError naming unmatched files on either side."""
    for d in (layouts_dir, images_dir):
        if not d.is_dir():
            raise InputFileError(d, "folder not found")
    lay = {p.stem for p in layouts_dir.glob(f"*{IMAGE_SUFFIX}")}
    img = {p.stem for p in images_dir.glob(f"*{IMAGE_SUFFIX}")}
    only_lay, only_img = sorted(lay - img), sorted(img - lay)
    if only_lay or only_img:
        parts = []
        if only_lay:
            parts.append(f"layouts without an image: {only_lay[:3]}{' ...' if len(only_lay) > 3 else ''}")
        if only_img:
            parts.append(f"images without a layout: {only_img[:3]}{' ...' if len(only_img) > 3 else ''}")
        raise UserError(f"{layouts_dir} / {images_dir}: unmatched stems ({'; '.join(parts)})")
    if not lay:
        raise InputFileError(layouts_dir, f"no {IMAGE_SUFFIX} layouts found")
    return sorted(lay)


def load_paired_folder(layouts_dir: str | os.PathLike, images_dir: str | os.PathLike, *, palette: Palette | None = None,
                       num_classes: int | None = None, size: tuple[int, int] | None = None) -> LayoutPairs:
    """Read every layouts/<stem>.png with images/<stem>.png, resized to `size` (labels nearest, images bilinear).

    A layout and its image must have the same size; without `size`, all pairs must share one.
    All images must have the same number of channels.
    """
    layouts_dir, images_dir = Path(layouts_dir), Path(images_dir)
    stems = paired_stems(layouts_dir, images_dir)
    labels, images = [], []
    for stem in stems:
        lay_path, img_path = layouts_dir / f"{stem}{IMAGE_SUFFIX}", images_dir / f"{stem}{IMAGE_SUFFIX}"
        lab = read_layout(lay_path, palette, num_classes)
        img = read_image(img_path)
        if lab.shape != img.shape[-2:]:
            raise InputFileError(img_path, f"image is {img.shape[1]}x{img.shape[2]} but its layout is {lab.shape[0]}x{lab.shape[1]}")
        if images and img.shape[0] != images[0].shape[0]:
            raise InputFileError(img_path, f"{img.shape[0]} channel(s), but {stems[0]} has {images[0].shape[0]}")
        target = tuple(size) if size else (labels[0].shape if labels else lab.shape)
        if size is None and lab.shape != tuple(target):
            raise InputFileError(lay_path, f"size {lab.shape[0]}x{lab.shape[1]} differs from {stems[0]}'s "
                                            f"{target[0]}x{target[1]} (set a training height/width to resize)")
        labels.append(resize_labels(lab, tuple(target)))
        images.append(resize_images(img[None], tuple(target))[0])
    dtype = np.uint8 if max(int(x.max()) for x in labels) < 256 else np.int32
    return LayoutPairs(np.stack(labels).astype(dtype), np.stack(images).astype(np.float32), stems, groups=list(stems))


__all__ = [
    "LayoutPairs",
    "Palette",
    "check_label_range",
    "colors_to_labels",
    "default_palette",
    "labels_to_colors",
    "load_paired_folder",
    "one_hot",
    "paired_stems",
    "parse_palette",
    "read_image",
    "read_layout",
    "read_palette",
    "resize_images",
    "resize_labels",
]
