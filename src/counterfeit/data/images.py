"""2D image data for unconditional GANs: image folders (8- and 16-bit), sklearn digits, phantom slices.

Every loader returns a float32 array (N, C, H, W) in [-1, 1] (the range of a tanh generator),
C = 1 (grayscale) or 3 (RGB), H = W = the model size.

Reading keeps the file's full bit depth: a 16-bit PNG or TIFF is read as uint16 and divided by
65535 (`scale="dtype"`), never squeezed through an 8-bit conversion (Pillow's `convert("L")`
clips "I;16" data, one way other tools turn 16-bit images all white or all black). Data that
uses only part of its container (12-bit scans in 16-bit files) looks dark with `scale="dtype"`;
`scale="minmax"` stretches each image to its own minimum and maximum instead, and the loader
warns when it sees such images.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from counterfeit.atomic import atomic_path
from counterfeit.errors import InputFileError, UserError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
SCALES = ("dtype", "minmax")
CHANNELS = (1, 3)
BUILTIN_DATASETS = ("phantom-mr", "phantom-ct", "digits")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"
_DARK_16BIT = 4096  # a 16-bit image whose maximum is below 2**12 uses at most 1/16 of its range
# Larger images are refused from their header, before decoding: reading one takes ~17 bytes per
# gray pixel (51 RGB) on the way to float32, and a tiny corrupt or hostile file can claim 10**10
# pixels (Pillow's own decompression-bomb guard only stops at 2 x 89 M pixels).
MAX_IMAGE_PIXELS = 2**26  # 8192 x 8192


# --- reading one image ---------------------------------------------------------------------------

def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` (recursively, hidden files skipped), sorted by path."""
    folder = Path(folder)
    if not folder.exists():
        raise InputFileError(folder, "folder not found")
    if not folder.is_dir():
        raise InputFileError(folder, "not a folder (give a folder of images)")
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise InputFileError(folder, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
    return files


def read_image_raw(path: str | os.PathLike) -> np.ndarray:
    """The pixels of an image file at their stored type: (H, W) or (H, W, C), e.g. uint8 or uint16.

    TIFF goes through tifffile (any bit depth, RGB 16-bit, float), falling back to Pillow; other
    formats through Pillow, reading its 16-bit modes ("I;16", "I;16B", "I") as integers.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found")
    arr = None
    errors = []
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                check_image_size(path, page.imagewidth, page.imagelength)
                stored = sum(page.databytecounts)
                if page.compression == 1 and page.bitspersample % 8 == 0 and stored < page.nbytes:
                    # tifffile zero-fills missing strips; a short file is damaged, not a black image
                    raise InputFileError(path, f"file is truncated ({stored} of {page.nbytes} pixel bytes)")
                arr = _tiff_layout(np.asarray(tif.asarray()), path)
        except InputFileError:
            raise
        except Exception as err:  # compressed TIFFs tifffile cannot decode without imagecodecs: try Pillow
            errors.append(f"tifffile: {err}")
    if arr is None:
        try:
            arr = _read_with_pillow(path)
        except InputFileError:
            raise
        except Exception as err:
            errors.append(str(err))
            raise InputFileError(path, f"cannot read image ({'; '.join(errors)})") from None
    if arr.size == 0:
        raise InputFileError(path, "image has no pixels")
    return arr


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        check_image_size(path, *im.size)
        im.load()
        mode = im.mode
        if mode.startswith("I;16") or mode in ("I", "F"):
            return np.asarray(im)  # uint16 / int32 / float32 at full precision
        if mode in ("1", "L"):
            return np.asarray(im.convert("L"))
        if mode == "LA":
            return np.asarray(im.convert("L"))  # drop alpha
        return np.asarray(im.convert("RGB"))  # P, RGBA, CMYK, YCbCr, ...


def check_image_size(path: str | os.PathLike, width: int, height: int) -> None:
    """Refuse an image whose header claims more than MAX_IMAGE_PIXELS pixels (before it is decoded)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise InputFileError(path, f"image is {width}x{height} = {width * height:.3g} pixels, more than the limit of "
                                   f"{MAX_IMAGE_PIXELS:.3g} (8192x8192; corrupt header, or downscale the image first)")


def _tiff_layout(arr: np.ndarray, path: Path) -> np.ndarray:
    """tifffile gives (H, W), (H, W, S) or, for planar storage, (S, H, W): return (H, W[, S])."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        return arr
    if arr.ndim == 3 and arr.shape[0] in (3, 4):
        return np.moveaxis(arr, 0, -1)
    raise InputFileError(path, f"unsupported TIFF layout {arr.shape} (multi-page or volume); one 2D image is expected")


def to_unit_range(arr: np.ndarray, scale: str = "dtype") -> np.ndarray:
    """Map stored pixel values to float32 [0, 1].

    "dtype": integers by their type's range (uint8 / 255, uint16 / 65535, signed types from their
    minimum); floats already in [0, 1] are kept, other floats are stretched by min/max.
    "minmax": every image stretched to its own minimum and maximum (a constant image becomes 0).
    """
    if scale not in SCALES:
        raise UserError(f"scale must be one of {SCALES}, got {scale!r}")
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    x = arr.astype(np.float64)
    if scale == "dtype" and np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if arr.dtype.kind == "i" and arr.dtype.itemsize == 4 and x.min() >= 0 and x.max() <= 65535:
            # Pillow's "I" mode holds 16-bit files in int32: use the 16-bit range.
            lo, hi = 0.0, 65535.0
        else:
            lo, hi = float(info.min), float(info.max)
        return ((x - lo) / (hi - lo)).astype(np.float32)
    if scale == "dtype" and np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0:
        return x.astype(np.float32)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros(arr.shape, np.float32)
    lo, hi = float(finite.min()), float(finite.max())
    out = np.nan_to_num(x, nan=lo, posinf=hi, neginf=lo)
    return ((out - lo) / (hi - lo) if hi > lo else out * 0.0).astype(np.float32)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, C) in [0, 1] -> (channels, H, W); RGB -> gray by ITU-R 601 luma, gray -> RGB by copy."""
    if channels not in CHANNELS:
        raise UserError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[-1] == 2:  # gray + alpha
        img = img[:, :, :1]
    elif img.shape[-1] == 4:  # RGB + alpha
        img = img[:, :, :3]
    chw = np.moveaxis(img, -1, 0).astype(np.float32)
    if chw.shape[0] == channels:
        return chw
    if channels == 1:
        return np.tensordot(_LUMA, chw, axes=1)[None]
    return np.repeat(chw, 3, axis=0)


