"""benchmarks/train_speed.py times the recipes on noise batches: they must have the shapes the recipes expect."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def train_speed():
    spec = importlib.util.spec_from_file_location("train_speed", BENCHMARKS / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", ["cyclegan", "paired"])
@pytest.mark.parametrize("preset", ["fast", "wolterink2017"])
def test_bench_steps_runs_the_recipes_default_and_paper_configurations(train_speed, recipe, preset):
    row = train_speed.bench_steps(recipe, preset, 32, steps=1, peak=1.0)
    assert row["image_size"] == 32 and row["seconds_per_step"] > 0
    assert row["gflop_per_step"] > 0 and row["fraction_of_matmul_peak"] > 0


def test_bench_layers_times_every_convolution_of_the_default_networks(train_speed):
    import torch

    rows = train_speed.bench_layers(repeats=1)
    recipe = train_speed.build_recipe("cyclegan", "fast", None)
    counts = {net: sum(isinstance(m, torch.nn.Conv2d) for m in recipe.nets[name].modules())
              for net, name in (("G", "Syn_CT"), ("D", "Dis_CT"))}
    assert [r["net"] for r in rows] == ["G"] * counts["G"] + ["D"] * counts["D"]
    assert all(r["ms"] > 0 and r["gflops"] > 0 for r in rows)
    thin = [r for r in rows if r["kind"] == "ThinOutputConv2d"]
    assert [(r["net"], r["layer"].split()[0]) for r in thin] == [("G", "16->1"), ("D", "256->1")]
    assert all(r["ms_as_nn_conv2d"] > 0 and r["gflops_as_nn_conv2d"] > 0 for r in thin)
