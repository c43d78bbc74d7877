"""Benchmark: `counterfeit toy` with its defaults on ring8 and grid25 over several seeds.

Run: python benchmarks/toy_modes.py [--seeds 0 1 2 3 4] [--dists ring8 grid25] [--extra "--loss lsgan"]

Each run is the real command in a fresh process (`counterfeit toy --dist D --seed S --out ...`), so
the wall time includes Python start-up, torch import, training, metrics, pictures and the GIF.
A mode is covered with at least one high-quality sample (issue 8's rule); `modes_well_covered` counts those with at
least 20 % of an equal share of the samples (PacGAN's rule). Targets (issue 8): ring8 8/8 modes with >= 90 % high-quality samples, grid25 >= 23/25 modes with
>= 80 %, each in under 60 s of wall time on 2 CPU cores. Prints one row per run and a summary per
distribution (including seconds to full mode coverage, read from metrics.csv), and writes
benchmarks/results/toy_modes.json together with the machine's load average, which matters: other
processes on the same cores slow every run down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from counterfeit.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"ring8": (8, 0.90), "grid25": (23, 0.80)}
WALL_LIMIT = 60.0


def _command() -> list[str]:
    exe = Path(sys.executable).parent / "counterfeit"
    return [str(exe)] if exe.is_file() else [sys.executable, "-c", "from counterfeit.cli import main; main()"]


def run_one(dist: str, seed: int, out: Path, extra: list[str]) -> dict:
    load = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(_command() + ["toy", "--dist", dist, "--seed", str(seed), "--out", str(out), "--no-progress", *extra],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"toy run {dist} seed {seed} failed:\n{proc.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    want_modes, want_hq = TARGETS[dist]
    return {
        "dist": dist,
        "seed": seed,
        "modes_covered": summary["modes_covered"],
        "modes_well_covered": summary["modes_well_covered"],
        "n_modes": summary["n_modes"],
        "high_quality": summary["high_quality"],
        "js": summary["js"],
        "js_real_vs_real": summary["js_real_vs_real"],
        "per_mode_counts": summary["per_mode_counts"],
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),  # what the run costs on a core of its own
        "train_seconds": summary["seconds"],
        "seconds_to_all_modes": summary["seconds_to_all_modes"],
        "seconds_to_target": summary["seconds_to_target"],
        "quality_target_met": summary["modes_covered"] >= want_modes and summary["high_quality"] >= want_hq,
        "target_met": summary["modes_covered"] >= want_modes and summary["high_quality"] >= want_hq and wall < WALL_LIMIT,
        "load_average_before": round(load, 2),
        "steps": summary["steps"],
        "loss": summary["loss"],
    }


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dists", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--extra", default="", help="extra `counterfeit toy` options, e.g. \"--loss lsgan --steps 8000\"")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_toy")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "toy_modes.json")
    args = parser.parse_args()
    extra = shlex.split(args.extra)

    rows = []
    header = f"{'dist':7} {'seed':>4} {'modes':>6} {'HQ %':>6} {'JS':>6} {'wall s':>7} {'cpu s':>6} {'train s':>7} {'s→all modes':>11} {'s→target':>8} {'load':>5}  met"
    print(header)
    for dist in args.dists:
        for seed in args.seeds:
            r = run_one(dist, seed, args.out / f"{dist}_seed{seed}", extra)
            rows.append(r)
            print(f"{dist:7} {seed:>4} {r['modes_covered']:>3}/{r['n_modes']:<2} {100 * r['high_quality']:>6.1f} {r['js']:>6.3f} "
                  f"{r['wall_seconds']:>7.1f} {r['cpu_seconds']:>6.1f} {r['train_seconds']:>7.1f} {_fmt(r['seconds_to_all_modes']):>11} "
                  f"{_fmt(r['seconds_to_target']):>8} {r['load_average_before']:>5.1f}  {'yes' if r['target_met'] else 'NO'}",
                  flush=True)

    summary = {}
    print()
    for dist in args.dists:
        rs = [r for r in rows if r["dist"] == dist]
        hq = [r["high_quality"] for r in rs]
        modes = [r["modes_covered"] for r in rs]
        well = [r["modes_well_covered"] for r in rs]
        walls = [r["wall_seconds"] for r in rs]
        cpus = [r["cpu_seconds"] for r in rs]
        summary[dist] = {
            "runs": len(rs),
            "target": {"modes": TARGETS[dist][0], "high_quality": TARGETS[dist][1], "wall_seconds": WALL_LIMIT},
            "target_met": sum(r["target_met"] for r in rs),
            "quality_target_met": sum(r["quality_target_met"] for r in rs),
            "modes_mean": statistics.mean(modes),
            "modes_min": min(modes),
            "modes_well_covered_mean": statistics.mean(well),
            "modes_well_covered_min": min(well),
            "high_quality_mean": statistics.mean(hq),
            "high_quality_min": min(hq),
            "wall_seconds_mean": statistics.mean(walls),
            "wall_seconds_max": max(walls),
            "cpu_seconds_mean": statistics.mean(cpus),
            "cpu_seconds_max": max(cpus),
        }
        s = summary[dist]
        print(f"{dist}: target met in {s['target_met']}/{s['runs']} runs (modes/quality alone: {s['quality_target_met']}); "
              f"modes mean {s['modes_mean']:.1f} (min {s['modes_min']}; with >= 20 % of a share: mean "
              f"{s['modes_well_covered_mean']:.1f}, min {s['modes_well_covered_min']}), high quality mean {100 * s['high_quality_mean']:.1f} % "
              f"(min {100 * s['high_quality_min']:.1f} %), wall {s['wall_seconds_mean']:.1f} s mean, {s['wall_seconds_max']:.1f} s max")

    result = {
        "benchmark": "toy_modes",
        "command": "counterfeit toy --dist D --seed S " + " ".join(extra),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "summary": summary,
        "runs": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