def center_crop_resize(images: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) or (N, C, H, W) -> the central square resized to size x size (antialiased bilinear)."""
    import torch
    import torch.nn.functional as F

    single = images.ndim == 3
    x = images[None] if single else images
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top : top + side, left : left + side]
    if side != size:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        x = F.interpolate(t, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False).numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x[0] if single else x


def read_image(path: str | os.PathLike, size: int, channels: int = 1, scale: str = "dtype") -> np.ndarray:
    """One image file as (channels, size, size) float32 in [-1, 1]."""
    _check_options(channels, scale)
    unit = to_unit_range(read_image_raw(path), scale)
    return center_crop_resize(to_channels(unit, channels), size) * 2.0 - 1.0


def _check_options(channels: int, scale: str) -> None:
    if scale not in SCALES:
        raise UserError(f"scale must be one of {SCALES}, got {scale!r}")
    if channels not in CHANNELS:
        raise UserError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")


def load_image_folder(folder: str | os.PathLike, size: int, channels: int = 1, scale: str = "dtype") -> np.ndarray:
    """Every image under `folder` as (N, channels, size, size) float32 in [-1, 1].

    Images are center-cropped to a square and resized; colour is converted to `channels`.
    Unreadable files raise `InputFileError` naming the file. Warns when 16-bit images use only a
    small part of their range (they would look dark; `scale="minmax"` stretches them).
    """
    _check_options(channels, scale)
    files = list_image_files(folder)
    out = np.empty((len(files), channels, size, size), np.float32)
    dark, coloured = [], []
    for i, path in enumerate(files):
        raw = read_image_raw(path)
        if scale == "dtype" and _is_16bit(raw) and raw.max() < _DARK_16BIT:
            dark.append(path.name)
        if channels == 1 and _has_colour(raw):
            coloured.append(path.name)
        out[i] = center_crop_resize(to_channels(to_unit_range(raw, scale), channels), size) * 2.0 - 1.0
    if dark:
        warnings.warn(
            f"{len(dark)} of {len(files)} 16-bit images (e.g. {dark[0]}) use less than 1/16 of the 0..65535 range "
            "and will look dark; use scale 'minmax' to stretch each image", stacklevel=2)
    if coloured:
        warnings.warn(f"{len(coloured)} of {len(files)} images (e.g. {coloured[0]}) are in colour and are read as "
                      "grayscale (1 channel); --channels 3 keeps their colour", stacklevel=2)
    return out


def _has_colour(raw: np.ndarray) -> bool:
    """An (H, W, 3/4) image whose colour channels differ somewhere (an RGB file of a grey picture has none)."""
    if raw.ndim != 3 or raw.shape[2] < 3:
        return False
    rgb = raw[..., :3]
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def _is_16bit(raw: np.ndarray) -> bool:
    """uint16 of any byte order, or Pillow's int32 "I" mode holding 16-bit values."""
    if raw.dtype.kind == "u" and raw.dtype.itemsize == 2:
        return True
    return raw.dtype.kind == "i" and raw.dtype.itemsize == 4 and raw.min() >= 0 and raw.max() <= 65535


