"""Check a volume file's header before SimpleITK reads it: absurd sizes and missing data are refused.

ITK allocates the whole voxel buffer a header asks for before it reads any data, then
zero-fills what the file lacks (NIfTI) or grinds through it (a 300-byte NRRD claiming
1500^3 floats took 47 s and 8.5 GB). So NIfTI-1/2, MetaImage (.mha/.mhd) and NRRD
(.nrrd/.nhdr) headers are parsed here first, and the file is refused with one line naming
it when the header claims more than `MAX_VOXELS` voxels or a non-positive size, or when
the file holds fewer data bytes than the header promises. Compressed data is inflated as
a stream and only counted (up to what is needed), never held. Headers this module does not
understand are left to ITK to judge. A DICOM series is allocated from its first slice's Rows,
Columns and frame count times the number of files, so that product is checked the same way
(through GDCM's header-only read) before the series is read.
"""

from __future__ import annotations

import bz2
import gzip
import math
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import numpy as np

from counterfeit.errors import InputFileError

# 2**31 voxels is 8 GiB as float32, four times a 512 x 512 x 2000 whole-body CT: no real
# volume this toolkit can process is larger, while a corrupt header easily claims 10**12.
MAX_VOXELS = 2**31
_HEADER_LIMIT = 1 << 16  # text headers longer than this are not headers


@dataclass(frozen=True)
class _DataLayout:
    """Where a volume's data bytes are and how many the header promises."""

    file: Path
    start: int  # byte offset in `file` where the (possibly compressed) stream starts
    need: int  # bytes the header promises, counted in the decompressed stream from `start`
    encoding: str  # "raw", "gzip", "zlib" or "bzip2"; anything else is not counted


def check_volume_header(path: Path) -> None:
    """Raise InputFileError if `path`'s header is absurd or its data is truncated; unknown formats pass."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        layout = _nifti_layout(path)
    elif name.endswith((".mha", ".mhd")):
        layout = _metaimage_layout(path)
    elif name.endswith((".nrrd", ".nhdr")):
        layout = _nrrd_layout(path)
    else:
        return
    if layout is not None:
        _check_data_complete(path, layout)


def check_dicom_series_header(folder: Path, files: Sequence[str]) -> None:
    """Raise InputFileError if the series of `files` (sorted as ITK reads them) would exceed MAX_VOXELS."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    try:
        reader.ReadImageInformation()  # the header only: no pixel buffer
    except RuntimeError:
        raise InputFileError(Path(files[0]), "unreadable DICOM header") from None
    size = list(reader.GetSize()) + [1]  # (columns, rows[, frames])
    _check_size(folder, [size[0], size[1], size[2] * len(files)])


def _check_size(path: Path, dims: list[int]) -> int:
    """Voxel count of `dims`, refusing non-positive sizes and more than MAX_VOXELS voxels."""
    shape = "x".join(str(d) for d in dims)
    if not dims or any(d <= 0 for d in dims):
        raise InputFileError(path, f"header has an invalid size {shape or '(none)'} (every dimension must be >= 1)")
    voxels = math.prod(dims)
    if voxels > MAX_VOXELS:
        raise InputFileError(path, f"header claims {shape} = {voxels:.3g} voxels, more than the limit of "
                                   f"{MAX_VOXELS:.3g} (corrupt header, or a volume far too large to process)")
    return voxels


# --- NIfTI ---------------------------------------------------------------------------------------

def _nifti_layout(path: Path) -> _DataLayout | None:
    compressed = path.name.lower().endswith(".gz")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(540)
    except (EOFError, OSError, zlib.error):
        raise InputFileError(path, "unreadable or corrupt file (compressed data is truncated or damaged)") from None
    parsed = _parse_nifti(header)
    if parsed is None:
        return None  # not a NIfTI header we understand: let ITK judge it
    dims, bitpix, offset = parsed
    if not 1 <= dims[0] <= 7:
        raise InputFileError(path, f"invalid NIfTI header (dim[0] = {dims[0]}, expected 1..7)")
    if bitpix <= 0:
        raise InputFileError(path, f"invalid NIfTI header (bitpix = {bitpix})")
    voxels = _check_size(path, list(dims[1 : dims[0] + 1]))
    need = max(offset, 348) + voxels * bitpix // 8
    return _DataLayout(path, 0, need, "gzip" if compressed else "raw")


