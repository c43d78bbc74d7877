"""Fuzzing the file readers, and refusing pickled objects in torch files.

Every reader must answer a damaged, hostile or absurd file with a `UserError` whose one-line
message names the file: no other exception, no hang, no huge allocation. Headers claiming
absurd sizes run in a child process whose address space is capped (RLIMIT_AS, +2 GiB), so
a reader that allocated what the header claims would fail there with MemoryError or a crash.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import re
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from counterfeit.data import images, layouts
from counterfeit.data.volumes import Volume, read_volume, write_volume
from counterfeit.errors import UserError

_RSS_AT_IMPORT_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
FUZZ = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
SECONDS = 5.0  # per case; a real read of these tiny files takes milliseconds
VOXELS = np.arange(120, dtype=np.float32).reshape(4, 5, 6)


def _refused(call, path: Path) -> str:
    """Run `call`; it must raise UserError with a one-line message naming `path`, quickly."""
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        call()
    assert time.perf_counter() - start < SECONDS
    message = str(err.value)
    assert "\n" not in message and path.name in message, message
    return message


def _refused_or_valid(call, path: Path, check) -> None:
    """Fuzzed bytes may still be a valid file: then `check` the result; otherwise a clean UserError."""
    start = time.perf_counter()
    try:
        result = call()
    except UserError as err:
        assert "\n" not in str(err) and path.name in str(err), str(err)
    else:
        check(result)
    assert time.perf_counter() - start < SECONDS


# --- building valid and broken files -------------------------------------------------------------

def _nifti(tmp_path: Path, dims=None, bitpix=None) -> bytes:
    """A real NIfTI-1 file (ITK-written) with optionally rewritten dim[] and bitpix fields."""
    write_volume(Volume(VOXELS), tmp_path / "seed.nii")
    data = bytearray((tmp_path / "seed.nii").read_bytes())
    if dims is not None:
        struct.pack_into("<8h", data, 40, *dims, *[1] * (8 - len(dims)))
    if bitpix is not None:
        struct.pack_into("<h", data, 72, bitpix)
    return bytes(data)


def _mha(dims: str, payload: bytes, compressed: bool = False, data_file: str = "LOCAL", element="MET_FLOAT") -> bytes:
    extra = f"CompressedData = True\nCompressedDataSize = {len(payload)}\n" if compressed else ""
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n{extra}"
              f"DimSize = {dims}\nElementType = {element}\nElementDataFile = {data_file}\n")
    return header.encode() + (payload if data_file == "LOCAL" else b"")


def _nrrd(sizes: str, payload: bytes, encoding: str = "raw", kind: str = "float") -> bytes:
    header = f"NRRD0004\ntype: {kind}\ndimension: 3\nsizes: {sizes}\nendian: little\nencoding: {encoding}\n\n"
    return header.encode() + payload


def _png_header(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims width x height 8-bit gray pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _tiff_claiming(tmp_path: Path, width: int, height: int) -> bytes:
    """A real 16x16 uncompressed TIFF whose ImageWidth/ImageLength/RowsPerStrip are rewritten."""
    import tifffile

    tifffile.imwrite(tmp_path / "seed.tif", np.zeros((16, 16), np.uint8))
    data = bytearray((tmp_path / "seed.tif").read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry:entry + 4])
        value = {256: width, 257: height, 278: height}.get(tag)
        if value is not None:
            struct.pack_into("<I" if kind == 4 else "<HH", data, entry + 8, *((value,) if kind == 4 else (value, 0)))
    return bytes(data)


def _png(tmp_path: Path) -> bytes:
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(tmp_path / "seed.png")
    return (tmp_path / "seed.png").read_bytes()


# --- volumes -------------------------------------------------------------------------------------

def test_handmade_headers_and_data_are_checked(tmp_path):
    """The header checks accept exact files and catch one missing byte, raw or compressed."""
    data = VOXELS.tobytes()
    good = {
        "v.mha": _mha("6 5 4", data), "z.mha": _mha("6 5 4", zlib.compress(data), compressed=True),
        "v.nrrd": _nrrd("6 5 4", data), "gz.nrrd": _nrrd("6 5 4", gzip.compress(data), "gzip"),
    }
    short = {
        "v.mha": _mha("6 5 4", data[:-1]), "z.mha": _mha("6 5 4", zlib.compress(data[:-4]), compressed=True),
        "v.nrrd": _nrrd("6 5 4", data[:-1]), "gz.nrrd": _nrrd("6 5 4", gzip.compress(data[:-4]), "gzip"),
        "bz.nrrd": _nrrd("6 5 4", bz2.compress(data[:-4]), "bzip2"),
    }
    for name, content in good.items():
        (tmp_path / name).write_bytes(content)
        np.testing.assert_array_equal(read_volume(tmp_path / name).array, VOXELS)
    for name, content in short.items():
        (tmp_path / f"short_{name}").write_bytes(content)
        message = _refused(lambda: read_volume(tmp_path / f"short_{name}"), tmp_path / f"short_{name}")
        assert "truncated" in message

    (tmp_path / "s.mhd").write_bytes(_mha("6 5 4", b"", data_file="s.raw"))
    (tmp_path / "s.raw").write_bytes(data[:-8])
    assert "472 of 480 data bytes in s.raw" in _refused(lambda: read_volume(tmp_path / "s.mhd"), tmp_path / "s.mhd")


@pytest.mark.parametrize("dims, words", [
    ([3, -6, 5, 4], "invalid size -6x5x4"),
    ([3, 6, -5, -4], "invalid size 6x-5x-4"),  # ITK alone reads this as a 1x1x6 volume
    ([3, 0, 5, 4], "invalid size 0x5x4"),
    ([9, 6, 5, 4], "dim[0] = 9"),
])
def test_nifti_with_impossible_dimensions(tmp_path, dims, words):
    path = tmp_path / "bad.nii"
    path.write_bytes(_nifti(tmp_path, dims))
    assert words in _refused(lambda: read_volume(path), path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95])
def test_truncated_nifti(tmp_path, suffix, keep):
    data = _nifti(tmp_path)
    if suffix == ".nii.gz":
        data = gzip.compress(data)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * keep)])
    _refused(lambda: read_volume(path), path)


_ABSURD_RUNNER = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import numpy, PIL.Image, SimpleITK, tifffile
from counterfeit.data import images, layouts
from counterfeit.data.volumes import read_volume
from counterfeit.errors import UserError
pages = int(open("/proc/self/statm").read().split()[0])
limit = pages * resource.getpagesize() + 2 * 2**30  # what is mapped now, plus 2 GiB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
readers = {"volume": read_volume, "image": lambda p: images.read_image(p, 32), "layout": layouts.read_layout,
           "folder": lambda p: images.load_image_folder(p, 32)}
for line in sys.stdin:
    kind, path = json.loads(line)
    start = time.perf_counter()
    try:
        readers[kind](path)
        outcome, message = "read", ""
    except UserError as err:
        outcome, message = "UserError", str(err)
    except BaseException as err:
        outcome, message = type(err).__name__, str(err)[:300]
    print(json.dumps([path, outcome, message, time.perf_counter() - start]), flush=True)
"""


