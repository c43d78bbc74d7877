"""Diagnostic: which rule picks the checkpoint of a demo-style MR -> CT run that does best on held-out heads?

Run: python benchmarks/mr2ct_selection.py --phantom runs/demo/phantom --work runs/mr2ct_selection \
         --model unpaired --seeds 0 1 --minutes 10 [--json benchmarks/results/mr2ct_selection_unpaired.json]

Trains one run per seed the way `counterfeit demo` does (its recipe options, `train_for_budget` with
`keep_best`, its candidates; the runs side by side, one thread each, like the demo's two models), but
checkpoints at every validation and keeps them all. Then scores every checkpoint on all of the phantom's
val heads and on its test heads (SynthRAD2023 MAE inside the body mask, against the aligned CT), and
reports the test MAE of the checkpoint each rule picks:
- `last`: the newest checkpoint;
- `loop`: the lowest in-loop validation MAE (the demo's rule: `preview_subjects` of the val heads);
- `all_val`: the lowest validation MAE over all val heads;
- `all_val_smoothed`: the lowest mean of that MAE over a checkpoint and its two neighbours;
- `oracle`: the lowest test MAE (what no rule can beat).
Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

# benchmarks/run_all.py skips this script: it trains for as long as the demo and needs a phantom root
RUN_ALL = "skip: a 10-minute training per seed (--phantom ROOT --work DIR)"

RULES = ("last", "loop", "all_val", "all_val_smoothed", "oracle")


def train_keeping_every_validation(model: str, phantom: str, seconds: float, run_dir: str, seed: int) -> dict[str, Any]:
    """The demo's `_train_worker`, with a checkpoint at each validation and none pruned."""
    import dataclasses

    import torch

    import counterfeit.train.loop as loop_module
    from counterfeit.medical.demo import RECIPE_OF, DemoConfig, _candidates, _recipe_options
    from counterfeit.train.budget import train_for_budget

    torch.set_num_threads(1)
    plain = loop_module.LoopConfig

    def every_validation(**kw: Any) -> Any:
        config = plain(**kw)
        return dataclasses.replace(config, checkpoint_every=config.metrics_every or config.checkpoint_every,
                                   keep_checkpoints=10_000)

    loop_module.LoopConfig = every_validation  # train_for_budget imports it when called
    cfg = DemoConfig(out=Path(run_dir).parent, seed=seed)
    return train_for_budget(RECIPE_OF[model], _recipe_options(cfg, model, Path(phantom)), seconds, Path(run_dir),
                            seed=seed, device="cpu", progress=False, candidates=_candidates(cfg, model), keep_best=True,
                            overwrite=True)


def score_checkpoints(run_dir: str, phantom: str) -> list[dict[str, Any]]:
    """MAE of every checkpoint on each val and test head (HU), with the in-loop validation MAE of its step."""
    import csv

    import torch

    from counterfeit.data.phantom import load_dataset
    from counterfeit.medical.demo import score_on_subjects
    from counterfeit.medical.synthesize import load_mr2ct_run
    from counterfeit.train import checkpoint as ckpt
    from counterfeit.train.recipe import validation_mae

    torch.set_num_threads(1)
    splits = load_dataset(Path(phantom))["splits"]
    loop_mae: dict[int, float] = {}
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            found = validation_mae({k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"})
            if found is not None:
                loop_mae[int(float(row["step"]))] = found[1]
    model = load_mr2ct_run(Path(run_dir), "cpu", "latest")
    rows = []
    for info in ckpt.list_checkpoints(Path(run_dir)):
        for name, net in model.nets.items():
            ckpt.load_weights(net, info.path / f"{name}.safetensors")
        row: dict[str, Any] = {"step": info.step, "loop_val_mae": loop_mae.get(info.step)}
        for split in ("val", "test"):
            scored, _ = score_on_subjects(model, Path(phantom), splits[split])
            row[f"{split}_mae"] = [round(r["mae"], 2) for r in scored]
        rows.append(row)
    return rows


def choose(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The checkpoint each rule picks, with its mean test MAE."""
    import numpy as np

    val = np.array([np.mean(r["val_mae"]) for r in rows])
    test = np.array([np.mean(r["test_mae"]) for r in rows])
    smoothed = np.array([val[max(i - 1, 0): i + 2].mean() for i in range(len(val))])
    loop = np.array([np.inf if r["loop_val_mae"] is None else r["loop_val_mae"] for r in rows])
    picks = {"last": len(rows) - 1, "loop": int(np.argmin(loop)), "all_val": int(np.argmin(val)),
             "all_val_smoothed": int(np.argmin(smoothed)), "oracle": int(np.argmin(test))}
    return {rule: {"step": rows[i]["step"], "test_mae": round(float(test[i]), 1)} for rule, i in picks.items()}


def main() -> None:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import numpy as np

    from counterfeit.atomic import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phantom", type=Path, required=True, help="a demo phantom root (`counterfeit phantom` or a demo's)")
    ap.add_argument("--work", type=Path, required=True, help="folder for the runs (one per seed)")
    ap.add_argument("--model", choices=("unpaired", "paired"), default="unpaired")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per run (the demo: 10 minus setup)")
    ap.add_argument("--score-only", action="store_true", help="score the runs already in --work")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    phantom = str(args.phantom.resolve())
    runs = {seed: str(args.work / f"{args.model}_seed{seed}") for seed in args.seeds}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(min(2, len(runs)), mp_context=get_context("spawn")) as pool:
        if not args.score_only:
            trained = {s: pool.submit(train_keeping_every_validation, args.model, phantom, 60 * args.minutes, r, s)
                       for s, r in runs.items()}
            steps = {s: f.result()["steps"] for s, f in trained.items()}
            print(f"trained {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        scored = {s: pool.submit(score_checkpoints, r, phantom) for s, r in runs.items()}
        results = {s: {"run": runs[s], "checkpoints": f.result()} for s, f in scored.items()}
    for result in results.values():
        result["picks"] = choose(result["checkpoints"])

    print("\n| seed | checkpoints | " + " | ".join(RULES) + " |\n|---|---|" + "---|" * len(RULES))
    for seed, result in results.items():
        picks = result["picks"]
        cells = " | ".join(f"{picks[r]['test_mae']} (step {picks[r]['step']})" for r in RULES)
        print(f"| {seed} | {len(result['checkpoints'])} | {cells} |")
    means = {r: round(float(np.mean([res["picks"][r]["test_mae"] for res in results.values()])), 1) for r in RULES}
    print("| mean | | " + " | ".join(str(means[r]) for r in RULES) + " |")
    out = args.json or Path(__file__).resolve().parent / "results" / f"mr2ct_selection_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"benchmark": "mr2ct_selection", "model": args.model, "minutes": args.minutes,
                                       "phantom": phantom, "means": means,
                                       "runs": {str(s): r for s, r in results.items()}}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
