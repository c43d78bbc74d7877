"""Read and write 3D medical volumes (NIfTI, MetaImage, NRRD, DICOM series) keeping their geometry.

Voxels live in a numpy array in SimpleITK's (z, y, x) order; spacing, origin and direction
stay in SimpleITK's (x, y, z) conventions. A volume read, processed with `with_array` and
written back lands on exactly the same physical grid, so a synthetic CT overlays its MR in
any viewer. Problems with inputs raise `InputFileError` with one line naming file and problem.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from counterfeit.atomic import atomic_path
from counterfeit.data.volume_headers import check_dicom_series_header, check_volume_header, nifti_has_non_finite
from counterfeit.errors import InputFileError, UserError

if TYPE_CHECKING:  # SimpleITK is imported lazily: it is slow to import.
    import SimpleITK as sitk

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
WRITE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
MODALITIES = ("ct", "mr", "mask")
WRITE_DTYPES = ("float32", "int16", "uint8")
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(eq=False)  # equality of numpy arrays is ambiguous: compare `.array` explicitly
class Volume:
    """A 3D image: voxels `array` (z, y, x) plus its physical grid (SimpleITK x, y, z conventions)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, ...] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray) -> "Volume":
        """The same grid with new voxels (e.g. a synthetic CT for this MR); shapes must match."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"new array has shape {array.shape}, the volume's grid is {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    def to_sitk(self) -> "sitk.Image":
        import SimpleITK as sitk

        array = self.array
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(tuple(float(d) for d in self.direction))
        return img

    @classmethod
    def from_sitk(cls, img: "sitk.Image") -> "Volume":
        import SimpleITK as sitk

        return cls(
            array=sitk.GetArrayFromImage(img),
            spacing=tuple(float(s) for s in img.GetSpacing()),
            origin=tuple(float(o) for o in img.GetOrigin()),
            direction=tuple(float(d) for d in img.GetDirection()),
        )


def has_volume_suffix(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def read_volume(path: str | os.PathLike, *, modality: str | None = None, require_3d: bool = True) -> Volume:
    """Read a volume file or a DICOM series folder.

    modality: "ct" -> float32 Hounsfield units (DICOM/NIfTI rescale slope and intercept applied);
    "mr" -> float32, NaN read as 0 (a masked background); "mask" -> uint8 0/1 (1 where the file's value is > 0), must not be empty; None -> float32.
    require_3d: reject 2D images (a single slice), which most of the toolkit cannot use.
    Headers are checked before anything is allocated: more than `volume_headers.MAX_VOXELS`
    voxels (2**31), non-positive sizes or fewer data bytes than promised raise InputFileError.
    """
    if modality is not None and modality not in MODALITIES:
        raise UserError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found")
    img = _read_dicom_series(path) if path.is_dir() else _read_file(path)

    import SimpleITK as sitk

    _check_layout(path, img.GetNumberOfComponentsPerPixel(), img.GetSize(), require_3d)
    if img.GetDimension() == 4:  # one time point (NIfTI readers drop it already; MetaImage's not)
        img = img[:, :, :, 0]
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    vol = Volume.from_sitk(img)

    if modality == "mr":
        return vol.with_array(_mr_without_nan(path, vol.array.astype(np.float32, copy=False)))
    if not np.isfinite(vol.array).all() or _nifti_hides_non_finite(path, vol.array.dtype):
        raise InputFileError(path, "contains NaN or infinite voxel values")
    if modality == "mask":
        mask = (vol.array > 0).astype(np.uint8)  # SynthRAD2023's rule: a voxel is inside where the mask is > 0
        if not mask.any():
            raise InputFileError(path, "mask is empty (no voxel > 0)")
        return vol.with_array(mask)
    if modality == "ct" and vol.array.size and float(vol.array.min()) >= 0:
        # air is -1000 HU and lies around every body: a CT without a value below 0 is stored with an offset
        warnings.warn(f"{path}: no voxel below 0, so probably not in Hounsfield units (air is -1000 HU; an offset of "
                      f"+1024 not removed?); its values are used as HU", stacklevel=2)
    return vol.with_array(vol.array.astype(np.float32, copy=False))


def probe_volume(path: str | os.PathLike) -> None:
    """Raise InputFileError for a file `read_volume` would refuse for its header or its layout (not 3D, not scalar,
    truncated), without reading its voxels: a command about to write outputs checks all its inputs first."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        return  # a DICOM series: read whole, when its turn comes
    reader = sitk.ImageFileReader()
    reader.SetImageIO(_checked_file_io(path))
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        _raise_unreadable(path, err)
    _check_layout(path, reader.GetNumberOfComponents(), reader.GetSize(), require_3d=True)


def _check_layout(path: Path, components: int, size: Sequence[int], require_3d: bool) -> None:
    """A scalar 3D volume (a 4D one with a single time point counts), or with `require_3d` False also a 2D image."""
    if components != 1:
        raise InputFileError(path, f"has {components} values per voxel (colour or vector image); a scalar volume is "
                                   "expected")
    size = tuple(size)
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) > 3:
        raise InputFileError(path, f"is {len(size)}D (size {size}); a 3D volume is expected")
    if require_3d and len(size) == 2:
        raise InputFileError(path, f"is a 2D image ({size[1]}x{size[0]}); a 3D volume is expected")
    if require_3d and len(size) == 3 and size[2] == 1:
        raise InputFileError(path, f"is a single 2D slice ({size[1]}x{size[0]}); a 3D volume is expected")


