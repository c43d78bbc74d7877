"""`counterfeit demo`: the MR->CT demo end to end on the built-in phantom (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from counterfeit.cli.app import app


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", help="Demo folder: phantom, runs, synthetic CTs, report.")] = Path("runs/demo"),
    minutes: Annotated[float, typer.Option("--minutes", help="Total wall-clock budget (data + training + report).")] = 10.0,
    subjects: Annotated[int, typer.Option("--subjects", help="Phantom heads (62.5 % train, 12.5 % val, 25 % test).")] = 24,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Seed of the phantom and of both trainings (the unpaired candidates take --seed, --seed+1, ...).")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N]")] = "auto",
    phantom: Annotated[Optional[Path], typer.Option("--phantom", help="Use this phantom dataset (`counterfeit phantom`), only read, instead of <out>/phantom, which is generated, and generated again when --subjects or --seed change.")] = None,
    sequential: Annotated[bool, typer.Option("--sequential", help="Train the two models one after the other on all cores "
                                             "(default on a multi-core CPU: side by side, each on half of the cores).")] = False,
    candidates: Annotated[int, typer.Option("--candidates", help="Unpaired CycleGAN: start this many seeds for a quarter of "
                                            "its steps each and finish the one with the lowest validation MAE (1: a single run).")] = 2,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars or log lines; the report paths are still printed.")] = False,
) -> None:
    """Phantom -> unpaired CycleGAN and paired baseline (equal time) -> synthesis -> evaluation -> report.html."""
    from counterfeit.medical.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out=out, minutes=minutes, subjects=subjects, seed=seed, device=device,
                                 phantom=phantom, side_by_side=not sequential, unpaired_candidates=candidates,
                                 progress=not no_progress))
    typer.echo(f"report: {result.report_html}\nmarkdown: {result.report_md}")