# --- writing -------------------------------------------------------------------------------------

def make_grid(images: "np.ndarray | torch.Tensor", nrow: int = 8, padding: int = 2, pad_value: float = 1.0,
              value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Tile (N, C, H, W) images into one (C, H', W') float array in [0, 1], `nrow` images per row."""
    arr = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch (N, C, H, W), got shape {arr.shape}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    lo, hi = value_range
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    n, c, h, w = arr.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = np.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value, np.float32)
    for k in range(n):
        r, q = divmod(k, ncol)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, y : y + h, x : x + w] = arr[k]
    return grid


def save_image(image: np.ndarray, path: str | os.PathLike, bit_depth: int = 8) -> Path:
    """Write a (C, H, W) or (H, W) float image in [0, 1] atomically (PNG, TIFF or JPEG by suffix).

    bit_depth 16 keeps 16-bit precision: grayscale PNG, or TIFF (gray or RGB).
    """
    path = Path(path)
    img = np.asarray(image, np.float32)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    suffix = path.suffix.lower()
    if bit_depth not in (8, 16):
        raise UserError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if suffix not in IMAGE_SUFFIXES:
        raise UserError(f"{path}: unsupported image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    peak = 65535 if bit_depth == 16 else 255
    pixels = np.round(np.clip(img, 0.0, 1.0) * peak).astype(np.uint16 if bit_depth == 16 else np.uint8)
    with atomic_path(path) as tmp:
        if suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, pixels, photometric="rgb" if pixels.ndim == 3 else "minisblack")
        else:
            from PIL import Image

            if bit_depth == 16 and (pixels.ndim == 3 or suffix != ".png"):
                raise UserError(f"{path}: 16-bit output needs a grayscale .png or a .tif")
            Image.fromarray(pixels).save(tmp, format={".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}.get(suffix, "PNG"))
    return path


def save_image_grid(images: "np.ndarray | torch.Tensor", path: str | os.PathLike, nrow: int = 8, padding: int = 2,
                    value_range: tuple[float, float] = (-1.0, 1.0), bit_depth: int = 8) -> Path:
    """Tile (N, C, H, W) images (values in `value_range`) into one picture written atomically at `path`."""
    return save_image(make_grid(images, nrow, padding, 1.0, value_range), path, bit_depth)


# --- built-in data sets --------------------------------------------------------------------------

def digits_dataset(size: int, channels: int = 1) -> np.ndarray:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), upsampled to size x size."""
    images = _digits() / 16.0  # values 0..16
    unit = center_crop_resize(images[:, None], size)
    unit = np.clip(unit, 0.0, 1.0)
    if channels == 3:
        unit = np.repeat(unit, 3, axis=1)
    elif channels != 1:
        raise UserError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    return unit * 2.0 - 1.0


@functools.lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)
    images.flags.writeable = False  # shared by every caller of the cache
    return images


PHANTOM_DEPTH = 32  # axial slices rendered per subject
MIN_BODY_FRACTION = 0.1  # slices with less head than this are skipped