def _mr_without_nan(path: Path, array: np.ndarray) -> np.ndarray:
    """MR with NaN read as 0: skull-stripping and registration tools often write NaN as the masked background.
    Infinite values are refused. (ITK's NIfTI reader already reads both as 0; MR NIfTI files are not scanned for
    them, as CT and masks are, since a zero there is harmless background.)"""
    nan = np.isnan(array)
    if np.isinf(array).any():
        raise InputFileError(path, "contains infinite voxel values")
    if nan.any():
        warnings.warn(f"{path}: {int(nan.sum())} NaN voxels (a masked background?) read as 0", stacklevel=3)
        array = np.where(nan, np.float32(0), array)
    return array


def _nifti_hides_non_finite(path: Path, dtype: np.dtype) -> bool:
    """ITK reads a float NIfTI's NaN as 0: look in the file itself."""
    return (np.issubdtype(dtype, np.floating) and path.is_file()
            and path.name.lower().endswith((".nii", ".nii.gz")) and nifti_has_non_finite(path))


def _read_file(path: Path) -> "sitk.Image":
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path), imageIO=_checked_file_io(path))
    except RuntimeError as err:
        return _raise_unreadable(path, err)


def _checked_file_io(path: Path) -> str:
    """Check a volume file before ITK reads it; the ImageIO to read it with ("": ITK's choice)."""
    if path.stat().st_size == 0:
        raise InputFileError(path, "file is empty")
    # ITK allocates what a header claims before reading, and zero-fills truncated NIfTI data.
    check_volume_header(path)
    # ITK chooses MetaImage's reader by a case-sensitive extension: name it for `CT.MHA` (NIfTI and NRRD sniff content)
    return "MetaImageIO" if path.name.lower().endswith((".mha", ".mhd")) else ""


def _read_dicom_series(folder: Path) -> "sitk.Image":
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as err:
        _raise_unreadable(folder, err)
    if not series:
        raise InputFileError(folder, "folder holds no DICOM series (expected a DICOM series folder or a volume file)")
    # Exports often add a localiser or scout as an extra series: the largest one is the volume.
    candidates = sorted((reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series), key=len, reverse=True)
    files = candidates[0]
    if len(candidates) > 1 and len(candidates[1]) == len(files):
        raise InputFileError(folder, f"holds {len(candidates)} DICOM series, {len(files)} slices in each of the largest "
                                     "two: put each series in a folder of its own")
    check_dicom_series_header(folder, files)  # ITK allocates the series from its first header
    reader.SetFileNames(files)
    # float voxels: ITK applies each slice's own rescale slope/intercept; with the first slice's integer type a
    # slope of 0.5 on later slices would be truncated to whole HU
    reader.SetOutputPixelType(sitk.sitkFloat32)
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's position, to check the spacing between them
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's multi-line C++ warnings: the check below says it in one
    try:
        img = reader.Execute()
    except RuntimeError as err:
        return _raise_unreadable(folder, err)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    _check_even_slice_positions(folder, reader, img)
    return img


