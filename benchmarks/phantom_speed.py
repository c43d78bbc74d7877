"""Benchmark: phantom data set generation speed (target: 20 subjects of 64x128x128 in < 30 s on 2 cores).

Run: python benchmarks/phantom_speed.py [--subjects 20] [--workers 2]
Prints a table and writes benchmarks/results/phantom_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from counterfeit.atomic import atomic_write_text
from counterfeit.data.phantom import generate_dataset, make_subject

SHAPE = (64, 128, 128)
TARGET_SECONDS = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other work on the machine slows this benchmark down
    make_subject(0, SHAPE)  # warm up imports and caches
    start = time.perf_counter()
    for seed in range(3):
        make_subject(seed, SHAPE)
    render = (time.perf_counter() - start) / 3

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_dataset(tmp, args.subjects, shape=SHAPE, seed=0, workers=args.workers)
        total = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e6

    rows = [
        ("render one subject (1 process)", f"{render:.2f} s"),
        (f"dataset: {args.subjects} subjects, {args.workers} workers", f"{total:.1f} s"),
        ("per subject (wall)", f"{total / args.subjects:.2f} s"),
        ("data written", f"{size_mb:.0f} MB"),
        ("machine load average (1 min, before)", f"{load_before:.1f}"),
        (f"target < {TARGET_SECONDS:.0f} s", "PASS" if total < TARGET_SECONDS else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"phantom speed, shape {'x'.join(map(str, SHAPE))} (z, y, x)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")

    result = {
        "benchmark": "phantom_speed",
        "shape": list(SHAPE),
        "subjects": args.subjects,
        "workers": args.workers,
        "seconds_total": round(total, 2),
        "seconds_render_one_subject": round(render, 3),
        "megabytes_written": round(size_mb, 1),
        "target_seconds": TARGET_SECONDS,
        "passed": total < TARGET_SECONDS,
        "cpu_count": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    out = Path(__file__).resolve().parent / "results" / "phantom_speed.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
