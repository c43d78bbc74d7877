"""`counterfeit evaluate` command: MAE / PSNR / SSIM of synthetic CTs against reference CTs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from counterfeit.cli.app import app, train_app  # noqa: F401

_NAME_HELP = "File name inside each subject folder of {} (subject-folder layout)."


@app.command("evaluate")
def evaluate(
    pred: Path = typer.Option(
        ..., "--pred", help="Folder of synthetic CTs: one volume per subject, or subject folders with --pred-name."
    ),
    ref: Path = typer.Option(
        ..., "--ref", help="Folder of reference CTs, e.g. a phantom root with --ref-name ct_aligned.nii.gz."
    ),
    mask: Path = typer.Option(..., "--mask", help="Folder of body masks (non-zero voxels are evaluated)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (default: the folder next to --pred named evaluation)."
    ),
    psnr_peak: str = typer.Option(
        "synthrad",
        "--psnr-peak",
        help="synthrad: clip to [-1024, 3000] HU, peak 4024 (SynthRAD2023); seed: peak 4095, no clipping (the talk).",
    ),
    pred_name: Optional[str] = typer.Option(None, "--pred-name", help=_NAME_HELP.format("--pred")),
    ref_name: Optional[str] = typer.Option(None, "--ref-name", help=_NAME_HELP.format("--ref")),
    mask_name: Optional[str] = typer.Option(None, "--mask-name", help=_NAME_HELP.format("--mask")),
) -> None:
    """Score synthetic CTs (MAE, PSNR, SSIM inside the mask); write CSV/JSON/Markdown tables and a bar chart."""
    from counterfeit.errors import UserError
    from counterfeit.medical.evaluate import METRIC_KEYS, PSNR_PEAKS, evaluate_folders, summarize

    if psnr_peak not in PSNR_PEAKS:
        raise UserError(f"--psnr-peak must be one of {', '.join(PSNR_PEAKS)}, got {psnr_peak!r}")

    from rich.console import Console
    from rich.table import Table

    from counterfeit.medical.report import (
        MEAN_SD_LABEL,
        METRIC_FORMAT,
        format_mean_sd,
        format_value,
        plot_per_patient,
        write_metrics_table,
    )

    rows = evaluate_folders(
        pred, ref, mask, psnr_peak=psnr_peak, pred_name=pred_name, ref_name=ref_name, mask_name=mask_name
    )
    out_dir = out if out is not None else pred.resolve().parent / "evaluation"
    paths = write_metrics_table(rows, out_dir)
    figure = plot_per_patient(rows, out_dir / "metrics.png", title=f"{pred.name} against {ref.name}, inside the masks")

    keys = METRIC_KEYS
    summary = summarize(rows, keys)
    table = Table(title=f"synthetic vs reference CT: {len(rows)} subjects, PSNR {psnr_peak}")
    table.add_column("patient")
    for key in keys:
        name, unit, _ = METRIC_FORMAT[key]
        table.add_column(f"{name} ({unit})" if unit else name, justify="right")
    for row in rows:
        table.add_row(str(row["subject"]), *(format_value(k, row[k]) for k in keys))
    table.add_section()
    table.add_row(MEAN_SD_LABEL, *(format_mean_sd(k, summary.get(k)) for k in keys), style="bold")
    console = Console()
    console.print(table)
    console.print(f"wrote {paths['csv']}, {paths['json']}, {paths['md']}, {figure}")