def _check_even_slice_positions(folder: Path, reader: "sitk.ImageSeriesReader", img: "sitk.Image") -> None:
    """A missing or duplicated slice would make ITK stack the rest at one average spacing: the volume would no
    longer lie where the scanner put it. Refuse series whose slices are not evenly spaced (to 1 %, 0.01 mm)."""
    n = img.GetSize()[2] if img.GetDimension() == 3 else 1
    if n < 3:
        return
    normal = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    try:
        positions = [np.array(reader.GetMetaData(i, "0020|0032").split("\\"), dtype=np.float64) for i in range(n)]
    except (RuntimeError, ValueError):  # no (readable) Image Position (Patient) tags: nothing to check against
        return
    if any(p.shape != (3,) for p in positions):
        return
    gaps = np.diff([float(p @ normal) for p in positions])
    step = float(np.median(gaps))
    if step == 0 or not np.allclose(gaps, step, rtol=0.01, atol=0.01):
        odd = sorted({round(float(g), 3) for g in gaps if not np.isclose(g, step, rtol=0.01, atol=0.01)})
        raise InputFileError(folder, f"DICOM slices are not evenly spaced ({step:.4g} mm apart, but also "
                                     f"{', '.join(f'{g:g}' for g in odd[:3])} mm: a missing or duplicated slice?)")


def _raise_unreadable(path: Path, err: RuntimeError):
    detail = _itk_gist(str(err))
    known = path.is_dir() or has_volume_suffix(path) or path.suffix.lower() == ".dcm"
    kind = "unreadable or corrupt file" if known else "not a readable volume (unsupported file type or corrupt file)"
    raise InputFileError(path, kind + (f" ({detail})" if detail else "")) from None


# ITK messages span many lines and name C++ sources; map the common ones to a short reason.
_ITK_REASONS = (
    ("Unable to determine ImageIO reader", "no image reader recognises its content"),
    ("expected", "data is truncated"),
    ("File cannot be read", "data is missing or truncated"),
    ("Unable to open", "cannot open it"),
)


def _itk_gist(message: str) -> str:
    for needle, reason in _ITK_REASONS:
        if needle in message:
            return reason
    return ""


def write_volume(vol: Volume, path: str | os.PathLike, *, dtype: str | None = None) -> Path:
    """Write `vol` atomically; the format follows the extension (.nii, .nii.gz, .mha, .mhd, .nrrd).

    dtype: None keeps the array's type (bool masks become uint8); "int16" rounds and clips (CT in
    HU); "uint8" or "float32" cast. `.mhd` writes a `.raw` sidecar next to it, data before header.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(WRITE_SUFFIXES):
        raise UserError(f"{path}: unsupported output format; use one of {', '.join(WRITE_SUFFIXES)}")
    d = np.asarray(vol.direction, dtype=np.float64).reshape(3, 3)
    if name.endswith((".nii", ".nii.gz")) and not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        # NIfTI stores a rotation: a sheared grid (e.g. CT with gantry tilt) would land elsewhere, silently
        raise UserError(f"{path}: NIfTI cannot store this volume's sheared grid (direction axes not perpendicular); "
                        "write .mha or .nrrd instead (synthesize: --suffix .mha)")
    img = Volume(_cast(vol.array, dtype), vol.spacing, vol.origin, vol.direction).to_sitk()

    import SimpleITK as sitk

    if name.endswith(".mhd"):
        _write_mhd(img, path)
        return path
    compress = not name.endswith(".nii")  # .nii.gz is always gzipped; .mha/.nrrd get zlib too
    # the temporary file ends in the lower-case suffix: ITK picks its writer by a case-sensitive extension
    suffix = max((s for s in WRITE_SUFFIXES if name.endswith(s)), key=len)
    with atomic_path(path, suffix=suffix) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), compress, 1)  # level 1: nearly as small, several times faster
        except RuntimeError as err:
            raise _write_error(path, err) from None
        _check_written(tmp, path)
    return path


def _check_written(tmp: Path, path: Path) -> None:
    """ITK's NIfTI writer reports a full disk on stderr and returns: check that all the data reached the file."""
    try:
        check_volume_header(tmp)
        if tmp.stat().st_size == 0:
            raise InputFileError(tmp, "empty")
    except InputFileError:
        raise UserError(f"{path}: cannot write volume (the file came out incomplete: is the disk full?)") from None


