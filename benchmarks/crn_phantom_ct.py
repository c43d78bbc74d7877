"""Benchmark: CRN label -> CT on the head phantom for a fixed wall-clock budget; MAE in HU inside the mask.

Run: python benchmarks/crn_phantom_ct.py [--minutes 5] [--k 1] [--vgg-weights vgg19-dcbb9e9d.pth]

Trains `counterfeit train crn --dataset phantom-ct` (tissue label maps -> CT slices, rendered in
memory) and evaluates on held-out subjects: every axial slice with enough head is synthesised
from its labels and compared with the phantom's CT in the labels' pose, per subject, with
`counterfeit.medical.evaluate.image_metrics` (SynthRAD2023 MAE / PSNR / SSIM inside the body
mask; PSNR also with the seed talk's 4095 peak). Reference: the tissue lookup baseline (each
label -> its mean HU over the training slices), the best any per-class constant can do.
Writes benchmarks/results/crn_phantom_ct.json and docs/images/crn_phantom_ct.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from counterfeit.atomic import atomic_write_text
from counterfeit.data.phantom_layouts import PHANTOM_PALETTE, phantom_layout_pairs
from counterfeit.device import seed_everything
from counterfeit.layout_synthesis import save_montage
from counterfeit.medical.evaluate import image_metrics
from counterfeit.medical.intensity import unit_to_ct
from counterfeit.train.loop import LoopConfig, train
from counterfeit.train.recipes.crn import CRNConfig, CRNRecipe

ROOT = Path(__file__).resolve().parent.parent
WINDOW = (-1024.0, 1600.0)  # display window of the montage (HU)
ERROR_RANGE = 300.0  # |error| shown from 0 (black) to this many HU (white)


def tissue_lookup(train_labels: np.ndarray, train_hu: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean HU of every tissue label over the training slices."""
    sums = np.bincount(train_labels.ravel(), weights=train_hu.ravel(), minlength=n_classes)
    counts = np.bincount(train_labels.ravel(), minlength=n_classes)
    return sums / np.maximum(counts, 1)


def per_subject_metrics(groups: list[str], ct: np.ndarray, sct: np.ndarray, masks: np.ndarray) -> list[dict]:
    rows = []
    for sid in sorted(set(groups)):
        pick = np.array([g == sid for g in groups])
        m = image_metrics(ct[pick], sct[pick], masks[pick])
        m["psnr_seed"] = image_metrics(ct[pick], sct[pick], masks[pick], psnr_peak="seed")["psnr"]
        rows.append({"subject": sid, "slices": int(pick.sum()), **{k: float(v) for k, v in m.items()}})
    return rows


def summary(rows: list[dict]) -> dict:
    keys = ("mae", "psnr", "psnr_seed", "ssim")
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "sd": float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0}
            for k in keys}