def test_absurd_sizes_are_refused_before_allocating(tmp_path):
    """Headers claiming 10**9..10**18 voxels or 10**10 pixels in files of a few hundred bytes."""
    cases = {
        "billion.nii": ("volume", _nifti(tmp_path, [3, 1000, 1000, 1000])),
        "billion.nii.gz": ("volume", gzip.compress(_nifti(tmp_path, [3, 1000, 1000, 1000]))),
        "huge4d.nii": ("volume", _nifti(tmp_path, [4, 32767, 32767, 32767, 32767])),
        "bitpix.nii": ("volume", _nifti(tmp_path, [3, 1000, 1000, 500], bitpix=32767)),
        "huge.mha": ("volume", _mha("100000 100000 1000", b"\0" * 64)),
        "big.mha": ("volume", _mha("1200 1200 1000", zlib.compress(b"\0" * 64), compressed=True, element="MET_UCHAR")),
        "huge.nrrd": ("volume", _nrrd("1500 1500 1000", b"\0" * 64)),  # took 47 s and 8.5 GB before the check
        "big.nrrd": ("volume", _nrrd("1200 1200 1000", gzip.compress(b"\0" * 64), "gzip", "uchar")),
        "bomb.png": ("image", _png_header(100_000, 100_000)),
        "large.png": ("image", _png_header(12_000, 12_000)),
        "bomb_layout.png": ("layout", _png_header(100_000, 100_000)),
        "large_layout.png": ("layout", _png_header(12_000, 12_000)),
        "huge.tif": ("image", _tiff_claiming(tmp_path, 100_000, 100_000)),
        "tall.tif": ("image", _tiff_claiming(tmp_path, 8, 5_000_000)),  # tifffile would zero-fill 40 MB
    }
    (tmp_path / "sidecar.mhd").write_bytes(_mha("100000 100000 1000", b"", data_file="sidecar.raw"))
    (tmp_path / "sidecar.raw").write_bytes(b"\0" * 64)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    jobs = [("volume", str(tmp_path / "sidecar.mhd")), ("folder", str(tmp_path / "folder"))]
    for name, (kind, content) in cases.items():
        (tmp_path / name).write_bytes(content)
        jobs.append((kind, str(tmp_path / name)))
    src = Path(__file__).resolve().parents[1] / "src"
    run = subprocess.run([sys.executable, "-c", _ABSURD_RUNNER], input="".join(json.dumps(j) + "\n" for j in jobs),
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(src)})
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(results) == len(jobs), run.stderr[-2000:]
    for path, outcome, message, seconds in results:
        name = Path(path).name
        assert outcome == "UserError", (name, outcome, message)
        assert "\n" not in message and name in message, message
        assert seconds < SECONDS, (name, seconds)
    by_name = {Path(p).name: m for p, _, m, _ in results}
    assert "more than the limit" in by_name["huge.nrrd"] and "more than the limit" in by_name["huge4d.nii"]
    assert "truncated" in by_name["billion.nii"] and "truncated" in by_name["big.nrrd"]
    assert "more than the limit" in by_name["large.png"] and "truncated" in by_name["tall.tif"]


