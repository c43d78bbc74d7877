"""Benchmark: DCGAN on phantom MR slices for a fixed wall-clock budget; SWD against held-out slices over time.

Run: python benchmarks/dcgan_phantom.py [--minutes 5] [--threads 1] [--fid-weights pt_inception.pth]
Prints a table of SWD (x1e3, Progressive GAN's Laplacian-pyramid patches) against time, with two
references: the untrained generator (step 0) and real vs real (held-out slices vs as many random
training slices: what a generator sampling the data distribution would score, up to estimation noise). Writes benchmarks/results/dcgan_phantom.json
and copies the final sample grid and interpolation strip to docs/images/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from counterfeit.atomic import atomic_write_text
from counterfeit.device import seed_everything
from counterfeit.evaluation.memorization import memorization_check
from counterfeit.evaluation.swd import SWDSettings, sliced_wasserstein_distance
from counterfeit.train.loop import LoopConfig, train
from counterfeit.train.recipes.dcgan import DCGANConfig, DCGANRecipe

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=32, help="ngf = ndf (the paper uses 64; 32 trains 3x faster on CPU)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--loss", default="nonsaturating")
    parser.add_argument("--subjects", type=int, default=16, help="phantom subjects rendered (about 26 slices each)")
    parser.add_argument("--metrics-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fid-weights", default=None, help="local Inception weights: adds FID/KID")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_dcgan_phantom")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    if args.out.exists():
        shutil.rmtree(args.out)
    seed_everything(args.seed)
    config = DCGANConfig(dataset="phantom-mr", image_size=args.image_size, ngf=args.width, ndf=args.width,
                         batch_size=args.batch_size, loss=args.loss, phantom_subjects=args.subjects,
                         fid_weights=args.fid_weights)
    recipe = DCGANRecipe(config, torch.device("cpu"))
    t0 = time.perf_counter()
    recipe.setup_data()
    data_seconds = time.perf_counter() - t0
    n_hold = len(recipe.holdout_images)
    # Real vs real: held-out slices against random training subsets of the same size (mean of 4 draws).
    rng = np.random.default_rng(args.seed)
    floor = float(np.mean([
        sliced_wasserstein_distance(recipe.holdout_images,
                                    recipe.train_images[rng.choice(len(recipe.train_images), n_hold, replace=False)],
                                    SWDSettings.cheap())["swd"]
        for _ in range(4)
    ]))
    initial = recipe.metrics(0)

    loop = LoopConfig(steps=10**9, minutes=args.minutes, seed=args.seed, log_every=20,
                      metrics_every=args.metrics_every, sample_every=max(args.metrics_every * 5, 500),
                      checkpoint_every=0, progress=False, tensorboard=False)
    result = train(recipe, loop, args.out)

    with open(args.out / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("swd")]
    table = [{"step": 0, "seconds": 0.0, "swd": initial["swd"], "nn_ratio": initial.get("nn_ratio")}]
    table += [{"step": int(float(r["step"])), "seconds": float(r["seconds"]), "swd": float(r["swd"]),
               "nn_ratio": float(r["nn_ratio"]) if r.get("nn_ratio") else None} for r in rows]

    fake = recipe.generate(recipe.latents(512, seed=99)).numpy()
    memo = memorization_check(fake, recipe.train_images, reference=recipe.holdout_images).summary

    print(f"DCGAN on phantom MR slices: {args.image_size}px, width {args.width}, batch {args.batch_size}, "
          f"{args.loss}, {len(recipe.train_images)} training / {n_hold} held-out slices, {args.threads} thread(s)")
    print(f"{'step':>7} {'seconds':>8} {'SWDx1e3':>9} {'NN ratio':>9}")
    for r in table:
        ratio = f"{r['nn_ratio']:.2f}" if r["nn_ratio"] is not None else "-"
        print(f"{r['step']:>7} {r['seconds']:>8.0f} {r['swd']:>9.1f} {ratio:>9}")
    print(f"{'real vs real':>16} {floor:>9.1f}")
    print(f"memorisation: median NN distance {memo['nn_median']:.3f} (held-out real: {memo['nn_reference_median']:.3f}), "
          f"ratio {memo['nn_ratio']:.2f}, near copies {100 * memo['near_copies']:.1f} %")
    print(f"{result.steps_done} steps in {result.seconds:.0f} s ({result.steps_done / result.seconds:.1f} steps/s); "
          f"load average before: {load_before:.1f}")

    samples = args.out / "samples"
    grid = max(samples.glob("grid_*.png"))
    interp = max(samples.glob("interp_*.png"))
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid, images / "dcgan_phantom_grid.png")
    shutil.copyfile(interp, images / "dcgan_phantom_interp.png")

    out = {
        "benchmark": "dcgan_phantom",
        "config": {"image_size": args.image_size, "ngf": args.width, "ndf": args.width, "batch_size": args.batch_size,
                   "loss": args.loss, "phantom_subjects": args.subjects, "minutes": args.minutes, "seed": args.seed},
        "train_slices": len(recipe.train_images),
        "heldout_slices": n_hold,
        "steps": result.steps_done,
        "seconds": round(result.seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "swd_metric": "SWD x1e3, Laplacian pyramid 7x7 patches (Karras et al. 2018), cheap settings: "
                      "64 patches/image, 2x64 directions",
        "swd_over_time": table,
        "swd_real_vs_real": floor,
        "swd_final_per_level": {k: v for k, v in (result.last_metrics or {}).items() if k.startswith("swd")},
        "memorization": memo,
        "fid_kid": {k: v for k, v in (result.last_metrics or {}).items() if k.startswith(("fid", "kid"))} or None,
        "threads": args.threads,
        "load_average_before": round(load_before, 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "sample_grid": "docs/images/dcgan_phantom_grid.png",
        "interpolation_strip": "docs/images/dcgan_phantom_interp.png",
    }
    path = ROOT / "benchmarks" / "results" / "dcgan_phantom.json"
    atomic_write_text(path, json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {path}, {images / 'dcgan_phantom_grid.png'}")


if __name__ == "__main__":
    main()