def _cast(array: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype is None:
        return array.astype(np.uint8) if array.dtype == np.bool_ else array
    if dtype not in WRITE_DTYPES:
        raise UserError(f"unknown output dtype {dtype!r}; expected one of {', '.join(WRITE_DTYPES)}")
    if dtype == "int16":
        return np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    if dtype == "uint8":
        return np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return array.astype(np.float32)


def _write_mhd(img: "sitk.Image", path: Path) -> None:
    """Header plus `.raw` sidecar: the data is renamed into place first, the header last."""
    import SimpleITK as sitk

    raw = path.with_suffix(".raw")
    with atomic_path(path, suffix=".mhd") as tmp_header, atomic_path(raw) as tmp_raw:
        written_raw = tmp_header.with_suffix(".raw")  # SimpleITK names the sidecar after the header
        try:
            sitk.WriteImage(img, str(tmp_header), False)
            os.replace(written_raw, tmp_raw)
        except RuntimeError as err:
            raise _write_error(path, err) from None
        finally:
            written_raw.unlink(missing_ok=True)
        if tmp_raw.stat().st_size < img.GetNumberOfPixels() * img.GetSizeOfPixelComponent():
            raise UserError(f"{path}: cannot write volume (the data file came out incomplete: is the disk full?)")
        header = tmp_header.read_text()
        header = re.sub(r"(?m)^ElementDataFile\s*=.*$", f"ElementDataFile = {raw.name}", header)
        tmp_header.write_text(header)


def _write_error(path: Path, err: RuntimeError) -> UserError:
    detail = _itk_gist(str(err))
    return UserError(f"{path}: cannot write volume" + (f" ({detail})" if detail else ""))


def list_volumes(folder: str | os.PathLike) -> list[Path]:
    """Volume files (by extension) and DICOM series subfolders directly inside `folder`, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "folder not found" if not folder.exists() else "is not a folder")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and has_volume_suffix(entry):
            found.append(entry)
        elif entry.is_dir() and _holds_dicom(entry):
            found.append(entry)
    return found


def _holds_dicom(folder: Path) -> bool:
    for entry in folder.iterdir():
        if entry.is_file():
            try:
                with open(entry, "rb") as fh:
                    head = fh.read(132)
            except OSError:
                continue
            if head[128:132] == b"DICM" or entry.suffix.lower() == ".dcm":
                return True
    return False


def check_same_grid(a: Volume | np.ndarray, b: Volume | np.ndarray, names: Sequence[str] = ("MR", "CT")) -> None:
    """Raise `InputFileError` naming the second input if `a` and `b` are not on the same voxel grid.

    Paired MR/CT must share a grid voxel for voxel: shape, and for Volumes also spacing, origin (to a
    hundredth of the smallest voxel side) and direction. A shifted or flipped grid of the right shape
    would otherwise be compared voxel by voxel with the wrong anatomy.
    """
    mismatch = grid_mismatch(a, b, names)
    if mismatch is not None:
        raise InputFileError(names[1], f"{mismatch}; paired volumes must share one voxel grid (resample first)")


def grid_mismatch(a: Volume | np.ndarray, b: Volume | np.ndarray, names: Sequence[str] = ("MR", "CT")) -> str | None:
    """How `b`'s voxel grid differs from `a`'s (the first difference, in words), or None if they share one.

    The one definition of "same grid" behind `check_same_grid`, for callers that skip rather than refuse.
    """
    shape_a, shape_b = np.shape(_array(a)), np.shape(_array(b))
    if shape_a != shape_b:
        return f"shape {_fmt(shape_b)} differs from {names[0]} shape {_fmt(shape_a)}"
    if not (isinstance(a, Volume) and isinstance(b, Volume)):
        return None
    for what, tolerance in (("spacing", dict(rtol=1e-3, atol=1e-4)),
                            ("origin", dict(rtol=0.0, atol=0.01 * min(a.spacing))),
                            ("direction", dict(rtol=0.0, atol=1e-4))):
        va, vb = getattr(a, what), getattr(b, what)
        if not np.allclose(va, vb, **tolerance):
            return f"{what} {_fmt_geometry(vb)} differs from {names[0]} {what} {_fmt_geometry(va)}"
    return None


def _fmt_geometry(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def axial_view(vol: Volume) -> tuple[Volume, Callable[[np.ndarray], np.ndarray]]:
    """`vol` with its array axes permuted and flipped to the nearest axial layout, and the function that maps an
    array in that layout back to `vol`'s.

    In the axial layout the array's axes (z, y, x) run towards the patient's superior, posterior and left sides
    (ITK's LPS with an identity direction, as most axial CT and MR are stored). The 2D networks see axis-0 slices,
    so a sagittal or coronal acquisition is sliced axially too, as in training, not along its own first axis.
    Pure permutations and flips: values and physical positions are unchanged (an oblique volume keeps its
    obliquity, within 45 degrees of the nearest axis). An axial volume comes back as it is.
    """
    import itertools

    d = np.asarray(vol.direction, dtype=np.float64).reshape(3, 3)  # column j: index axis j in physical space
    # the physical axis of each index axis: the assignment of largest total |cosine| (robust at 45 degrees)
    axis_of = max(itertools.permutations(range(3)), key=lambda p: sum(abs(d[p[j], j]) for j in range(3)))
    signs = [1 if d[axis_of[j], j] >= 0 else -1 for j in range(3)]
    if list(axis_of) == [0, 1, 2] and all(s > 0 for s in signs):
        return vol, lambda array: array
    source = {axis_of[j]: j for j in range(3)}  # physical axis k is read from index axis source[k]
    perm = tuple(2 - source[2 - a] for a in range(3))  # numpy axis a holds ITK index axis 2 - a
    flips = tuple(a for a in range(3) if signs[source[2 - a]] < 0)
    size = vol.array.shape[::-1]  # ITK (x, y, z) order
    corner = [size[j] - 1 if signs[j] < 0 else 0 for j in range(3)]  # the old index of the new first voxel
    origin = np.asarray(vol.origin) + d @ (np.asarray(vol.spacing) * corner)
    direction = np.stack([signs[source[k]] * d[:, source[k]] for k in range(3)], axis=1)
    array = np.transpose(vol.array, perm)
    axial = Volume(np.ascontiguousarray(np.flip(array, flips) if flips else array),  # torch takes no negative strides
                   tuple(float(vol.spacing[source[k]]) for k in range(3)), tuple(float(o) for o in origin),
                   tuple(float(v) for v in direction.reshape(-1)))
    inverse = tuple(int(i) for i in np.argsort(perm))

    def back(array: np.ndarray) -> np.ndarray:
        return np.transpose(np.flip(array, flips) if flips else array, inverse)

    return axial, back


def _array(x: Volume | np.ndarray) -> np.ndarray:
    return x.array if isinstance(x, Volume) else np.asarray(x)


def _fmt(values: Sequence) -> str:
    return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