def _parse_nifti(header: bytes) -> tuple[tuple[int, ...], int, int] | None:
    """(dim[0..7], bitpix, vox_offset) of a NIfTI-1 or NIfTI-2 header in either byte order."""
    if len(header) < 348:
        return None
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = struct.unpack(endian + "f", header[108:112])[0]
            return dims, bitpix, int(offset) if math.isfinite(offset) else 0
        if sizeof_hdr == 540 and len(header) >= 540:
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            return dims, bitpix, offset
    return None


_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64 voxels
_SCAN_CHUNK = 1 << 24  # bytes per read while scanning for NaN


def nifti_has_non_finite(path: Path) -> bool:
    """True if a float NIfTI file stores NaN or infinite voxels.

    ITK's NIfTI reader turns NaN into 0, so a volume read through SimpleITK cannot show them: a NaN in a reference
    CT would be scored as water. This reads the data a second time (streamed, in chunks), only for float types.
    """
    compressed = path.name.lower().endswith(".gz")
    opener = gzip.open if compressed else open
    with opener(path, "rb") as fh:
        header = fh.read(540)
        found = _nifti_float_layout(header)
        if found is None:
            return False
        dtype, offset = found
        fh.seek(offset)
        item = dtype.itemsize
        rest = b""
        while chunk := fh.read(_SCAN_CHUNK):
            data, cut = rest + chunk, (len(rest) + len(chunk)) // item * item
            rest = data[cut:]
            if not np.isfinite(np.frombuffer(data[:cut], dtype=dtype)).all():
                return True
    return False


def _nifti_float_layout(header: bytes) -> tuple[np.dtype, int] | None:
    """(voxel dtype, data offset) of a NIfTI-1/2 header whose voxels are floats; None otherwise."""
    if len(header) < 348:
        return None
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
        if sizeof_hdr == 348:
            code = struct.unpack(endian + "h", header[70:72])[0]
            offset = struct.unpack(endian + "f", header[108:112])[0]
            offset = int(offset) if math.isfinite(offset) else 352
        elif sizeof_hdr == 540 and len(header) >= 540:
            code = struct.unpack(endian + "h", header[12:14])[0]
            offset = struct.unpack(endian + "q", header[168:176])[0]
        else:
            continue
        kind = _NIFTI_FLOATS.get(code)
        return (np.dtype(endian + kind), max(offset, sizeof_hdr)) if kind else None
    return None


# --- MetaImage -----------------------------------------------------------------------------------

_MET_SIZES = {"CHAR": 1, "UCHAR": 1, "SHORT": 2, "USHORT": 2, "INT": 4, "UINT": 4, "LONG": 4, "ULONG": 4,
              "LONG_LONG": 8, "ULONG_LONG": 8, "FLOAT": 4, "DOUBLE": 8}


def _metaimage_layout(path: Path) -> _DataLayout | None:
    header, data_start = _read_text_header(path, rb"(?m)^[ \t]*ElementDataFile[ \t]*=[^\n]*\n?")
    fields = dict(re.findall(r"(?m)^\s*(\w+)\s*=[ \t]*(.*?)\s*$", header))
    if "DimSize" not in fields or "ElementDataFile" not in fields:
        return None
    dims = _ints(path, "DimSize", fields["DimSize"])
    if "NDims" in fields:
        ndims = _ints(path, "NDims", fields["NDims"])
        dims = dims[: ndims[0]] if ndims else dims
    voxels = _check_size(path, dims)
    element = re.sub(r"^MET_|_ARRAY$", "", fields.get("ElementType", "").upper())
    channels = _ints(path, "ElementNumberOfChannels", fields.get("ElementNumberOfChannels", "1")) or [1]
    need = voxels * _MET_SIZES.get(element, 1) * max(channels[0], 1)
    encoding = "zlib" if fields.get("CompressedData", "").lower() == "true" else "raw"

    data_file = fields["ElementDataFile"]
    if data_file == "LOCAL":
        return _DataLayout(path, data_start, need, encoding)
    if data_file.startswith("LIST") or "%" in data_file:
        return None  # a series of slice files: ITK checks them
    data = path.parent / data_file
    if not data.is_file():
        raise InputFileError(path, f"data file {data_file} named in the header is missing")
    skip = max((_ints(path, "HeaderSize", fields.get("HeaderSize", "0")) or [0])[0], 0)  # -1: data at the end
    return _DataLayout(data, skip, need, encoding)


# --- NRRD ----------------------------------------------------------------------------------------