VOLUME_SUFFIXES = [".nii", ".nii.gz", ".mha", ".nrrd"]


@FUZZ
@given(suffix=st.sampled_from(VOLUME_SUFFIXES), data=st.binary(min_size=1, max_size=800))
def test_random_bytes_as_volume(tmp_path, suffix, data):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    _refused(lambda: read_volume(path), path)


@st.composite
def _mutations(draw, seed: bytes) -> bytes:
    """`seed` with a few bytes overwritten, or cut short."""
    data = bytearray(seed)
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def _volume_ok(vol: Volume) -> None:
    assert vol.array.ndim == 3 and vol.array.size <= 2**20 and np.isfinite(vol.array).all()


@pytest.fixture(scope="module")
def seed_volumes(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("seeds")
    out = {}
    for suffix in VOLUME_SUFFIXES:
        write_volume(Volume(VOXELS), folder / f"v{suffix}")
        out[suffix] = (folder / f"v{suffix}").read_bytes()
    return out


@FUZZ
@given(suffix=st.sampled_from(VOLUME_SUFFIXES), pick=st.data())
def test_damaged_real_volumes(tmp_path, seed_volumes, suffix, pick):
    data = pick.draw(_mutations(seed_volumes[suffix]))
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(data)
    _refused_or_valid(lambda: read_volume(path, require_3d=False), path, _volume_ok)


# --- images and layouts --------------------------------------------------------------------------

def _image_ok(img: np.ndarray) -> None:
    assert img.shape[-2:] == (16, 16) and np.isfinite(img).all() and img.min() >= -1 and img.max() <= 1


@FUZZ
@given(suffix=st.sampled_from([".png", ".tif"]), data=st.binary(min_size=1, max_size=600))
def test_random_bytes_as_image(tmp_path, suffix, data):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    _refused(lambda: images.read_image(path, 16), path)
    if suffix == ".png":
        _refused(lambda: layouts.read_image(path), path)
        _refused(lambda: layouts.read_layout(path), path)


def _layout_ok(labels: np.ndarray) -> None:
    assert labels.shape == (64, 64) and labels.min() >= 0


@FUZZ
@given(pick=st.data())
def test_damaged_real_png(tmp_path, pick):
    data = pick.draw(_mutations(_png(tmp_path)))
    path = tmp_path / "damaged.png"
    path.write_bytes(data)
    _refused_or_valid(lambda: images.read_image(path, 16), path, _image_ok)
    _refused_or_valid(lambda: layouts.read_layout(path), path, _layout_ok)


@pytest.mark.parametrize("keep", [8, 33, 60, 0.5, 0.9])
def test_truncated_png_in_every_reader(tmp_path, keep):
    data = _png(tmp_path)
    cut = data[: keep if isinstance(keep, int) else int(len(data) * keep)]
    folder = tmp_path / "imgs"
    folder.mkdir()
    path = folder / "cut.png"
    path.write_bytes(cut)
    _refused(lambda: images.read_image(path, 16), path)
    _refused(lambda: images.load_image_folder(folder, 16), path)
    _refused(lambda: layouts.read_image(path), path)
    _refused(lambda: layouts.read_layout(path), path)


def test_png_with_an_empty_header_chunk_in_every_reader(tmp_path):
    # Found by test_damaged_real_png: Pillow raises ValueError ("Truncated IHDR chunk") for it, not OSError.
    data = bytearray(_png(tmp_path))
    data[8:12] = b"\0\0\0\0"  # IHDR's length field
    path = tmp_path / "empty_ihdr.png"
    path.write_bytes(bytes(data))
    for read in (lambda: images.read_image(path, 16), lambda: layouts.read_image(path), lambda: layouts.read_layout(path)):
        _refused(read, path)


def test_folder_with_one_bad_image_names_it(tmp_path):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.tif").write_bytes(b"II*\0" + bytes(range(200)))
    _refused(lambda: images.load_image_folder(tmp_path, 16), tmp_path / "b.tif")


# --- palettes ------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["palette", "names", "classes", "color", "colour", "id", "name"])
                      | st.text(max_size=3), inner, max_size=4),
    max_leaves=16,
)
_CLASS = st.fixed_dictionaries(
    {"color": st.lists(st.integers(-5, 260), min_size=2, max_size=4)},
    optional={"id": st.integers(-1, 3) | st.none() | st.text(max_size=2) | st.floats(0, 3), "name": _JSON},
)


