"""Benchmark: MR -> CT quality per CPU-minute. Which CycleGAN settings learn most in the demo's budget?

Run: python benchmarks/mr2ct_ablation.py [--minutes 4] [--seeds 0 1] [--variants default crop64 ...] [--jobs 2]
With the defaults (15 variants, 2 seeds, 4 minutes each, paper_2x 8) it takes about 75 minutes on 2 cores;
--quick trains only "default" and "paper" for 1 minute (about 3 minutes).

Every variant trains the unpaired CycleGAN on the same phantom training subjects (the demo's
phantom: 24 heads of 48 x 128 x 128, seed 0, 15 train / 3 val / 6 test) for the same wall-clock
budget, with the learning rate decaying linearly over the second half of the budget as in
`counterfeit demo` (`train_for_budget`). It then synthesises the 6 held-out test subjects from
their MR and scores them against the CT aligned to the MR, inside the body mask, with the
SynthRAD2023 definitions (MAE in HU, PSNR, SSIM). A variant changes one option of the current
`counterfeit train cyclegan` defaults ("default"); "paper" is the `wolterink2017` preset at the
phantom's 128 x 128 slices, "paper_2x" the same with twice the budget. The follow-up variants
"paired" and "paired_no_depth" train the paired baseline (`counterfeit train paired`) instead.

Runs go `--jobs` at a time, each in its own process on one torch thread (2 jobs on a 2-core
machine: the cores are not shared between runs). Each process measures the fp32 matmul peak of
its thread before training, so achieved GFLOP/s = 2 x convolution MACs per step (the FLOP
accounting of benchmarks/train_speed.py) x steps / training seconds is set against a peak
measured under the same conditions. Loop overheads (logging, checkpoints, the periodic
validation) are inside the training seconds, so this is the training run's rate, not a kernel's.

Prints one row per run and a table of mean ± spread (min-max over seeds) per variant, and
writes benchmarks/results/mr2ct_ablation.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_speed's FLOP accounting

# name -> (preset, option overrides, budget multiplier); "default" is the train command's defaults.
VARIANTS: dict[str, tuple[str, dict[str, Any], float]] = {
    "default": ("fast", {}, 1.0),
    "crop64": ("fast", {"image_size": 64}, 1.0),
    "crop96": ("fast", {"image_size": 96}, 1.0),  # the default size until round 44
    "crop128": ("fast", {"image_size": 128}, 1.0),  # the default since round 44 (kept: rounds 43-44 ran it by name)
    "ngf32": ("fast", {"ngf": 32}, 1.0),
    "ngf64": ("fast", {"ngf": 64}, 1.0),
    "blocks9": ("fast", {"n_blocks": 9}, 1.0),
    "identity": ("fast", {"lambda_identity": 0.5}, 1.0),
    "context3": ("fast", {"context": 3}, 1.0),
    "d_layers2": ("fast", {"d_layers": 2}, 1.0),
    "lr_constant": ("fast", {"decay": False}, 1.0),
    "no_structure": ("fast", {"lambda_structure": 0.0}, 1.0),
    "cycle10": ("fast", {"lambda_cycle": 10.0}, 1.0),
    "paper": ("wolterink2017", {"image_size": 128}, 1.0),
    "paper_2x": ("wolterink2017", {"image_size": 128}, 2.0),
}
# Follow-up runs (docs/mr2ct_ablation.md, section 1, rounds 9-17): selectable with --variants, not in the default table.
FOLLOW_UP: dict[str, tuple[str, dict[str, Any], float]] = {
    "lr5e-4": ("fast", {"lr": 5e-4}, 1.0),
    "pool0": ("fast", {"pool_size": 0}, 1.0),
    "cycle0": ("fast", {"lambda_cycle": 0.0}, 1.0),
    "structure3": ("fast", {"lambda_structure": 3.0}, 1.0),
    # the phantom's CT stays below 1700 HU: a narrower window gives the networks 1.3x finer steps per HU
    "window2000": ("fast", {"hu_window": (-1024.0, 2000.0)}, 1.0),
    # synthesis with a moving average of Syn_CT's weights (half-life ~140 steps; round 13, and round 42 with the
    # defaults of round 41, whose validation MAE swings by 10-30 HU between evaluations)
    "ema995": ("fast", {"ema_decay": 0.995}, 1.0),
    # a 142x142 PatchGAN: each verdict sees the whole 96x96 crop (the layer order scalp / fat / bone)
    "d_layers4": ("fast", {"d_layers": 4}, 1.0),
    # each output's intensity distribution inside the body pulled towards a real image's of its modality
    # (rounds 15-16, without the depth channel; the defaults now use its banded version, rounds 28-29)
    "histogram1": ("fast", {"lambda_histogram": 1.0, "depth_channel": False}, 1.0),
    "histogram5": ("fast", {"lambda_histogram": 5.0, "depth_channel": False}, 1.0),
    # 2 or 3 seeds train the first quarter of the plan each; the lowest validation MAE (2 val subjects) goes on
    "candidates2": ("fast", {"candidates": 2}, 1.0),
    "candidates3": ("fast", {"candidates": 3}, 1.0),
    "candidates2_structure3": ("fast", {"candidates": 2, "lambda_structure": 3.0}, 1.0),
    # rounds 23-24: CT on an asinh scale (soft tissue 5.6x wider in [-1, 1], bone 2.4x narrower);
    # the CycleGAN's default since round 34, so "linear" gives the defaults before
    "asinh": ("fast", {"ct_scale": "asinh"}, 1.0),
    "linear": ("fast", {"ct_scale": "linear"}, 1.0),
    # rounds 27-29 (the defaults since round 29: depth channel on, banded histogram loss weight 5):
    # the defaults before, the depth channel alone, and the two histogram weights tried
    "no_depth": ("fast", {"depth_channel": False, "lambda_histogram": 0.0}, 1.0),
    "depth": ("fast", {"depth_channel": True, "lambda_histogram": 0.0}, 1.0),
    "depth_histogram1": ("fast", {"depth_channel": True, "lambda_histogram": 1.0}, 1.0),
    "depth_histogram5": ("fast", {"depth_channel": True, "lambda_histogram": 5.0}, 1.0),
    # round 31: around the new defaults, against the brain's offset (grey matter and CSF too bright)
    "histogram10": ("fast", {"lambda_histogram": 10.0}, 1.0),
    "cycle1": ("fast", {"lambda_cycle": 1.0}, 1.0),
    # round 32: the paired baseline (recipe "paired", its own fast preset) with and without the depth channel
    "paired": ("fast", {"recipe": "paired"}, 1.0),
    "paired_no_depth": ("fast", {"recipe": "paired", "depth_channel": False}, 1.0),
    # round 33: discriminators whose norms keep a region's mean (instance norm removes it per crop)
    "d_norm_none": ("fast", {"d_norm": "none"}, 1.0),
    "d_norm_layer": ("fast", {"d_norm": "layer"}, 1.0),
    # round 35: around the asinh scale
    "asinh_d_norm_none": ("fast", {"ct_scale": "asinh", "d_norm": "none"}, 1.0),
    "asinh_no_structure": ("fast", {"ct_scale": "asinh", "lambda_structure": 0.0}, 1.0),
    "paired_asinh": ("fast", {"recipe": "paired", "ct_scale": "asinh"}, 1.0),
    # round 37: the banded histogram's weight on the asinh scale (its distances in [-1, 1] units grew for soft tissue)
    "histogram2": ("fast", {"lambda_histogram": 2.0}, 1.0),
    # round 39: a faster learning rate, and discriminators that see the whole 96x96 crop (the skull's layers)
    "lr4e-4": ("fast", {"lr": 4e-4}, 1.0),
    "d_crop96": ("fast", {"d_crop": 96}, 1.0),
    # round 40: up-sampling without the 3x3 stride-2 transposed convolution's checkerboard (the skull's dotted band)
    "transpose4": ("fast", {"upsample": "transpose4"}, 1.0),
    "resize_up": ("fast", {"upsample": "resize"}, 1.0),
    # round 41: resize-conv with the round-39 changes, and the paired baseline with it
    "resize_up_lr4e-4": ("fast", {"upsample": "resize", "lr": 4e-4}, 1.0),
    "resize_up_d_crop96": ("fast", {"upsample": "resize", "d_crop": 96}, 1.0),
    "paired_resize_up": ("fast", {"recipe": "paired", "upsample": "resize"}, 1.0),
    # round 44: the paired baseline on whole 128x128 phantom slices (round 43: the CycleGAN gained from them)
    "paired_crop128": ("fast", {"recipe": "paired", "image_size": 128}, 1.0),
    # round 45: against the cortical bone's remaining under-brightness (-520 HU in the demo of round 44)
    "cycle5": ("fast", {"lambda_cycle": 5.0}, 1.0),
    # round 47: two slices per step; bigger tensors run the convolutions nearer the matmul rate (issue #7's GFLOP/s)
    "batch2": ("fast", {"batch_size": 2}, 1.0),
    # round 48: a wider linear part of the asinh CT scale (default 100 HU) gives cortical bone more of [-1, 1]
    # (the demo's bone is ~470 HU too dark)
    "asinh_width200": ("fast", {"asinh_width": 200.0}, 1.0),
    "asinh_width400": ("fast", {"asinh_width": 400.0}, 1.0),
}
ALL_VARIANTS = {**VARIANTS, **FOLLOW_UP}
PHANTOM = {"subjects": 24, "shape": (48, 128, 128), "seed": 0, "splits": (0.625, 0.125, 0.25)}


def ensure_phantom(root: Path) -> Path:
    from counterfeit.data.phantom import generate_dataset

    if not (root / "dataset.json").is_file():
        print(f"generating the demo phantom into {root}", flush=True)
        generate_dataset(root, PHANTOM["subjects"], shape=PHANTOM["shape"], seed=PHANTOM["seed"],
                         splits=PHANTOM["splits"], progress=False)
    return root


def run_variant(name: str, seed: int, minutes: float, root: str, out: str) -> dict[str, Any]:
    """One training run + evaluation, in its own process on one thread."""
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # volume reading stays on this run's core too
    from train_speed import matmul_gflops, step_flops

    from counterfeit.data.phantom import load_dataset
    from counterfeit.medical.demo import score_on_subjects
    from counterfeit.medical.evaluate import summarize
    from counterfeit.medical.synthesize import load_mr2ct_run
    from counterfeit.train.budget import train_for_budget
    from counterfeit.train.recipes import cyclegan, paired
    from counterfeit.train.recipes.mr2ct_common import apply_preset

    preset, overrides, budget = ALL_VARIANTS[name]
    overrides = dict(overrides)
    decay = overrides.pop("decay", True)
    candidates = overrides.pop("candidates", 1)
    recipe_name = overrides.pop("recipe", "cyclegan")
    recipe_cls, presets = {"cyclegan": (cyclegan.CycleGANRecipe, cyclegan.PRESETS),
                           "paired": (paired.PairedRecipe, paired.PRESETS)}[recipe_name]
    peak = matmul_gflops()
    config = apply_preset(recipe_cls.Config, presets, preset, phantom=root, **overrides)
    options = dict(vars(config))
    seconds = 60.0 * minutes * budget
    run_dir = Path(out) / f"{name}_seed{seed}"
    t0 = time.perf_counter()
    trained = train_for_budget(recipe_name, options, seconds, run_dir, seed=seed, device="cpu", progress=False,
                               decay_from=0.5 if decay else 1.0, candidates=candidates, overwrite=True)
    wall = time.perf_counter() - t0
    test_ids = load_dataset(root)["splits"]["test"]
    rows, _ = score_on_subjects(load_mr2ct_run(run_dir, "cpu"), Path(root), test_ids)
    stats = summarize(rows)
    means = {k: stats[k]["mean"] for k in ("mae", "psnr", "ssim")}
    recipe = recipe_cls(recipe_cls.Config(**{**trained["config"], "phantom": None, "preview_subjects": 0}),
                        torch.device("cpu"))
    flop_per_step = step_flops(recipe)
    # with candidates, the discarded probes' steps are work done too
    achieved = flop_per_step * trained["steps_all_candidates"] / trained["seconds"] / 1e9
    return {
        "variant": name, "seed": seed, "preset": preset, "overrides": ALL_VARIANTS[name][1],
        "minutes": seconds / 60, "steps": trained["steps"], "s_per_step": trained["s_per_step"],
        "mae": means["mae"], "psnr": means["psnr"], "ssim": means["ssim"], "per_subject": rows,
        "gflop_per_step": flop_per_step / 1e9, "achieved_gflops": achieved, "matmul_peak_gflops": peak,
        "fraction_of_peak": achieved / peak, "data_wait_fraction": trained["data_wait_fraction"],
        "wall_seconds_with_setup": wall, "kept_seed": trained["seed"], "candidates": trained["candidates"],
        "config": trained["config"],
    }


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else f"{mean:.1f}"


def main() -> None:
    from counterfeit.atomic import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="training budget per run (the demo gives each model ~4)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(ALL_VARIANTS))
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "mr2ct_ablation", help="phantom and run folders")
    ap.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/mr2ct_ablation[_quick].json")
    ap.add_argument("--quick", action="store_true", help="smoke test: default and paper, 1 minute, seed 0")
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.seeds, args.variants = 1.0, [0], ["default", "paper"]
    if args.json is None:  # a quick run never overwrites the full results
        args.json = ROOT / "benchmarks" / "results" / f"mr2ct_ablation{'_quick' if args.quick else ''}.json"

    root = ensure_phantom(args.work / "phantom")
    jobs = [(v, s) for s in args.seeds for v in args.variants]
    # Longest runs first, so the last minutes are not one lonely long run.
    jobs.sort(key=lambda j: -ALL_VARIANTS[j[0]][2])
    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    print(f"{len(jobs)} runs of {args.minutes:g} min (x budget multiplier), {args.jobs} at a time", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_variant, v, s, args.minutes, str(root), str(args.work)): (v, s) for v, s in jobs}
        for future in futures:
            r = future.result()
            results.append(r)
            print(f"{r['variant']:>12} seed {r['seed']}: MAE {r['mae']:6.1f} HU  PSNR {r['psnr']:5.2f}  "
                  f"SSIM {r['ssim']:.3f}  {r['steps']:5d} steps  {r['s_per_step']:.3f} s/step  "
                  f"{r['achieved_gflops']:5.1f} GFLOP/s = {100 * r['fraction_of_peak']:.0f} % of peak", flush=True)

    table = ["| variant | change | min | MAE (HU) | PSNR (dB) | SSIM | steps | s/step | % of matmul peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for name in args.variants:
        rs = [r for r in results if r["variant"] == name]
        col = {k: [r[k] for r in rs] for k in ("mae", "psnr", "ssim", "steps", "s_per_step", "fraction_of_peak")}
        summary[name] = {k: {"mean": statistics.fmean(v), "min": min(v), "max": max(v)} for k, v in col.items()}
        change = ", ".join(f"{k}={v}" for k, v in ALL_VARIANTS[name][1].items()) or "-"
        table.append(f"| {name} | {ALL_VARIANTS[name][0]}: {change} | {rs[0]['minutes']:g} | {spread(col['mae'])} | "
                     f"{spread(col['psnr'])} | {statistics.fmean(col['ssim']):.3f} | {statistics.fmean(col['steps']):.0f} | "
                     f"{statistics.fmean(col['s_per_step']):.3f} | {100 * statistics.fmean(col['fraction_of_peak']):.0f} |")
    print("\n".join(table))
    payload = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg()},
        "minutes_per_run": args.minutes, "seeds": args.seeds, "jobs": args.jobs,
        "wall_minutes": (time.perf_counter() - t0) / 60, "phantom": PHANTOM,
        "summary": summary, "table_markdown": "\n".join(table), "runs": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
