"""Shared plotting. Every figure is written with the non-interactive Agg backend."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from counterfeit.atomic import atomic_path  # noqa: E402

# Columns of metrics.csv that are bookkeeping, not losses.
_NOT_LOSSES = {"step", "seconds", "data_wait_frac", "lr"}


def plot_losses(metrics_csv: str | Path, out_png: str | Path, columns: list[str] | None = None) -> Path:
    """Plot every loss column of a run's metrics.csv against step (one panel per column)."""
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{metrics_csv}: no rows to plot")
    names = columns or [c for c in rows[0].keys() if c not in _NOT_LOSSES]
    n = max(len(names), 1)
    ncols = min(n, 3)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        pts = [(float(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png