@FUZZ
@given(data=_JSON | st.lists(_CLASS, min_size=1, max_size=4)
       | st.fixed_dictionaries({"palette": _JSON, "names": _JSON}))
def test_palette_parsing_never_crashes(data):
    try:
        palette = layouts.parse_palette(data, source="fuzz.json")
    except UserError as err:
        assert "\n" not in str(err) and "fuzz.json" in str(err)
    else:
        assert palette.colors.shape == (len(palette), 3) and palette.colors.dtype == np.uint8
        assert len(palette) > 0


@pytest.mark.parametrize("data, words", [
    ({"palette": 5, "names": ["road"]}, "must be a list"),
    ([{"color": [1, 2, 3], "id": "a"}, {"color": [4, 5, 6], "id": 0}], "ids must be integers"),
    ([{"color": [1, 2, 3], "id": None}, {"color": [4, 5, 6], "id": 0}], "ids must be integers"),
    ([{"color": [1, 2, 3], "id": 1.0}, {"color": [4, 5, 6], "id": 0.0}], "ids must be integers"),
    ([{"color": [1, 2, 3], "id": True}, {"color": [4, 5, 6], "id": False}], "ids must be integers"),
])
def test_malformed_palettes(data, words):
    with pytest.raises(UserError, match=re.escape(words)):
        layouts.parse_palette(data, source="p.json")


@pytest.mark.parametrize("content", [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe\x00garbage", b"{", b""])
def test_unreadable_palette_files(tmp_path, content):
    path = tmp_path / "palette.json"
    path.write_bytes(content)
    _refused(lambda: layouts.read_palette(path), path)


# --- torch files: weights only -------------------------------------------------------------------

class Pickled:
    """A plain class instance: not a tensor, so weights-only loading must refuse it."""

    def __init__(self) -> None:
        self.value = 1


class RunsCode:
    """Unpickling this calls open(marker, "w"): proof that code ran, if the file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _torch_loaders():
    from counterfeit.nets import inception, vgg
    from counterfeit.train.checkpoint import read_state_file

    return {
        "checkpoint state": read_state_file,
        "vgg read_state_dict": vgg.read_state_dict,
        "vgg load_vgg19_weights": lambda p: vgg.load_vgg19_weights(vgg.VGG19Features(), p),
        "inception read_state_dict": inception.read_state_dict,
        "inception load_inception": inception.load_inception,
    }


@pytest.mark.parametrize("payload", ["instance", "code"])
def test_torch_files_with_pickled_objects_are_refused(tmp_path, payload):
    marker = tmp_path / "code_ran"
    obj = Pickled() if payload == "instance" else RunsCode(marker)
    path = tmp_path / "weights.pt"
    torch.save({"features.0.weight": torch.zeros(2), "extra": obj}, path)
    for name, load in _torch_loaders().items():
        message = _refused(lambda: load(path), path)
        assert "weights-only" in message and "pickled Python object" in message, (name, message)
        assert not marker.exists(), f"{name} executed pickled code"


def test_damaged_torch_files_are_refused(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.arange(10.0)}, path)
    data = path.read_bytes()
    for cut in (b"garbage" * 10, data[: len(data) // 2]):
        path.write_bytes(cut)
        for load in _torch_loaders().values():
            _refused(lambda: load(path), path)


def test_every_torch_load_in_the_package_is_weights_only():
    src = Path(__file__).resolve().parents[1] / "src" / "counterfeit"
    calls = []
    for file in src.rglob("*.py"):
        for match in re.finditer(r"torch\.load\(([^()]*(?:\([^()]*\)[^()]*)*)\)", file.read_text()):
            calls.append((file.name, match.group(1)))
    assert calls, "expected at least one torch.load call (in counterfeit/torch_files.py)"
    for name, args in calls:
        assert "weights_only=True" in args, f"{name}: torch.load({args}) without weights_only=True"


def test_fuzzing_kept_memory_bounded():
    """Everything above ran in this process: its peak resident memory must not have grown much."""
    growth_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - _RSS_AT_IMPORT_MB
    assert growth_mb < 1024, f"peak RSS grew by {growth_mb:.0f} MB while fuzzing"
