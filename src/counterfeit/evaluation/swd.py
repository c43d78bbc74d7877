"""Sliced Wasserstein distance between image sets on Laplacian-pyramid patches (Karras et al. 2018).

Follows Progressive GAN's `metrics/sliced_wasserstein.py`:

1. Build a Laplacian pyramid of every image (5x5 binomial filter, as cv2.pyrDown / pyrUp),
   one level per resolution from the image size down to 16 px.
2. At each level take `patches_per_image` random 7x7 neighbourhoods per image; a descriptor is
   the patch's pixels over all channels (7 * 7 * C values).
3. Normalise each set's descriptors by their own per-channel mean and standard deviation.
4. Sliced Wasserstein distance: project both sets on random unit directions, sort the
   projections and average |a_i - b_i| (the 1D Wasserstein-1 distance along each direction);
   `repeats` x `directions_per_repeat` directions.

Results are reported x 1e3 like Progressive GAN (`SWDx1e3_<res>`), per level and averaged.
Differences from the reference: any number of channels (not only RGB), float images in any
range (the per-set normalisation removes the scale), and all randomness from one seeded
`np.random.Generator`, so the number is repeatable. Both sets must hold the same number of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from counterfeit.metrics import register_metric

_BINOMIAL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0
MIN_RESOLUTION = 16


@dataclass(frozen=True)
class SWDSettings:
    """Sampling effort. The defaults are Progressive GAN's; `cheap()` is for monitoring during training."""

    patch_size: int = 7
    patches_per_image: int = 128
    repeats: int = 4
    directions_per_repeat: int = 128

    @classmethod
    def cheap(cls) -> "SWDSettings":
        return cls(patches_per_image=64, repeats=2, directions_per_repeat=64)


def pyr_down(x: np.ndarray) -> np.ndarray:
    """Blur with the 5x5 binomial filter (mirror borders) and keep every other pixel, like cv2.pyrDown."""
    from scipy import ndimage

    return ndimage.convolve(x, _BINOMIAL[None, None], mode="mirror")[:, :, ::2, ::2]


def pyr_up(x: np.ndarray) -> np.ndarray:
    """Insert zeros between pixels and blur with 4x the binomial filter, like cv2.pyrUp."""
    from scipy import ndimage

    n, c, h, w = x.shape
    up = np.zeros((n, c, 2 * h, 2 * w), x.dtype)
    up[:, :, ::2, ::2] = x
    return ndimage.convolve(up, _BINOMIAL[None, None] * 4.0, mode="mirror")


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """[finest band-pass, ..., coarsest low-pass] for (N, C, H, W) images; `levels` entries."""
    pyramid = [np.asarray(images, np.float32).copy()]
    for _ in range(1, levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] -= pyr_up(pyramid[-1])
    return pyramid


def resolutions(image_size: int) -> list[int]:
    """Pyramid resolutions evaluated: image_size, image_size/2, ... down to 16."""
    out = []
    res = image_size
    while res >= MIN_RESOLUTION:
        out.append(res)
        res //= 2
    return out


def patch_descriptors(level: np.ndarray, patch_size: int, per_image: int, rng: np.random.Generator) -> np.ndarray:
    """`per_image` random patch_size^2 neighbourhoods of every image: (N * per_image, C, p, p)."""
    n, c, h, w = level.shape
    half = patch_size // 2
    if h < patch_size or w < patch_size:
        raise ValueError(f"pyramid level {h}x{w} is smaller than the {patch_size}x{patch_size} patches")
    ys = rng.integers(half, h - half, size=(n, per_image))
    xs = rng.integers(half, w - half, size=(n, per_image))
    offsets = np.arange(-half, half + 1)
    img = np.repeat(np.arange(n), per_image)
    yy = ys.reshape(-1)[:, None, None] + offsets[None, :, None]
    xx = xs.reshape(-1)[:, None, None] + offsets[None, None, :]
    # level[img, :, yy, xx] -> (M, p, p, C)
    patches = level[img[:, None, None], :, yy, xx]
    return np.moveaxis(patches, -1, 1)


def normalise_descriptors(desc: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation per channel over the set; flattened to (M, C * p * p)."""
    desc = desc.astype(np.float32, copy=True)
    desc -= desc.mean(axis=(0, 2, 3), keepdims=True)
    desc /= desc.std(axis=(0, 2, 3), keepdims=True) + 1e-8  # constant sets stay finite
    return desc.reshape(len(desc), -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, repeats: int, directions: int, rng: np.random.Generator) -> float:
    """Mean over random unit directions of the 1D Wasserstein-1 distance between projected sets."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"descriptor sets must have equal (M, D) shapes, got {a.shape} and {b.shape}")
    results = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], directions)).astype(np.float32)
        dirs /= np.sqrt((dirs**2).sum(axis=0, keepdims=True))
        pa = np.sort(a @ dirs, axis=0)
        pb = np.sort(b @ dirs, axis=0)
        results.append(float(np.abs(pa - pb).mean()))
    return float(np.mean(results))


@register_metric("swd")
def sliced_wasserstein_distance(real: np.ndarray, fake: np.ndarray, settings: SWDSettings | None = None,
                                seed: int = 0) -> dict[str, float]:
    """SWD x 1e3 between two equally sized sets of (N, C, H, W) images, per pyramid level and averaged.

    Returns {"swd_<res>": ..., "swd": mean over levels}. Identical sets give 0.
    """
    real = _as_images(real, "real")
    fake = _as_images(fake, "fake")
    if real.shape != fake.shape:
        raise ValueError(f"SWD needs sets of the same shape, got real {real.shape} and fake {fake.shape}")
    settings = settings or SWDSettings()
    res = resolutions(min(real.shape[-2:]))
    if not res:
        raise ValueError(f"SWD needs images of at least {MIN_RESOLUTION} px, got {real.shape[-2:]}")
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    pyr_real = laplacian_pyramid(real, len(res))
    pyr_fake = laplacian_pyramid(fake, len(res))
    for r, level_real, level_fake in zip(res, pyr_real, pyr_fake):
        # The same patch positions and directions for both sets: identical sets give exactly 0.
        state = rng.bit_generator.state
        d_real = normalise_descriptors(patch_descriptors(level_real, settings.patch_size, settings.patches_per_image, rng))
        rng.bit_generator.state = state
        d_fake = normalise_descriptors(patch_descriptors(level_fake, settings.patch_size, settings.patches_per_image, rng))
        out[f"swd_{r}"] = 1e3 * sliced_wasserstein(d_real, d_fake, settings.repeats, settings.directions_per_repeat, rng)
    out["swd"] = float(np.mean([out[f"swd_{r}"] for r in res]))
    return out


def _as_images(x, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim != 4:
        raise ValueError(f"{what}: expected images (N, C, H, W), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: images contain NaN or infinite values")
    return arr.astype(np.float32, copy=False)
