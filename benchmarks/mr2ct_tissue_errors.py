"""Benchmark/diagnostic: where the MAE of trained MR -> CT runs comes from, tissue by tissue.

Run: python benchmarks/mr2ct_tissue_errors.py --phantom runs/mr2ct_ablation/phantom RUN_DIR [RUN_DIR ...]
     [--json benchmarks/results/mr2ct_exploration/NN_tissue_errors.json]

Synthesises the phantom's test subjects with each run (as `mr2ct_ablation.py` scores them), adds
the two trivial baselines of the demo, and splits each one's error by the phantom's tissue labels
(`counterfeit.medical.evaluate.errors_by_label`, all test voxels inside the body pooled): per tissue
the MAE and the bias (mean of synthetic - real CT) in HU. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# benchmarks/run_all.py skips this script: it analyses runs trained beforehand, named on the command line
RUN_ALL = "skip: needs trained runs (--phantom ROOT RUN [RUN ...])"


def main() -> None:
    import torch

    from counterfeit.atomic import atomic_write_text
    from counterfeit.data.phantom import TISSUES, load_dataset, read_labels, subject_paths
    from counterfeit.data.volumes import read_volume
    from counterfeit.medical.demo import fit_baselines, score_on_subjects, tissue_table_markdown
    from counterfeit.medical.evaluate import errors_by_label
    from counterfeit.medical.synthesize import load_mr2ct_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run directories of `counterfeit train cyclegan|paired`")
    ap.add_argument("--phantom", type=Path, required=True, help="the phantom root the runs were trained on")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    info = load_dataset(args.phantom)
    test_ids = info["splits"]["test"]
    cases = {}
    for sid in test_ids:
        p = subject_paths(args.phantom, sid)
        cases[sid] = (read_volume(p["mr"], modality="mr").array, read_volume(p["ct_aligned"], modality="ct").array,
                      read_volume(p["mask"], modality="mask").array, read_labels(args.phantom, sid))
    predictions = {}
    for run in args.runs:
        _, predictions[run.name] = score_on_subjects(load_mr2ct_run(run, "cpu"), args.phantom, test_ids)
    for name, baseline in fit_baselines(args.phantom, info["splits"]["train"]).items():
        predictions[name] = {sid: baseline(mr, mask) for sid, (mr, _, mask, _) in cases.items()}
    table = {name: errors_by_label(((ct, pred[sid], mask, labels) for sid, (_, ct, mask, labels) in cases.items()),
                                   TISSUES) for name, pred in predictions.items()}
    print(tissue_table_markdown(table))
    if args.json:
        payload = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "test_subjects": test_ids,
                   "errors_by_tissue": table}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
