"""benchmarks/run_all.py skips the analysis scripts that need trained runs; mr2ct_generalization.py scores splits."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_skips_exactly_the_scripts_that_analyse_trained_runs():
    run_all = _module("run_all")
    skipped = {p.stem for p in run_all.benchmark_scripts(None) if run_all.skip_reason(p)}
    assert skipped == {"mr2ct_tissue_errors", "mr2ct_generalization"}


def test_mr2ct_generalization_scores_every_split_against_both_ct_references(tmp_path, monkeypatch):
    from counterfeit.data.phantom import generate_dataset
    from counterfeit.train.loop import LoopConfig, train
    from counterfeit.train.recipes.paired import PairedConfig, PairedRecipe
    import torch

    root = generate_dataset(tmp_path / "phantom", 4, shape=(8, 32, 32), seed=1, workers=1)
    config = PairedConfig(phantom=str(root), image_size=32, ngf=4, n_blocks=1, ndf=4, d_crop=24, preview_subjects=1)
    train(PairedRecipe(config, torch.device("cpu")), LoopConfig(steps=2, progress=False, tensorboard=False),
          tmp_path / "paired")
    out = tmp_path / "gen.json"
    monkeypatch.setattr(sys, "argv", ["mr2ct_generalization.py", "--phantom", str(root), str(tmp_path / "paired"),
                                      "--json", str(out)])
    _module("mr2ct_generalization").main()
    rows = json.loads(out.read_text())["rows"]
    splits = {name: ids for name, ids in json.loads((root / "dataset.json").read_text())["splits"].items() if ids}
    assert [r["split"] for r in rows] == list(splits) and [r["subjects"] for r in rows] == [len(v) for v in splits.values()]
    for r in rows:  # an untrained model is far off; the misaligned reference differs from the aligned one
        assert r["mae_ct_aligned"] > 0 and r["mae_ct"] > 0 and r["mae_ct"] != r["mae_ct_aligned"]
