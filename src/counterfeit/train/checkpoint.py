"""Checkpoints: safetensors weights + a weights-only state file, written atomically and verified.

Layout of one checkpoint (a folder under `<run>/checkpoints/`):

    step_00000500/
        <net>.safetensors     one per network (portable, no pickle)
        state.pt              optimisers, schedulers, recipe extras, RNG states, step
                              (read back with torch.load(weights_only=True))
        manifest.json         step + sha256 of every file; written last

A checkpoint is built in a temporary folder and renamed into place, so a crash
(even SIGKILL) leaves either the complete folder or none. On load the checksums are
verified; a damaged checkpoint is reported and the previous good one is used.

With the loop's `keep_best`, `checkpoints/best.json` names the checkpoint whose validation metric was lowest
({"step", "metric", "value"}); pruning never removes it, and `best_checkpoint` finds it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from counterfeit.atomic import OutputError, _fsync_dir, atomic_write_text
from counterfeit.errors import UserError
from counterfeit.torch_files import load_weights_only

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
BEST_FILE = "best.json"


class CheckpointError(UserError):
    """A checkpoint is missing, truncated or corrupted."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int


def rng_state() -> dict[str, Any]:
    """All RNG states that influence training, in types torch.load(weights_only=True) accepts."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # A tensor instead of an ndarray: weights_only loading accepts tensors, not numpy objects.
    return (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _contiguous_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; clone makes each tensor its own.
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, nets: dict[str, torch.nn.Module], state: dict[str, Any],
                    keep: int = 3, protect: int | None = None) -> Path:
    """Write checkpoint `step` atomically; keep the newest `keep` checkpoints and the one of step `protect`."""
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / f"step_{step:08d}"
    tmp = root / f".step_{step:08d}.tmp{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Leftovers of a writer killed mid-checkpoint are never valid checkpoints: clear them.
        for stale in root.glob(".step_*.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        files: dict[str, str] = {}
        for name, net in nets.items():
            path = tmp / f"{name}.safetensors"
            # one metadata entry: safetensors writes several in a per-process random order, so that the same
            # weights would give files with other bytes (and another sha256) in another process
            save_file(_contiguous_state(net), str(path), metadata={"checkpoint": f"{name} at step {step}"})
            files[path.name] = _sha256(path)
        buf = io.BytesIO()
        torch.save({"format": FORMAT_VERSION, "step": step, **state}, buf)
        (tmp / "state.pt").write_bytes(buf.getvalue())
        files["state.pt"] = _sha256(tmp / "state.pt")
        for path in tmp.iterdir():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        manifest = {"format": FORMAT_VERSION, "step": step, "files": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _fsync_dir(tmp)
        if final.exists():
            _remove_atomically(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except (OSError, SafetensorError) as err:  # safetensors reports a full disk in its own exception
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{final}: cannot write checkpoint ({getattr(err, 'strerror', None) or err})") from None
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if old.step != protect:
            _remove_atomically(old.path)
    return final


def read_best(run_dir: Path) -> dict[str, Any] | None:
    """The run's best-checkpoint record ({"step", "metric", "value"}), or None without a readable one."""
    path = Path(run_dir) / CHECKPOINT_DIR / BEST_FILE
    try:
        best = json.loads(path.read_text())
        return {"step": int(best["step"]), "metric": str(best["metric"]), "value": float(best["value"])}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        warnings.warn(f"{path}: unreadable; ignoring it", stacklevel=2)
        return None


def write_best(run_dir: Path, step: int, metric: str, value: float) -> None:
    """Record checkpoint `step` (already saved) as the run's best by `metric` = `value`."""
    record = {"step": step, "metric": metric, "value": value}
    atomic_write_text(Path(run_dir) / CHECKPOINT_DIR / BEST_FILE, json.dumps(record, indent=1) + "\n")


def remove_checkpoints(run_dir: Path) -> None:
    """Delete every checkpoint of `run_dir` and its best-checkpoint record (a fresh run replacing an old one)."""
    _remove_atomically(Path(run_dir) / CHECKPOINT_DIR)


def best_checkpoint(run_dir: Path) -> CheckpointInfo | None:
    """The checkpoint named by best.json if it verifies; None without a record (a damaged one is reported)."""
    best = read_best(run_dir)
    if best is None:
        return None
    path = Path(run_dir) / CHECKPOINT_DIR / f"step_{best['step']:08d}"
    try:
        verify_checkpoint(path)
    except CheckpointError as err:
        warnings.warn(f"{err}; the best checkpoint is unusable, using the newest", stacklevel=2)
        return None
    return CheckpointInfo(path, best["step"])


def _remove_atomically(folder: Path) -> None:
    """Take a checkpoint folder out of sight in one rename, then delete it.

    Deleting in place (rmtree) and being killed halfway would leave a visible `step_*` folder
    without its manifest; the hidden name matches the stale-leftover pattern cleared above.
    """
    trash = folder.with_name(f".{folder.name}.tmp{os.getpid()}.old")
    try:
        os.replace(folder, trash)
    except FileNotFoundError:  # already gone
        return
    shutil.rmtree(trash, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """Completed checkpoint folders (temporary ones excluded), oldest first. Not verified."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step_"):
            try:
                out.append(CheckpointInfo(p, int(p.name[5:])))
            except ValueError:
                continue
    return sorted(out, key=lambda c: c.step)


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Return the manifest if every file is present with the recorded checksum, else raise CheckpointError."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (no manifest.json)") from None
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: corrupted manifest.json") from None
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: missing file {name}")
        if _sha256(f) != digest:
            raise CheckpointError(f"{path}: checksum mismatch in {name} (truncated or corrupted)")
    return manifest


def latest_checkpoint(run_dir: Path) -> CheckpointInfo | None:
    """The newest checkpoint that verifies; damaged newer ones are reported and skipped."""
    checkpoints = list_checkpoints(run_dir)
    for i in range(len(checkpoints) - 1, -1, -1):
        try:
            verify_checkpoint(checkpoints[i].path)
        except CheckpointError as err:
            then = f"trying {checkpoints[i - 1].path.name}" if i else "no older checkpoint to use"
            warnings.warn(f"{err}; skipped it, {then}", stacklevel=2)
            continue
        return checkpoints[i]
    return None


def load_weights(net: torch.nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    """Load a safetensors file into `net` (strict: every key must match)."""
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as err:  # safetensors raises several types for bad files
        raise CheckpointError(f"{path}: cannot read weights ({err})") from None
    try:
        missing, unexpected = net.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # shapes that do not fit: a config.json changed after training
        first = str(err).split("size mismatch for ", 1)[-1].split("\n", 1)[0].strip()
        raise CheckpointError(f"{path}: weights do not fit the network its config.json describes ({first}); was the "
                              "config changed after training?") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the network (missing {missing[:3]}, unexpected {unexpected[:3]})")


def load_checkpoint(path: Path, nets: dict[str, torch.nn.Module], device: torch.device) -> dict[str, Any]:
    """Verify, load weights into `nets`, and return the state dict (optimisers, RNG, extras...)."""
    verify_checkpoint(path)
    for name, net in nets.items():
        load_weights(net, Path(path) / f"{name}.safetensors", device)
    return read_state_file(Path(path) / "state.pt", map_location=device)


def read_state_file(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a torch file safely: weights_only=True refuses arbitrary pickled objects."""
    try:
        return load_weights_only(path, map_location)
    except UserError as err:
        raise CheckpointError(str(err)) from None