def phantom_slices_dataset(size: int, modality: str = "mr", channels: int = 1, n_subjects: int = 16, seed: int = 0,
                           root: str | os.PathLike | None = None) -> np.ndarray:
    """Axial slices of the MR/CT head phantom as (N, channels, size, size) in [-1, 1].

    With `root` = a phantom folder (`counterfeit phantom --out DIR`), its volumes are read from
    disk (all subjects); otherwise `n_subjects` subjects are rendered in memory from `seed`
    (deterministic, no files). MR is normalised per volume by robust percentiles, CT by the fixed
    HU window (`counterfeit.medical.intensity`). Slices with less than 10 % head are skipped.
    """
    from counterfeit.medical.intensity import ct_to_unit, mr_to_unit

    if modality not in ("mr", "ct"):
        raise UserError(f"phantom modality must be 'mr' or 'ct', got {modality!r}")
    if channels not in CHANNELS:
        raise UserError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    slices = []
    for volume, mask in _phantom_volumes(modality, size, n_subjects, seed, root):
        unit = mr_to_unit(volume, mask=mask > 0) if modality == "mr" else ct_to_unit(volume)
        keep = (mask > 0).mean(axis=(1, 2)) >= MIN_BODY_FRACTION
        slices.append(np.asarray(unit, np.float32)[keep][:, None])
    if not slices or sum(len(s) for s in slices) == 0:
        raise UserError("phantom slices: no slice contains enough of the head")
    stack = center_crop_resize(np.concatenate(slices), size)
    stack = np.clip(stack, -1.0, 1.0)
    return np.repeat(stack, 3, axis=1) if channels == 3 else stack


def _phantom_volumes(modality: str, size: int, n_subjects: int, seed: int, root: str | os.PathLike | None):
    """Yield (volume, mask) pairs in (z, y, x) order."""
    if root is not None:
        from counterfeit.data.phantom import load_dataset, subject_paths
        from counterfeit.data.volumes import read_volume

        info = load_dataset(root)
        for subject in info["subjects"]:
            paths = subject_paths(info["root"], subject)
            yield (read_volume(paths[modality], modality=modality).array,
                   read_volume(paths["mask"], modality="mask").array)
        return
    from counterfeit.data.phantom import make_subject, subject_seed

    if n_subjects < 1:
        raise UserError(f"phantom subjects must be >= 1, got {n_subjects}")
    side = max(64, size)  # render at >= 64 px: thin skull survives, then antialiased down to `size`
    for i in range(n_subjects):
        subject = make_subject(subject_seed(seed, i), (PHANTOM_DEPTH, side, side))
        yield subject[modality], subject["mask"]


def builtin_dataset(name: str, size: int, channels: int = 1, seed: int = 0, n_subjects: int = 16,
                    root: str | os.PathLike | None = None) -> np.ndarray:
    """A built-in data set by name: "phantom-mr", "phantom-ct" or "digits"."""
    if name == "digits":
        return digits_dataset(size, channels)
    if name in ("phantom-mr", "phantom-ct"):
        return phantom_slices_dataset(size, name.split("-")[1], channels, n_subjects, seed, root)
    raise UserError(f"unknown built-in data set {name!r}; choose one of {', '.join(BUILTIN_DATASETS)}")


def split_holdout(images: np.ndarray, n_holdout: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout): a seeded random `n_holdout` images held out (capped at a quarter of the set)."""
    n = len(images)
    n_holdout = max(0, min(int(n_holdout), n // 4))
    order = np.random.default_rng(seed).permutation(n)
    return images[np.sort(order[n_holdout:])], images[np.sort(order[:n_holdout])]


def check_images(images: np.ndarray, size: int, channels: int, what: str = "images") -> np.ndarray:
    """Validate an (N, C, H, W) array of model-ready images."""
    if images.ndim != 4 or images.shape[1:] != (channels, size, size):
        raise UserError(f"{what}: expected (N, {channels}, {size}, {size}), got {images.shape}")
    if len(images) == 0:
        raise UserError(f"{what}: no images")
    return images


__all__: Sequence[str] = [
    "BUILTIN_DATASETS", "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "SCALES", "builtin_dataset", "center_crop_resize",
    "check_image_size", "check_images",
    "digits_dataset", "list_image_files", "load_image_folder", "make_grid", "phantom_slices_dataset", "read_image",
    "read_image_raw", "save_image", "save_image_grid", "split_holdout", "to_channels", "to_unit_range",
]
