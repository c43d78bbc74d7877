"""Diagnostic: do trained MR -> CT runs fit their training subjects better than held-out ones (overfitting)?

Run: python benchmarks/mr2ct_generalization.py --phantom runs/demo/phantom runs/demo/unpaired runs/demo/paired
     [--weights best|latest] [--json benchmarks/results/mr2ct_generalization.json]

Synthesises every subject of the phantom's train, val and test splits with each run and reports, per split, the
mean ± SD of the MAE (HU, inside the body mask) against two references:
- the CT aligned to the MR (`ct_aligned`: what the demo scores), and
- the CT the paired baseline trains on (`ct`: slightly misaligned, like real paired data).
A model that generalises scores alike on all splits. One that has learnt its training subjects' misalignment
scores better against `ct` on the training split than on the others, and worse against `ct_aligned`.
Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# benchmarks/run_all.py skips this script: it analyses runs trained beforehand, named on the command line
RUN_ALL = "skip: needs trained runs (--phantom ROOT RUN [RUN ...])"


def main() -> None:
    import numpy as np
    import torch

    from counterfeit.atomic import atomic_write_text
    from counterfeit.data.phantom import load_dataset, subject_paths
    from counterfeit.data.volumes import read_volume
    from counterfeit.medical.evaluate import image_metrics
    from counterfeit.medical.demo import score_on_subjects
    from counterfeit.medical.synthesize import load_mr2ct_run
    from counterfeit.train.loop import WEIGHTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run directories of `counterfeit train cyclegan|paired`")
    ap.add_argument("--phantom", type=Path, required=True, help="the phantom root the runs were trained on")
    ap.add_argument("--weights", choices=WEIGHTS, default="best", help="checkpoint of each run")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    info = load_dataset(args.phantom)
    splits = {name: ids for name, ids in info["splits"].items() if ids}
    rows = []
    for run in args.runs:
        model = load_mr2ct_run(run, "cpu", args.weights)
        for split, ids in splits.items():
            scored, predictions = score_on_subjects(model, args.phantom, ids)  # the demo's scoring: vs ct_aligned
            errors = {"ct_aligned": [r["mae"] for r in scored], "ct": []}
            for sid in ids:
                paths = subject_paths(args.phantom, sid)
                mask = read_volume(paths["mask"], modality="mask").array
                ct = read_volume(paths["ct"], modality="ct").array
                errors["ct"].append(image_metrics(ct, predictions[sid], mask)["mae"])
            row = {"run": str(run), "weights": args.weights, "split": split, "subjects": len(ids)}
            for ref, values in errors.items():
                row[f"mae_{ref}"] = round(float(np.mean(values)), 1)
                row[f"mae_{ref}_sd"] = round(float(np.std(values, ddof=1)), 1) if len(values) > 1 else 0.0
            rows.append(row)
            print(f"{run} {split}: {row['mae_ct_aligned']} vs aligned CT, {row['mae_ct']} vs training CT", flush=True)

    print("\n| run | split | subjects | MAE vs aligned CT | MAE vs misaligned (training) CT |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['split']} | {r['subjects']} | {r['mae_ct_aligned']} ± {r['mae_ct_aligned_sd']} "
              f"| {r['mae_ct']} ± {r['mae_ct_sd']} |")
    out = args.json or Path(__file__).resolve().parent / "results" / "mr2ct_generalization.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"benchmark": "mr2ct_generalization", "phantom": str(args.phantom),
                                       "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