_NRRD_SIZES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}
_NRRD_TYPE_SIZE = {name: size for size, names in _NRRD_SIZES.items() for name in names}
_NRRD_ENCODINGS = {"raw": "raw", "gz": "gzip", "gzip": "gzip", "bz2": "bzip2", "bzip2": "bzip2"}


def _nrrd_layout(path: Path) -> _DataLayout | None:
    header, data_start = _read_text_header(path, rb"\r?\n\r?\n", magic=b"NRRD")
    fields = {}
    for line in header.splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue  # comments and key/value pairs
        key, value = line.split(":", 1)
        fields[key.strip().lower().replace(" ", "")] = value.strip()
    if "sizes" not in fields:
        return None
    voxels = _check_size(path, _ints(path, "sizes", fields["sizes"]))
    itemsize = _NRRD_TYPE_SIZE.get(fields.get("type", "").lower(), 1)
    need = voxels * itemsize
    encoding = _NRRD_ENCODINGS.get(fields.get("encoding", "raw").lower())
    if encoding is None:
        return None  # text or hex data: ITK parses it value by value
    skip = max((_ints(path, "byte skip", fields.get("byteskip", "0")) or [0])[0], 0)  # -1: data at the end
    data_file = fields.get("datafile")
    if data_file is None:
        file, start = path, data_start
    elif data_file.startswith("LIST") or " " in data_file or "%" in data_file:
        return None  # several data files: ITK checks them
    else:
        file, start = path.parent / data_file, 0
        if not file.is_file():
            raise InputFileError(path, f"data file {data_file} named in the header is missing")
    if encoding == "raw":
        return _DataLayout(file, start + skip, need, encoding)
    return _DataLayout(file, start, need + skip, encoding)  # compressed: the skip counts decompressed bytes


# --- shared --------------------------------------------------------------------------------------

def _read_text_header(path: Path, end: bytes, magic: bytes = b"") -> tuple[str, int]:
    """The text header up to the regex `end` (decoded) and the byte offset after it; ("", 0) if none.

    A file without `end` counts as all header (a detached NRRD header ends at end of file).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_LIMIT)
    except OSError as err:
        raise InputFileError(path, f"cannot read ({err.strerror})") from None
    if not head.startswith(magic):
        return "", 0
    match = re.search(end, head)
    if match is None:
        return (head.decode("latin-1"), len(head)) if len(head) < _HEADER_LIMIT else ("", 0)
    return head[: match.end()].decode("latin-1"), match.end()


def _ints(path: Path, field: str, text: str) -> list[int]:
    try:
        return [int(v) for v in text.split()]
    except ValueError:
        raise InputFileError(path, f"invalid header field {field} = {text[:60]!r} (expected integers)") from None


def _check_data_complete(path: Path, layout: _DataLayout) -> None:
    """Count the data bytes (inflating compressed streams up to `need`) and refuse a short file."""
    try:
        if layout.encoding == "raw":
            have = layout.file.stat().st_size - layout.start
        else:
            with open(layout.file, "rb") as fh:
                fh.seek(layout.start)
                have = _inflated_size(fh, layout.need, layout.encoding)
    except (EOFError, OSError, zlib.error, ValueError):
        raise InputFileError(path, "unreadable or corrupt file (compressed data is truncated or damaged)") from None
    if have < layout.need:
        what = "bytes" if layout.file == path and layout.start == 0 else "data bytes"
        where = "" if layout.file == path else f" in {layout.file.name}"
        raise InputFileError(path, f"file is truncated ({max(have, 0)} of {layout.need} {what}{where})")


def _inflated_size(fh: BinaryIO, need: int, encoding: str) -> int:
    """Decompressed bytes of the stream at fh's position, counted in chunks and capped at `need`."""
    openers: dict[str, Callable[[BinaryIO], BinaryIO]] = {
        "gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
        "bzip2": lambda f: bz2.BZ2File(f, mode="rb"),
    }
    if encoding in openers:
        total = 0
        with openers[encoding](fh) as stream:
            while total < need and (chunk := stream.read(1 << 22)):
                total += len(chunk)
        return total
    inflater = zlib.decompressobj(47)  # MetaImage: zlib or gzip framing, detected from the stream
    total = 0
    while total < need:
        pending = inflater.unconsumed_tail or fh.read(1 << 20)
        if not pending:
            break
        total += len(inflater.decompress(pending, 1 << 22))
        if inflater.eof:
            break
    return total
