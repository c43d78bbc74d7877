"""Run every benchmark script in benchmarks/ and collect their JSON into benchmarks/results/summary.json.

Run: python benchmarks/run_all.py [--full] [--only train_speed phantom_speed] [--timeout-minutes 30]
(`make bench` runs the default.)

Default: short runs, a smoke test of every benchmark in minutes. Each script gets the short
options it offers (read from its --help): `--quick` if it has one, else `--minutes 1`,
`--seeds 0`, `--subjects 6`. Short runs happen in a scratch copy of the project's layout, so
they never overwrite the full results in benchmarks/results/ or the pictures in docs/images/;
their JSON goes into summary.json only.
--full: every script with its own defaults, in place (this rewrites benchmarks/results/*.json
and docs/images/ with the numbers the documentation quotes; it takes about two and a half hours).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from counterfeit.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SUMMARY = BENCH / "results" / "summary.json"
# Short options, applied when a script's --help lists them ("--quick" alone wins).
SHORT_OPTIONS = [("--minutes", ["1"]), ("--seeds", ["0"]), ("--subjects", ["6"])]
# Fields that describe the machine or the run, not the result: left out of the printed table.
METADATA = {"benchmark", "cpu_count", "cpus", "machine", "python", "torch", "cpu", "threads", "quick", "workers",
            "seed", "load_average_before", "load_average_after", "target_seconds"}


def skip_reason(script: Path) -> str | None:
    """A script that analyses runs trained beforehand says so in a module-level `RUN_ALL = "skip: ..."`."""
    found = re.search(r'^RUN_ALL = "skip: ([^"]*)"', script.read_text(), re.MULTILINE)
    return found.group(1) if found else None


def benchmark_scripts(only: list[str] | None) -> list[Path]:
    scripts = sorted(p for p in BENCH.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if only:
        unknown = sorted(set(only) - {p.stem for p in scripts})
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {unknown}; available: {[p.stem for p in scripts]}")
        scripts = [p for p in scripts if p.stem in only]
    return scripts


def short_arguments(script: Path) -> list[str]:
    """The short options `script` offers, read from its --help."""
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    text = run.stdout
    if re.search(r"(?<![\w-])--quick\b", text):
        return ["--quick"]
    args: list[str] = []
    for flag, values in SHORT_OPTIONS:
        if re.search(rf"(?<![\w-]){re.escape(flag)}\b", text):
            args += [flag, *values]
    return args


def run_script(script: Path, args: list[str], timeout: float) -> tuple[int, float, list[str]]:
    """Run a script, echoing its output; return (exit code, seconds, last lines of output)."""
    start = time.perf_counter()
    tail: list[str] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(f"    {line}", end="", flush=True)
                tail = (tail + [line.rstrip()])[-20:]
                if time.perf_counter() - start > timeout:
                    proc.kill()
                    tail.append(f"killed after {timeout:.0f} s")
                    break
            code = proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            raise
    return code, time.perf_counter() - start, tail


def headline(result: dict[str, Any], limit: int = 4) -> str:
    """A few numbers of a result JSON (top level first, then one or two levels down), for the summary table."""
    parts = [f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
             for key, value in _scalars(result)]
    return ", ".join(parts[:limit]) or "(no numbers at the top levels)"


def _scalars(obj: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    found, nested = [], []
    for key, value in obj.items():
        if key in METADATA or value is None:
            continue
        if isinstance(value, (bool, int, float)):
            found.append((prefix + key, value))
        elif isinstance(value, dict) and depth < 2:
            nested.append((key, value))
    for key, value in nested:
        found += _scalars(value, f"{prefix}{key}.", depth + 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the scripts' own defaults, writing results in place")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="benchmark names (file stems) to run")
    parser.add_argument("--timeout-minutes", type=float, default=30.0, help="per script")
    args = parser.parse_args()

    scripts = benchmark_scripts(args.only)
    load_before = os.getloadavg()[0]
    scratch = None if args.full else Path(tempfile.mkdtemp(prefix="counterfeit-bench-"))
    if scratch is not None:  # the scripts write under their parent's parent: give them a throwaway one
        (scratch / "benchmarks" / "results").mkdir(parents=True)
        (scratch / "docs" / "images").mkdir(parents=True)
    entries: dict[str, Any] = {}
    try:
        for script in scripts:
            reason = skip_reason(script)
            if reason:
                print(f"== {script.stem}: skipped ({reason})", flush=True)
                entries[script.stem] = {"command": [script.name], "returncode": 0, "skipped": reason, "seconds": 0.0,
                                        "results": {}, "output_tail": []}
                continue
            options = [] if args.full else short_arguments(script)
            target = script if scratch is None else shutil.copy2(script, scratch / "benchmarks" / script.name)
            results_dir = Path(target).parent / "results"
            print(f"== {script.stem} {' '.join(options)}", flush=True)
            started = time.time()
            code, seconds, tail = run_script(Path(target), options, args.timeout_minutes * 60)
            results = {}
            for path in sorted(results_dir.glob("*.json")):
                if path.name != SUMMARY.name and path.stat().st_mtime >= started:
                    results[path.stem] = json.loads(path.read_text())
            entries[script.stem] = {"command": [script.name, *options], "returncode": code,
                                    "seconds": round(seconds, 1), "results": results,
                                    "output_tail": tail if code else tail[-3:]}
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    summary = {"mode": "full" if args.full else "short", "load_average_before": round(load_before, 2),
               "load_average_after": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(), "benchmarks": entries}
    atomic_write_text(SUMMARY, json.dumps(summary, indent=2) + "\n")

    width = max([len(name) for name in entries] + [9])
    print(f"\n{'benchmark':<{width}}  {'status':<8} {'seconds':>8}  headline ({summary['mode']} runs, "
          f"load average {load_before:.1f} before)")
    for name, entry in entries.items():
        status = "skipped" if entry.get("skipped") else "ok" if entry["returncode"] == 0 else f"exit {entry['returncode']}"
        numbers = entry.get("skipped") or "; ".join(headline(r) for r in entry["results"].values()) or "(no JSON written)"
        print(f"{name:<{width}}  {status:<8} {entry['seconds']:>8.0f}  {numbers}")
    print(f"wrote {SUMMARY}")
    if any(e["returncode"] for e in entries.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
