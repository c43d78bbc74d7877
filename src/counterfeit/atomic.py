"""Atomic file writes: a crash or a full disk never leaves a half-written output.

Write into a temporary file in the destination folder, flush and fsync it,
then rename it over the destination (rename is atomic on POSIX filesystems).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from counterfeit.errors import UserError


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; an output should get the mode any new file gets (0644 under the usual umask 022),
# so that colleagues on a shared server can read results
NEW_FILE_MODE = 0o666 & ~_umask()


class OutputError(UserError):
    """An output could not be written (unwritable folder, disk full, ...): one line for the user, no partial file."""


def ensure_folder(folder: str | os.PathLike) -> Path:
    """`folder`, created if need be; OutputError (one line) if it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{folder}: cannot create output folder ({err.strerror or err})") from None
    return folder


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; on success it is renamed to `dest`.

    The temporary name keeps the destination's suffixes (e.g. `.nii.gz`) so that
    writers which pick a format from the extension still work. On any error the
    temporary file is removed and `dest` is untouched.
    """
    dest = Path(dest)
    ensure_folder(dest.parent)
    suffix = suffix if suffix is not None else "".join(dest.suffixes)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + suffix, dir=dest.parent)
    except OSError as err:
        raise OutputError(f"{dest}: cannot write here ({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, NEW_FILE_MODE)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{dest}: write failed ({err.strerror or err})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
