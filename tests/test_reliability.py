"""Run directories survive SIGKILL (even during a checkpoint write) and bad output folders fail cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from counterfeit.atomic import OutputError, atomic_write_text
from counterfeit.train import checkpoint as ckpt

WORKER = Path(__file__).parent / "helpers" / "dist_regression.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(run_dir: Path, steps: int, every: int, hidden: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(run_dir), str(steps), "8", str(every), str(hidden)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(tmp_path):
    # A wide hidden layer makes each checkpoint write take long enough that some kills land inside it.
    steps, every, hidden = 60, 3, 1500
    ref = _run(tmp_path / "ref", steps, every, hidden)
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()

    run_dir = tmp_path / "killed"
    rng = np.random.default_rng(7)
    kills = 0
    for _ in range(6):
        proc = _run(run_dir, steps, every, hidden)
        time.sleep(float(rng.uniform(1.0, 3.5)))  # includes interpreter start-up
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        # Whatever moment the kill hit, every visible checkpoint verifies.
        for info in ckpt.list_checkpoints(run_dir):
            ckpt.verify_checkpoint(info.path)
    assert kills >= 2
    final = _run(run_dir, steps, every, hidden)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()
    a = load_file(str(ckpt.latest_checkpoint(tmp_path / "ref").path / "net.safetensors"))
    b = load_file(str(ckpt.latest_checkpoint(run_dir).path / "net.safetensors"))
    assert all((a[k] == b[k]).all() for k in a), "resumed-after-kills run differs from the uninterrupted one"
    assert not list((run_dir / "checkpoints").glob(".step_*")), "temporary checkpoint folders were left behind"


def test_sigterm_saves_a_checkpoint_to_resume_from(tmp_path):
    """Job schedulers stop jobs with SIGTERM: the run saves the step it reached, as on Ctrl-C."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(run_dir), "10000000", "8", "10000000"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run_dir / "metrics.csv").exists() and time.time() < deadline:  # training has started
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # (two signals sent at once may arrive as one)
    proc.send_signal(signal.SIGTERM)  # process managers repeat it: only a second Ctrl-C aborts without a checkpoint
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped: terminated" in out, err
    saved = ckpt.latest_checkpoint(run_dir)
    assert saved is not None and 0 < saved.step < 10000000


def test_cli_exit_code_says_a_run_was_stopped_by_a_signal(tmp_path):
    from counterfeit.cli.options import exit_if_signalled
    from counterfeit.train.loop import RunStopped, TrainResult

    exit_if_signalled(TrainResult(tmp_path, 5, 1.0, stopped_early="budget"))  # a budget is a normal end
    for reason, code in (("interrupt", 130), ("terminated", 143)):
        with pytest.raises(RunStopped, match="stopped by a signal") as stopped:
            exit_if_signalled(TrainResult(tmp_path, 5, 1.0, stopped_early=reason))
        assert stopped.value.exit_code == code


def test_main_exits_with_a_stopped_runs_code(monkeypatch, capsys):
    import warnings

    import counterfeit.cli as cli
    from counterfeit.train.loop import RunStopped

    def stopped() -> None:
        raise RunStopped("runs/x: stopped by a signal (terminated) at step 5", 143)

    monkeypatch.setattr(cli, "app", stopped)
    handler, formatter = signal.getsignal(signal.SIGTERM), warnings.formatwarning
    try:
        with pytest.raises(SystemExit) as ended:
            cli.main()
    finally:  # main() installs both for the process: give the test process its own back
        signal.signal(signal.SIGTERM, handler)
        warnings.formatwarning = formatter
    assert ended.value.code == 143
    assert capsys.readouterr().err == "error: runs/x: stopped by a signal (terminated) at step 5\n"


def test_unwritable_output_folder_is_a_clear_error_without_partial_files(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions do not bind, use a path under a file instead
            target = tmp_path / "a_file"
            target.write_text("x")
            dest = target / "out.txt"
        else:
            dest = locked / "out.txt"
        with pytest.raises(OutputError, match="out.txt|cannot"):
            atomic_write_text(dest, "hello")
        assert not dest.exists()
    finally:
        locked.chmod(0o700)


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    dest = tmp_path / "report.txt"
    atomic_write_text(dest, "old")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        atomic_write_text(dest, "new")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


def test_outputs_get_the_mode_of_any_new_file_not_mkstemps_0600(tmp_path):
    from counterfeit.atomic import atomic_path
    from counterfeit.data.volumes import Volume, write_volume

    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what the umask gives any new file here
        atomic_write_text(tmp_path / "config.json", "{}")
        write_volume(Volume(np.zeros((2, 3, 4), np.float32)), tmp_path / "sct.nii.gz")  # SimpleITK writes the temp
        with atomic_path(tmp_path / "w.bin") as tmp:
            tmp.write_bytes(b"1")
    finally:
        os.umask(old)
    expected = plain.stat().st_mode & 0o777
    assert expected == 0o644
    for name in ("config.json", "sct.nii.gz", "w.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name


def test_cli_prints_user_warnings_as_one_line():
    from counterfeit.cli import _format_warning

    assert _format_warning(UserWarning("--holdout 100 capped"), UserWarning, "x.py", 3) == "warning: --holdout 100 capped\n"
    assert "x.py:3" in _format_warning(DeprecationWarning("old"), DeprecationWarning, "x.py", 3)  # not for users


def test_sigterm_outside_training_exits_143_in_one_line(tmp_path):
    """SIGTERM while the CLI reads or writes data (here: rendering a phantom) ends it cleanly with the shell's code."""
    proc = subprocess.Popen([sys.executable, "-m", "counterfeit", "phantom", "--out", str(tmp_path / "ph"),
                             "--subjects", "200", "--workers", "1"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob("ph/sub-*")) and time.time() < deadline:  # it has started writing
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "error: terminated (SIGTERM)" in err and "Traceback" not in err, err
