"""Short CRN run on the procedural street scenes: layout -> "photograph", k diverse outputs, a montage.

Run: python benchmarks/crn_street.py [--minutes 3] [--height 32] [--k 3] [--vgg-weights vgg19-dcbb9e9d.pth]

Trains `counterfeit train crn --dataset street` for a wall-clock budget and writes
docs/images/crn_street.png (rows: held-out layouts; columns: layout, real scene, the k outputs)
and benchmarks/results/crn_street.json (validation L1 of the first output and of the best of k,
in [-1, 1] units, before and after training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from counterfeit.atomic import atomic_write_text
from counterfeit.device import seed_everything
from counterfeit.layout_synthesis import layout_row, save_montage
from counterfeit.train.loop import LoopConfig, train
from counterfeit.train.recipes.crn import CRNConfig, CRNRecipe

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--height", type=int, default=32, help="width = 2 x height; 4x8 base as in the paper")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (the paper: 1e-4)")
    parser.add_argument("--adv-weight", type=float, default=0.0, help="adversarial term (off in the paper)")
    parser.add_argument("--vgg-weights", default=None)
    parser.add_argument("--montage", type=Path, default=ROOT / "docs" / "images" / "crn_street.png")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "crn_street.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_crn_street")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    if args.out.exists():
        shutil.rmtree(args.out)
    seed_everything(args.seed)
    config = CRNConfig(dataset="street", height=args.height, width=2 * args.height, k=args.k, n_train=args.n_train, lr=args.lr,
                       adv_weight=args.adv_weight,
                       vgg_weights=args.vgg_weights, data_seed=args.seed)
    recipe = CRNRecipe(config, torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recipe.setup_data()
        before = recipe.evaluate(recipe.val_pairs)
        loop = LoopConfig(steps=10**9, minutes=args.minutes, seed=args.seed, log_every=10, sample_every=0,
                          checkpoint_every=0, progress=False, tensorboard=False)
        result = train(recipe, loop, args.out)
    random_vgg = any("RANDOM" in str(w.message) for w in caught)
    after = recipe.evaluate(recipe.val_pairs)

    pairs = recipe.val_pairs.subset(range(min(args.rows, len(recipe.val_pairs))))
    outputs = recipe.generate(pairs.labels)
    rows = [layout_row(lab, recipe.palette, [img, *outs]) for lab, img, outs in zip(pairs.labels, pairs.images, outputs)]
    scale = max(1, 96 // args.height)
    rows = [[np.kron(t, np.ones((1, scale, scale))) for t in row] for row in rows]
    montage = args.montage
    save_montage(rows, montage)

    print(f"CRN on street scenes: {args.height}x{2 * args.height}, k={args.k}, {result.steps_done} steps in {result.seconds:.0f} s; "
          f"VGG19 {'RANDOM features' if random_vgg else 'weights'}")
    print(f"validation L1 (first output): {before['val_l1']:.3f} -> {after['val_l1']:.3f}; "
          f"best of k: {before['val_l1_best_of_k']:.3f} -> {after['val_l1_best_of_k']:.3f}")
    out = {
        "benchmark": "crn_street",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
        "minutes": args.minutes,
        "vgg": "random features (no weights on this machine)" if random_vgg else str(args.vgg_weights),
        "steps": result.steps_done,
        "seconds": round(result.seconds, 1),
        "val_before": before,
        "val_after": after,
        "last_losses": result.last_losses,
        "montage": f"{montage} (rows: held-out layouts; columns: layout, real, k outputs)",
        "threads": args.threads,
        "load_average_before": round(load_before, 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    path = args.results
    atomic_write_text(path, json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {path}, {montage}")


if __name__ == "__main__":
    main()
