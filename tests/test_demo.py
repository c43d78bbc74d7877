"""`counterfeit demo` end to end on a tiny phantom: both models side by side, synthesis, evaluation, report."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from counterfeit.errors import UserError
from counterfeit.medical.demo import MODELS, DemoConfig, run_demo


def test_demo_end_to_end(tmp_path: Path) -> None:
    cfg = DemoConfig(out=tmp_path / "demo", minutes=0.6, subjects=4, shape=(8, 32, 32), seed=0, progress=False,
                     unpaired_candidates=2,
                     overrides={m: {"image_size": 32, "ngf": 4, "ndf": 8, "n_blocks": 1, "preview_subjects": 1}
                                for m in MODELS})
    result = run_demo(cfg)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    test_ids = summary["test_subjects"]
    assert test_ids
    for model in MODELS:
        train = summary["training"][model]
        assert train["steps"] >= 10, train  # the budget trained something in each run
        assert (tmp_path / "demo" / model / "metrics.csv").is_file()
        rows = summary["results"][model]
        assert [r["subject"] for r in rows] == test_ids
        for r in rows:
            assert 0 < r["mae"] < 2000 and math.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1
        for sid in test_ids:
            assert (tmp_path / "demo" / "synthetic" / model / f"{sid}.nii.gz").is_file()
    assert set(summary["results"]) == {*MODELS, "linear MR→HU", "all soft tissue"}
    # the two trainings ran side by side: their time windows overlap
    a, b = (summary["training"][m] for m in MODELS)
    assert abs(a["started"] - b["started"]) < min(a["seconds"], b["seconds"])
    assert summary["seconds_total"] < 0.6 * 60 + 30
    md = result.report_md.read_text()
    assert "mean ± SD" in md and all(m in md for m in MODELS)
    # every figure says what it shows, not only its file name
    assert "![The unpaired model (cyclegan) per test subject: MAE, PSNR and SSIM" in md
    assert "*Training curves of the paired model (paired), against step" in md
    assert result.report_html.is_file()
    # the unpaired model finished the better of two candidates; the paired one trained once
    tried = summary["training"]["unpaired"]["candidates"]
    assert [t["kept"] for t in tried].count(True) == 1 and summary["training"]["paired"]["candidates"] == []
    assert "started 2 candidates" in md
    # each model synthesised with its checkpoint of lowest validation MAE, which outlived pruning
    for model in MODELS:
        best = summary["training"][model]["best"]
        logged = _validation_rows(tmp_path / "demo" / model / "metrics.csv", best["metric"])
        assert best["value"] == pytest.approx(min(v for _, v in logged), rel=1e-4)
        assert (tmp_path / "demo" / model / "checkpoints" / f"step_{best['step']:08d}").is_dir()
        assert f"{model}: step {best['step']} of" in md
    # the error split by the phantom's tissues adds up to each model's pooled MAE; the report shows it
    for name, tissues in summary["errors_by_tissue"].items():
        assert "white matter" in [t["name"] for t in tissues], name
        assert sum(t["fraction"] for t in tissues) == pytest.approx(1.0)
        assert 0 < sum(t["contribution"] for t in tissues) < 2000
    assert "MAE by tissue" in md and "| white matter |" in md


def _validation_rows(csv_path: Path, key: str) -> list[tuple[int, float]]:
    import csv

    with open(csv_path) as fh:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(fh) if r.get(key)]


def test_demo_rejects_a_budget_too_small(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="leaves no time to train"):
        run_demo(DemoConfig(out=tmp_path / "demo", minutes=0.05, subjects=4, shape=(8, 32, 32), progress=False))


def test_demo_phantom_is_regenerated_when_the_options_change_and_a_given_one_is_never_written(tmp_path: Path) -> None:
    from counterfeit.data.phantom import load_dataset
    from counterfeit.medical.demo import demo_phantom

    cfg = DemoConfig(out=tmp_path / "demo", subjects=4, shape=(8, 32, 32), progress=False)
    root = demo_phantom(cfg)
    assert root == tmp_path / "demo" / "phantom" and len(load_dataset(root)["subjects"]) == 4
    stamp = (root / "dataset.json").stat().st_mtime_ns
    assert demo_phantom(cfg) == root and (root / "dataset.json").stat().st_mtime_ns == stamp  # reused as it is
    fewer = DemoConfig(out=tmp_path / "demo", subjects=3, shape=(8, 32, 32), progress=False)
    assert len(load_dataset(demo_phantom(fewer))["subjects"]) == 3
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["sub-000", "sub-001", "sub-002"]  # none stale
    (root / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not only a phantom"):
        demo_phantom(cfg)
    empty = tmp_path / "mine"
    empty.mkdir()
    with pytest.raises(UserError, match="dataset.json"):  # --phantom DIR is read, never generated into
        demo_phantom(DemoConfig(out=tmp_path / "demo2", phantom=empty, progress=False))
    assert list(empty.iterdir()) == []


def test_demo_refuses_a_budget_too_small_before_generating_anything(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--minutes 1 leaves no time to train.*give at least"):
        run_demo(DemoConfig(out=tmp_path / "demo", minutes=1, progress=False))  # the default 24 heads
    assert not (tmp_path / "demo").exists()


def test_demo_stops_on_sigterm_even_when_it_is_sent_twice(tmp_path: Path) -> None:
    """`docker stop` or `timeout` and an impatient second signal: the demo passes the first on to its two training
    workers, ignores the second, and exits with 143 once both have checkpointed (it used to hang for good)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    from counterfeit.data.phantom import generate_dataset

    phantom = generate_dataset(tmp_path / "ph", 4, shape=(8, 32, 32), seed=1, workers=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "counterfeit", "demo", "--out", str(tmp_path / "demo"), "--phantom",
                             str(phantom), "--minutes", "3", "--candidates", "1", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the finally below reaps the workers too
    try:
        deadline = time.monotonic() + 90
        while not all((tmp_path / "demo" / m / "metrics.csv").is_file() for m in MODELS):  # both are training
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, output
    assert all((tmp_path / "demo" / m / "checkpoints").is_dir() for m in MODELS)
