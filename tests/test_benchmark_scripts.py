"""benchmarks/run_all.py skips the analysis scripts that need trained runs; mr2ct_generalization.py scores splits;
mr2ct_selection.py scores every checkpoint and applies its selection rules."""

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
    assert skipped == {"mr2ct_tissue_errors", "mr2ct_generalization", "mr2ct_selection"}


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


def test_mr2ct_selection_rules_pick_from_the_right_scores():
    choose = _module("mr2ct_selection").choose
    # in-loop (2 heads): step 30 lowest; all val heads: step 20; averaged with neighbours: step 10 (its neighbour is
    # good too, step 20's are not); test: step 10. Step 40 is the newest and was never validated in the loop.
    rows = [
        {"step": 10, "loop_val_mae": 150.0, "val_mae": [112, 112, 112], "test_mae": [100, 100]},
        {"step": 20, "loop_val_mae": 140.0, "val_mae": [110, 110, 110], "test_mae": [130, 130]},
        {"step": 30, "loop_val_mae": 100.0, "val_mae": [125, 125, 125], "test_mae": [125, 125]},
        {"step": 40, "loop_val_mae": None, "val_mae": [130, 130, 130], "test_mae": [140, 140]},
    ]
    picks = choose(rows)
    assert {rule: p["step"] for rule, p in picks.items()} == {
        "last": 40, "loop": 30, "all_val": 20, "all_val_smoothed": 10, "oracle": 10}
    assert picks["loop"]["test_mae"] == 125.0


def test_mr2ct_selection_scores_every_checkpoint_on_val_and_test_heads(tmp_path):
    from counterfeit.data.phantom import generate_dataset
    from counterfeit.train.loop import LoopConfig, train
    from counterfeit.train.recipes.paired import PairedConfig, PairedRecipe
    import torch

    root = generate_dataset(tmp_path / "phantom", 8, shape=(8, 32, 32), seed=1, workers=1)
    splits = json.loads((root / "dataset.json").read_text())["splits"]
    config = PairedConfig(phantom=str(root), image_size=32, ngf=4, n_blocks=1, ndf=4, d_crop=24, preview_subjects=1)
    loop = LoopConfig(steps=4, metrics_every=2, checkpoint_every=2, log_every=1, progress=False, tensorboard=False)
    train(PairedRecipe(config, torch.device("cpu")), loop, tmp_path / "paired")
    rows = _module("mr2ct_selection").score_checkpoints(str(tmp_path / "paired"), str(root))
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["loop_val_mae"] is not None and r["loop_val_mae"] > 0 for r in rows)
    assert all(len(r["val_mae"]) == len(splits["val"]) and len(r["test_mae"]) == len(splits["test"]) for r in rows)
    assert rows[0]["test_mae"] != rows[1]["test_mae"]  # each checkpoint's own weights were loaded
