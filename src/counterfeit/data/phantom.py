"""Built-in MR/CT head phantom with known ground truth, for the demo, tests and benchmarks.

`make_subject` renders one subject from a seed: a T1-weighted-like MR (bone and air both dark,
smooth bias field, Rician noise, arbitrary per-subject scale) and a CT in Hounsfield units.
Like real paired data, the CT is slightly misaligned to the MR (small rigid motion plus local
deformation); `ct_ground_truth` is the same CT rendered exactly in the MR's pose, the target
for evaluating synthesis. `labels` and `mask` are aligned with the MR (and `ct_ground_truth`).

`generate_dataset` writes many subjects as NIfTI plus a `dataset.json` with train/val/test splits.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from counterfeit.atomic import atomic_write_text, ensure_folder
from counterfeit.data import phantom_anatomy as anat
from counterfeit.errors import InputFileError, UserError

TISSUES = {
    anat.AIR: "air",
    anat.SCALP: "scalp",  # skin and muscle: soft tissue
    anat.FAT: "fat",
    anat.CORTICAL_BONE: "cortical bone",
    anat.DIPLOE: "diploe",
    anat.CSF: "csf",
    anat.GREY_MATTER: "grey matter",
    anat.WHITE_MATTER: "white matter",
    anat.SINUS: "sinus air",
}
# Per subject, a tissue's mean HU is drawn in [low, high]; `HU_TEXTURE` is the within-tissue spread.
TISSUE_HU = {
    anat.AIR: (-1000.0, -1000.0),
    anat.SCALP: (30.0, 55.0),
    anat.FAT: (-115.0, -85.0),
    anat.CORTICAL_BONE: (1250.0, 1700.0),
    anat.DIPLOE: (450.0, 650.0),
    anat.CSF: (5.0, 15.0),
    anat.GREY_MATTER: (36.0, 45.0),
    anat.WHITE_MATTER: (25.0, 32.0),
    anat.SINUS: (-1000.0, -990.0),
}
HU_TEXTURE = {anat.SCALP: 5.0, anat.CORTICAL_BONE: 150.0, anat.DIPLOE: 110.0, anat.GREY_MATTER: 2.0, anat.WHITE_MATTER: 2.0}
# T1-weighted-like signal relative to fat; bone and air are both near zero: the MR->CT ambiguity.
TISSUE_T1 = {
    anat.AIR: 0.0,
    anat.SCALP: 0.55,
    anat.FAT: 1.0,
    anat.CORTICAL_BONE: 0.03,
    anat.DIPLOE: 0.22,  # fatty marrow: dim, and varying
    anat.CSF: 0.12,
    anat.GREY_MATTER: 0.48,
    anat.WHITE_MATTER: 0.72,
    anat.SINUS: 0.0,
}
T1_TEXTURE = {anat.SCALP: 0.05, anat.DIPLOE: 0.3, anat.GREY_MATTER: 0.03, anat.WHITE_MATTER: 0.03}

DEFAULT_SHAPE = (64, 128, 128)  # (z, y, x)
FOV_MM = (208.0, 208.0, 160.0)  # (x, y, z): at the default shape, spacing (1.625, 1.625, 2.5)
HEAD_CENTRE_Z = -0.2  # head centre below the field of view's centre, as a fraction of its height
FILES = {
    "mr": "mr.nii.gz",
    "ct": "ct.nii.gz",  # misaligned to the MR in the paired variant
    "ct_aligned": "ct_aligned.nii.gz",  # ground truth: the CT exactly in the MR's pose
    "mask": "mask.nii.gz",
    "labels": "labels.nii.gz",
}
_FILE_DTYPES = {"mr": "float32", "ct": "int16", "ct_aligned": "int16", "mask": "uint8", "labels": "uint8"}


def grid_geometry(shape: Sequence[int], spacing: Sequence[float] | None = None) -> tuple[tuple, tuple]:
    """Spacing (x, y, z) and origin of a grid centred on the scanner origin.

    Without `spacing`, the field of view stays `FOV_MM` whatever the shape, so small test
    volumes still hold a whole head, only coarser.
    """
    nz, ny, nx = (int(n) for n in shape)
    if spacing is None:
        spacing = (FOV_MM[0] / nx, FOV_MM[1] / ny, FOV_MM[2] / nz)
    spacing = tuple(float(s) for s in spacing)
    origin = tuple(-(n - 1) / 2.0 * s for n, s in zip((nx, ny, nz), spacing))
    return spacing, origin


def make_subject(
    seed: int, shape: Sequence[int] = DEFAULT_SHAPE, spacing: Sequence[float] | None = None, misalign: bool = True
) -> dict:
    """Render one phantom subject, deterministic in `seed`.

    Returns a dict of numpy arrays in (z, y, x) order on one grid: `mr` (float32, arbitrary
    units), `ct` (float32 HU; misaligned to the MR when `misalign`), `ct_ground_truth` (float32
    HU, exactly aligned to the MR; equals `ct` when not `misalign`), `labels` (uint8 tissue
    labels, see TISSUES, aligned with the MR), `mask` (uint8 body mask, aligned with the MR);
    plus the grid's `spacing`, `origin`, `direction` (SimpleITK x, y, z conventions).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise UserError(f"phantom shape must be three sizes (z, y, x) of at least 2, got {shape}")
    spacing, origin = grid_geometry(shape, spacing)
    rng = np.random.default_rng(seed)
    # All random draws happen in a fixed order, whatever `misalign` is: same seed, same anatomy.
    head = anat.sample_head(rng)
    pose = _rotation(rng.normal(0.0, [4.0, 3.0, 8.0]))  # degrees about x (nod), y (tilt), z (turn)
    centre = np.array([0.0, 0.0, HEAD_CENTRE_Z * spacing[2] * shape[0]]) + rng.normal(0.0, [2.0, 2.0, 3.0])
    xs, ys, zs = (o + s * np.arange(n, dtype=np.float32) for o, s, n in zip(origin, spacing, shape[::-1]))
    warp = [2.5 * _grid_field(rng, (zs, ys, xs), 35.0) for _ in range(3)]
    # Paired CT: under a millimetre of rigid misalignment, plus local deformation growing towards the
    # bottom of the head, where real MR/CT pairs disagree most (mouth, nasal cavities, neck).
    ct_pose = _rotation(rng.normal(0.0, 0.5, 3)) @ pose
    ct_shift = rng.normal(0.0, 0.5, 3)
    inferior = np.clip((zs[-1] - zs) / (zs[-1] - zs[0] + 1e-6), 0.0, 1.0)[:, None, None]
    ct_warp = [(0.2 + 0.8 * inferior) * _grid_field(rng, (zs, ys, xs), 25.0) for _ in range(3)]
    contrast = _sample_contrast(rng)
    bias = np.exp(0.12 * _grid_field(rng, (zs, ys, xs), 60.0)).astype(np.float32)
    ct_noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(contrast["ct_noise"])
    mr_noise = rng.standard_normal((2, *shape), dtype=np.float32) * np.float32(contrast["mr_noise"])

    coords = _head_coords(xs, ys, zs, pose, centre, warp)
    labels, texture = anat.head_labels(*coords, head)
    ct_truth = _render_ct(labels, texture, contrast, ct_noise)
    if misalign:
        ct_coords = _head_coords(xs, ys, zs, ct_pose, centre + ct_shift, [w + d for w, d in zip(warp, ct_warp)])
        ct_labels, ct_texture = anat.head_labels(*ct_coords, head)
        ct = _render_ct(ct_labels, ct_texture, contrast, ct_noise)
    else:
        ct = ct_truth.copy()

    mr = _render_t1(labels, texture, contrast) * bias
    mr = np.sqrt((mr + mr_noise[0]) ** 2 + mr_noise[1] ** 2)  # Rician: magnitude of complex noise
    mr *= np.float32(contrast["mr_scale"])
    return {
        "mr": mr.astype(np.float32),
        "ct": ct.astype(np.float32),
        "ct_ground_truth": ct_truth.astype(np.float32),
        "labels": labels,
        "mask": (labels != anat.AIR).astype(np.uint8),
        "spacing": spacing,
        "origin": origin,
        "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    }


def _sample_contrast(rng: np.random.Generator) -> dict:
    """Per-subject tissue values: mean HU, relative T1 signal, noise levels and MR scale."""
    hu = np.zeros(len(TISSUES), dtype=np.float32)
    t1 = np.zeros(len(TISSUES), dtype=np.float32)
    for label in TISSUES:
        lo, hi = TISSUE_HU[label]
        hu[label] = rng.uniform(lo, hi)
        t1[label] = TISSUE_T1[label] * rng.uniform(0.93, 1.07)
    hu_tex = np.array([HU_TEXTURE.get(k, 0.0) for k in TISSUES], dtype=np.float32)
    t1_tex = np.array([T1_TEXTURE.get(k, 0.0) for k in TISSUES], dtype=np.float32)
    return {
        "hu": hu,
        "t1": t1,
        "hu_texture": hu_tex,
        "t1_texture": t1_tex,
        "ct_noise": rng.uniform(6.0, 14.0),  # HU
        "mr_noise": rng.uniform(0.012, 0.025),  # relative to fat
        "mr_scale": float(np.exp(rng.uniform(np.log(200.0), np.log(2000.0)))),
    }


def _render_ct(labels: np.ndarray, texture: np.ndarray, contrast: dict, noise: np.ndarray) -> np.ndarray:
    image = _partial_volume(contrast["hu"][labels] + contrast["hu_texture"][labels] * texture) + noise
    return np.clip(image, -1024.0, 3071.0, out=image)  # the range a 12-bit scanner stores


def _render_t1(labels: np.ndarray, texture: np.ndarray, contrast: dict) -> np.ndarray:
    image = contrast["t1"][labels] * (1.0 + contrast["t1_texture"][labels] * np.clip(texture, -2.0, 2.0))
    return _partial_volume(image)


def _partial_volume(image: np.ndarray) -> np.ndarray:
    """Blur half a voxel: labels are sampled at voxel centres, scanners average over the voxel."""
    from scipy import ndimage

    return ndimage.gaussian_filter(image, 0.5, truncate=3.0)


def _rotation(degrees: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _head_coords(xs, ys, zs, rotation, centre, warp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head coordinates of every voxel: inverse pose (R^T (X - c)) plus a smooth warp (mm)."""
    x = (xs - np.float32(centre[0]))[None, None, :]
    y = (ys - np.float32(centre[1]))[None, :, None]
    z = (zs - np.float32(centre[2]))[:, None, None]
    rt = rotation.T.astype(np.float32)
    return tuple(rt[i, 0] * x + rt[i, 1] * y + rt[i, 2] * z + warp[i] for i in range(3))


def _grid_field(rng: np.random.Generator, axes_mm: Sequence[np.ndarray], length_mm: float) -> np.ndarray:
    """A smooth random field with unit standard deviation on the grid (z, y, x) given in mm.

    Gaussian bumps on a control lattice with random weights, evaluated separably (one small
    matrix product per axis): far cheaper than filtering white noise at full resolution.
    """
    weights = []
    for coords in axes_mm:
        lo, hi = float(coords.min()), float(coords.max())
        n_ctrl = int(np.ceil((hi - lo) / length_mm)) + 3
        ctrl = np.linspace(lo - length_mm, hi + length_mm, n_ctrl)
        weights.append(np.exp(-0.5 * ((coords[:, None] - ctrl[None, :]) / length_mm) ** 2).astype(np.float32))
    wz, wy, wx = weights
    coef = rng.standard_normal((wz.shape[1], wy.shape[1], wx.shape[1])).astype(np.float32)
    field = coef @ wx.T  # (kz, ky, nx)
    field = wy @ field  # (kz, ny, nx): matmul broadcasts over kz
    field = (wz @ field.reshape(wz.shape[1], -1)).reshape(len(wz), len(wy), len(wx))
    return field / np.float32(field.std() + 1e-8)


def subject_volumes(subject: dict) -> dict:
    """The images of a `make_subject` result as `Volume`s keyed like the dataset files."""
    from counterfeit.data.volumes import Volume

    geometry = (subject["spacing"], subject["origin"], subject["direction"])
    keys = {"mr": "mr", "ct": "ct", "ct_aligned": "ct_ground_truth", "mask": "mask", "labels": "labels"}
    return {name: Volume(subject[key], *geometry) for name, key in keys.items()}


def subject_id(index: int) -> str:
    return f"sub-{index:03d}"


def subject_seed(seed: int, index: int) -> int:
    """Independent per-subject seed: subjects do not change when the data set grows."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def split_subjects(ids: Sequence[str], splits: Sequence[float]) -> dict[str, list[str]]:
    """Consecutive train/val/test blocks with sizes from `splits` (rounded, at least 1 each from 3 subjects on;
    train takes the rest)."""
    if len(splits) != 3 or min(splits) < 0 or sum(splits) <= 0:
        raise UserError(f"splits must be three non-negative fractions (train, val, test), got {tuple(splits)}")
    total = float(sum(splits))
    n = len(ids)
    # a split asked for is never rounded away while one subject each can go round: the val split is what
    # candidates and --keep-best select by
    n_val = int(round(n * splits[1] / total)) or int(splits[1] > 0 and n >= 3)
    n_test = int(round(n * splits[2] / total)) or int(splits[2] > 0 and n >= 3)
    if splits[0] > 0 and n > 0:
        while n_val + n_test >= n and (n_val or n_test):  # keep at least one training subject
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
    n_train = n - n_val - n_test
    ids = list(ids)
    return {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}


def generate_dataset(
    out_dir: str | os.PathLike,
    n_subjects: int,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
    misalign: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write `n_subjects` phantom subjects under `out_dir` and its `dataset.json`; returns `out_dir`.

    Per subject `sub-XXX/`: mr.nii.gz (float32), ct.nii.gz (int16 HU, misaligned when `misalign`),
    ct_aligned.nii.gz (int16 HU, aligned to the MR: the ground truth), mask.nii.gz, labels.nii.gz.
    Subjects are rendered in `workers` processes (default: up to the CPU count); the output
    depends only on `seed`, `shape` and `misalign`. `dataset.json` is written last, atomically.
    """
    if n_subjects < 1:
        raise UserError(f"--subjects must be at least 1, got {n_subjects}")
    shape = tuple(int(n) for n in shape)
    out = ensure_folder(out_dir)
    ids = [subject_id(i) for i in range(n_subjects)]
    jobs = [(out / sid, subject_seed(seed, i), shape, misalign) for i, sid in enumerate(ids)]
    workers = max(1, min(workers or os.cpu_count() or 1, n_subjects))
    done = _run_jobs(jobs, workers)
    if progress:
        from tqdm import tqdm

        done = tqdm(done, total=len(jobs), desc="phantom", unit="subject")
    for _ in done:
        pass

    spacing, _ = grid_geometry(shape)
    info = {
        "name": "counterfeit head phantom",
        "format": 1,
        "subjects": ids,
        "splits": split_subjects(ids, splits),
        "files": FILES,
        "shape": list(shape),
        "spacing": list(spacing),
        "seed": seed,
        "misalign": misalign,
        "tissues": {str(k): v for k, v in TISSUES.items()},
    }
    atomic_write_text(out / "dataset.json", json.dumps(info, indent=2) + "\n")
    return out


def remove_dataset(root: str | os.PathLike) -> None:
    """Delete a phantom data set: the subject folders its dataset.json lists, that file and preview.png (nothing else)."""
    root = Path(root)
    info = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").unlink()  # first: a half-deleted data set is then no longer loadable as a whole one
    for sid in info.get("subjects", []):
        if isinstance(sid, str) and sid and "/" not in sid and sid not in (".", ".."):
            shutil.rmtree(root / sid, ignore_errors=True)
    (root / "preview.png").unlink(missing_ok=True)


def _run_jobs(jobs: list, workers: int):
    """Yield as subjects finish; a pool of fresh processes (spawn: safe even after torch started threads)."""
    if workers == 1:
        for job in jobs:
            yield _write_subject(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_write_subject, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def _write_subject(job: tuple) -> str:
    from counterfeit.data.volumes import write_volume

    folder, seed, shape, misalign = job
    volumes = subject_volumes(make_subject(seed, shape, misalign=misalign))
    for name, filename in FILES.items():
        write_volume(volumes[name], Path(folder) / filename, dtype=_FILE_DTYPES[name])
    return Path(folder).name


def phantom_in(root: Path, n_subjects: int, *, shape: Sequence[int] = DEFAULT_SHAPE, seed: int = 0,
               splits: Sequence[float] = (0.6, 0.2, 0.2), progress: bool = False,
               say: Callable[[str], None] = lambda message: None) -> Path:
    """The phantom in `root` if it was made with these options, else generated there (again), for commands that keep
    their own phantom in their output folder (`demo`, `train` without data). A folder holding anything else than a
    phantom is refused rather than cleared. `say` reports what happens."""
    root = Path(root)
    wanted = {"subjects": n_subjects, "shape": [int(n) for n in shape], "seed": seed,
              "splits": {k: len(v) for k, v in split_subjects([""] * n_subjects, splits).items()}}
    if (root / "dataset.json").is_file():
        made = load_dataset(root)
        found = {"subjects": len(made["subjects"]), "shape": list(made.get("shape", [])), "seed": made.get("seed"),
                 "splits": {k: len(v) for k, v in made["splits"].items()}}
        if found == wanted:
            return root
        say(f"the phantom in {root} was made with {found}, not {wanted}: generating it again")
    if root.exists():
        strays = [p.name for p in root.iterdir()
                  if not (p.name in ("dataset.json", "preview.png") or p.name.startswith("sub-"))]
        if strays:
            raise UserError(f"{root}: not only a phantom ({', '.join(strays[:3])} ...); a phantom is generated "
                            "there: move those files or choose another --out")
        shutil.rmtree(root)  # no stale subjects of a larger earlier phantom
    say(f"generating {n_subjects} phantom heads {tuple(shape)} into {root}")
    return generate_dataset(root, n_subjects, shape=shape, seed=seed, splits=splits, progress=progress)


def load_dataset(root: str | os.PathLike) -> dict:
    """Parse `dataset.json` in `root` (or the file itself) and check it; adds `root` (a Path)."""
    root = Path(root)
    path = root if root.suffix == ".json" else root / "dataset.json"
    if not path.exists():
        raise InputFileError(path, "file not found (generate one with `counterfeit phantom --out DIR`)")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(path, f"cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise InputFileError(path, f"not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(info, dict):
        raise InputFileError(path, "expected a JSON object")
    for key in ("subjects", "splits"):
        if key not in info:
            raise InputFileError(path, f"missing the {key!r} entry")
    subjects = info["subjects"]
    if not isinstance(subjects, list) or not subjects or not all(isinstance(s, str) for s in subjects):
        raise InputFileError(path, "'subjects' must be a non-empty list of subject ids")
    splits = info["splits"]
    if not isinstance(splits, dict):
        raise InputFileError(path, "'splits' must map split names to lists of subject ids")
    known = set(subjects)
    for name, members in splits.items():
        unknown = [s for s in members if s not in known] if isinstance(members, list) else None
        if unknown is None:
            raise InputFileError(path, f"split {name!r} must be a list of subject ids")
        if unknown:
            raise InputFileError(path, f"split {name!r} names unknown subject {unknown[0]!r}")
    info.setdefault("files", FILES)
    info["root"] = path.parent
    return info


def subject_paths(root: str | os.PathLike, subject: str) -> dict[str, Path]:
    """Paths of one subject's files (keys as in FILES: mr, ct, ct_aligned, mask, labels)."""
    folder = Path(root) / subject
    if not folder.is_dir():
        raise InputFileError(folder, "subject folder not found")
    return {name: folder / filename for name, filename in FILES.items()}


def read_labels(root: str | os.PathLike, subject: str) -> np.ndarray:
    """One subject's tissue labels (the keys of TISSUES), int64, aligned with its MR."""
    from counterfeit.data.volumes import read_volume

    return np.rint(read_volume(subject_paths(root, subject)["labels"]).array).astype(np.int64)


def preview(root: str | os.PathLike, out_png: str | os.PathLike, n_subjects: int = 4) -> Path:
    """Write a PNG montage of MR, CT and mask slices for the first `n_subjects` subjects."""
    from counterfeit.data.phantom_preview import write_preview

    return write_preview(root, out_png, n_subjects)
