"""Data-parallel training with 2 gloo processes under torchrun equals one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from counterfeit.train import checkpoint as ckpt

WORKER = Path(__file__).parent / "helpers" / "dist_regression.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run_dir: Path) -> dict:
    info = ckpt.latest_checkpoint(run_dir)
    return load_file(str(info.path / "net.safetensors"))


@pytest.mark.slow
def test_two_gloo_ranks_match_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    steps, batch = 20, 8
    subprocess.run([sys.executable, str(WORKER), str(tmp_path / "single"), str(steps), str(batch)],
                   check=True, env=env, timeout=120)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", "--master_addr=127.0.0.1",
                    str(WORKER), str(tmp_path / "ddp"), str(steps), str(batch)],
                   check=True, env=env, timeout=180)
    single, ddp = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    assert set(single) == set(ddp)
    for k in single:
        # Same mathematics, different summation order (two half-batch means averaged): float32 round-off only.
        diff = (single[k] - ddp[k]).abs().max().item()
        assert diff < 1e-5, (k, diff)
    # The run really trained (so agreement is not between two untouched copies).
    first = ckpt.list_checkpoints(tmp_path / "ddp")[0]
    assert first.step == 10 and (tmp_path / "ddp" / "metrics.csv").read_text().count("\n") > 3


def test_ddp_checkpoint_resumes_single_process(tmp_path):
    """The checkpoint format does not depend on the world size."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", "--master_addr=127.0.0.1",
                    str(WORKER), str(tmp_path / "run"), "10", "8"], check=True, env=env, timeout=180)
    sys.path.insert(0, str(WORKER.parent))
    try:
        import dist_regression  # noqa: F401  (registers the recipe)
        from counterfeit.train.loop import resume_run

        result = resume_run(tmp_path / "run", steps=15, device="cpu", progress=False)
    finally:
        sys.path.remove(str(WORKER.parent))
    assert result.steps_done == 15


def test_ddp_keep_best_saves_on_every_rank_together(tmp_path):
    """A new best is decided on rank 0 (which alone evaluates); every rank must join its save, or the barrier hangs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", "--master_addr=127.0.0.1",
                    str(WORKER), str(tmp_path / "run"), "12", "8", "100", "16", "keep-best"],
                   check=True, env=env, timeout=180)
    assert ckpt.read_best(tmp_path / "run") == {"step": 6, "metric": "val_mae_hu", "value": 1.0}
    # a checkpoint at each new low (2, 4, 6; 8 only ties) and at the end; keep_checkpoints=3 pruned step 2
    assert [c.step for c in ckpt.list_checkpoints(tmp_path / "run")] == [4, 6, 12]


def test_ddp_resume_restores_each_ranks_own_state(tmp_path):
    """Each rank's state that is not a weight (its image pool, here its last batch shard) and RNG go into the
    checkpoint: a torchrun run cut at step 10 and resumed under torchrun equals the uninterrupted one bitwise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(run: Path) -> None:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={_free_port()}", "--master_addr=127.0.0.1",
                        str(WORKER), str(run), "20", "8", "10", "16", "replay"], check=True, env=env, timeout=180)

    torchrun(tmp_path / "full")
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_00000020")
    torchrun(tmp_path / "cut")  # resumes from step 10
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(full[k].equal(cut[k]) for k in full), "resumed torchrun run differs from the uninterrupted one"