def hu_tile(hu: np.ndarray, scale: int) -> np.ndarray:
    lo, hi = WINDOW
    g = np.clip((hu - lo) / (hi - lo), 0.0, 1.0)
    return np.repeat(np.kron(g, np.ones((scale, scale)))[None], 3, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=64, help="slice height = width (base 4x4, so a power of two times 4)")
    parser.add_argument("--depth", type=int, default=32, help="axial slices per rendered subject")
    parser.add_argument("--train-subjects", type=int, default=6)
    parser.add_argument("--val-subjects", type=int, default=1, help="validation subject (metrics over time)")
    parser.add_argument("--test-subjects", type=int, default=2, help="held-out subjects for the final numbers")
    parser.add_argument("--k", type=int, default=1, help="outputs per layout (1: plain perceptual loss)")
    parser.add_argument("--widths", default="", help="feature widths per module (default: nets.crn.default_widths)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--vgg-weights", default=None, help="torchvision vgg19 state dict; default: random VGG features")
    parser.add_argument("--metrics-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_crn_phantom_ct")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    if args.out.exists():
        shutil.rmtree(args.out)
    seed_everything(args.seed)
    widths = tuple(int(w) for w in args.widths.split(",") if w) if args.widths else ()
    config = CRNConfig(dataset="phantom-ct", height=args.size, width=args.size, widths=widths, k=args.k, lr=args.lr,
                       vgg_weights=args.vgg_weights, phantom_subjects=args.train_subjects,
                       phantom_val_subjects=args.val_subjects, phantom_depth=args.depth, data_seed=args.seed)
    recipe = CRNRecipe(config, torch.device("cpu"))
    loop = LoopConfig(steps=10**9, minutes=args.minutes, seed=args.seed, log_every=10, metrics_every=args.metrics_every,
                      sample_every=0, checkpoint_every=0, progress=False, tensorboard=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(recipe, loop, args.out)
    random_vgg = any("RANDOM" in str(w.message) for w in caught)

    # Held-out subjects: indices after the training and validation subjects.
    first = args.train_subjects + args.val_subjects
    test = phantom_layout_pairs("ct", range(first, first + args.test_subjects), height=args.size, width=args.size,
                                depth=args.depth, seed=args.seed)
    t0 = time.perf_counter()
    outputs = recipe.generate(test.labels)  # (N, k, 1, H, W) in [-1, 1]
    infer_seconds = time.perf_counter() - t0
    ct = unit_to_ct(test.images[:, 0])
    sct = unit_to_ct(outputs[:, 0, 0])
    crn_rows = per_subject_metrics(test.groups, ct, sct, test.masks)
    best = None
    if args.k > 1:  # oracle: per slice the output closest to the truth (what the hindsight loss optimises)
        errs = np.abs(unit_to_ct(outputs[:, :, 0]) - ct[:, None]).mean(axis=(2, 3))
        best_sct = unit_to_ct(outputs[np.arange(len(outputs)), errs.argmin(1), 0])
        best = summary(per_subject_metrics(test.groups, ct, best_sct, test.masks))
    train_hu = unit_to_ct(recipe.train_pairs.images[:, 0])
    lookup = tissue_lookup(recipe.train_pairs.labels, train_hu, len(PHANTOM_PALETTE))
    base_rows = per_subject_metrics(test.groups, ct, lookup[test.labels], test.masks)

    # Console table in the seed talk's layout.
    print(f"CRN label -> CT on the phantom: {args.size}x{args.size} slices, k={args.k}, "
          f"{len(recipe.train_pairs)} training slices ({args.train_subjects} subjects), {len(test)} test slices "
          f"({args.test_subjects} subjects); VGG19 {'RANDOM features' if random_vgg else 'weights ' + str(args.vgg_weights)}")
    print(f"{'subject':>10} {'MAE CRN':>8} {'MAE lookup':>11} {'PSNR CRN':>9} {'PSNR lookup':>12} {'SSIM CRN':>9}")
    for r, b in zip(crn_rows, base_rows):
        print(f"{r['subject']:>10} {r['mae']:>8.1f} {b['mae']:>11.1f} {r['psnr']:>9.1f} {b['psnr']:>12.1f} {r['ssim']:>9.3f}")
    s_crn, s_base = summary(crn_rows), summary(base_rows)
    print(f"{'mean ± SD':>10} {s_crn['mae']['mean']:.1f} ± {s_crn['mae']['sd']:.1f}   {s_base['mae']['mean']:.1f} ± {s_base['mae']['sd']:.1f}"
          f"   {s_crn['psnr']['mean']:.1f} ± {s_crn['psnr']['sd']:.1f}   {s_base['psnr']['mean']:.1f} ± {s_base['psnr']['sd']:.1f}")
    if best is not None:
        print(f"best of k={args.k} (oracle): MAE {best['mae']['mean']:.1f} HU")
    print(f"{result.steps_done} steps in {result.seconds:.0f} s ({result.seconds / max(result.steps_done, 1):.2f} s/step), "
          f"{args.threads} thread(s), load average before {load_before:.1f}")

    # Montage: a few test slices spread over the head.
    picks = np.linspace(0, len(test) - 1, 4).round().astype(int)
    scale = max(1, 192 // args.size)
    rows = []
    for i in picks:
        colours = PHANTOM_PALETTE.colors[test.labels[i]].transpose(2, 0, 1) / 255.0
        err = np.clip(np.abs(sct[i] - ct[i]) / ERROR_RANGE, 0, 1) * test.masks[i]
        rows.append([np.kron(colours, np.ones((1, scale, scale))), hu_tile(ct[i], scale)]
                    + [hu_tile(unit_to_ct(o[0]), scale) for o in outputs[i]]
                    + [hu_tile(lookup[test.labels[i]], scale), np.repeat(np.kron(err, np.ones((scale, scale)))[None], 3, 0)])
    montage_path = ROOT / "docs" / "images" / "crn_phantom_ct.png"
    save_montage(rows, montage_path)

    with open(args.out / "metrics.csv") as fh:
        header = fh.readline().strip().split(",")
        over_time = [dict(zip(header, line.strip().split(","))) for line in fh]
    over_time = [{"step": int(float(r["step"])), "seconds": round(float(r["seconds"]), 1), "val_mae_hu": round(float(r["val_mae_hu"]), 1)}
                 for r in over_time if r.get("val_mae_hu")]
    out = {
        "benchmark": "crn_phantom_ct",
        "task": "phantom tissue labels -> CT slice; MAE/PSNR/SSIM in HU inside the body mask on held-out subjects",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
        "minutes": args.minutes,
        "vgg": "random features (no weights on this machine)" if random_vgg else str(args.vgg_weights),
        "train_slices": len(recipe.train_pairs),
        "test_slices": len(test),
        "steps": result.steps_done,
        "seconds": round(result.seconds, 1),
        "inference_seconds_per_slice": round(infer_seconds / max(len(test), 1), 4),
        "metrics_definition": "counterfeit.medical.evaluate.image_metrics (SynthRAD2023); psnr_seed = 20 log10(4095 / RMSE)",
        "crn": {"per_subject": crn_rows, "mean_sd": s_crn},
        "crn_best_of_k_oracle": best,
        "tissue_lookup_baseline": {"per_subject": base_rows, "mean_sd": s_base, "hu_per_tissue": dict(zip(PHANTOM_PALETTE.names, lookup.round(1).tolist()))},
        "val_mae_hu_over_time": over_time,
        "montage": "docs/images/crn_phantom_ct.png (rows: test slices; columns: labels, CT, CRN output(s), tissue lookup, |CRN error| 0-300 HU; window -1024..1600 HU)",
        "threads": args.threads,
        "load_average_before": round(load_before, 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    path = ROOT / "benchmarks" / "results" / "crn_phantom_ct.json"
    atomic_write_text(path, json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {path}, {montage_path}")


if __name__ == "__main__":
    main()
