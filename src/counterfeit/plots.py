"""Shared plotting. Every figure is written with the non-interactive Agg backend."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from counterfeit.atomic import atomic_path  # noqa: E402

# Columns of metrics.csv that are bookkeeping, not losses.
_NOT_LOSSES = {"step", "seconds", "data_wait_frac", "lr"}


def plot_losses(metrics_csv: str | Path, out_png: str | Path, columns: list[str] | None = None,
                labels: Mapping[str, str] | None = None) -> Path | None:
    """Plot every loss column of a run's metrics.csv against step (one panel per column); None, and no
    picture, while it has no rows (a run stopped or asked for 0 steps before its first log row).

    labels: what a column is, in words (a recipe's `log_labels`), shown above its CSV name.
    """
    labels = labels or {}
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    names = columns or [c for c in rows[0].keys() if c not in _NOT_LOSSES]
    n = max(len(names), 1)
    ncols = min(n, 3)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        pts = [(float(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
        if pts:
            xs, ys = zip(*pts)
            # a column evaluated only a few times (validation, SWD) would be a line too short to see: mark its points
            ax.plot(xs, ys, lw=1.2, marker="o" if len(pts) <= 20 else None, markersize=3)
        ax.set_title(f"{labels[name]}\n{name}" if name in labels else name, fontsize=9)
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


# --- 2D toy lab figures --------------------------------------------------------


def _render_figure_array(fig) -> "np.ndarray":
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_toy_frame(real, fake, bounds: tuple[float, float, float, float], d_values=None,
                     d_label: str = "D(x)", title: str = "", size_px: int = 480) -> "np.ndarray":
    """The classic "GAN learning a 2D distribution" picture as an (H, W, 3) uint8 array.

    Real samples (grey) and generated samples (red) over filled contours of the
    discriminator's output `d_values`: a (ny, nx) grid sampled uniformly over
    `bounds` = (xmin, xmax, ymin, ymax), row i along y and column j along x.
    Every frame has the same size, so frames stack into a GIF.
    """
    import numpy as np
    from matplotlib.figure import Figure

    xmin, xmax, ymin, ymax = bounds
    dpi = 80
    fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    ax = fig.add_axes((0.08, 0.07, 0.72, 0.86))
    if d_values is not None:
        d_values = np.asarray(d_values, dtype=np.float64)
        ny, nx = d_values.shape
        finite = d_values[np.isfinite(d_values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        hi = max(hi, lo + 1e-6)  # contourf needs increasing levels
        cs = ax.contourf(np.linspace(xmin, xmax, nx), np.linspace(ymin, ymax, ny), d_values,
                         levels=np.linspace(lo, hi, 16), cmap="coolwarm_r", alpha=0.55)
        fig.colorbar(cs, cax=fig.add_axes((0.83, 0.07, 0.03, 0.86)), label=d_label, format="%.2g")
    real, fake = np.asarray(real), np.asarray(fake)
    ax.scatter(real[:, 0], real[:, 1], s=2, c="0.25", alpha=0.35, linewidths=0, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=2, c="crimson", alpha=0.6, linewidths=0, label="generated")
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    return _render_figure_array(fig)


def save_png(image, out_png: str | Path) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG, atomically."""
    import imageio.v3 as iio
    import numpy as np

    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        iio.imwrite(tmp, np.asarray(image, dtype=np.uint8), extension=".png")
    return out_png


def write_gif(frames, out_gif: str | Path, fps: float = 4.0) -> Path:
    """Assemble frames (arrays or image files, all the same size) into a looping animated GIF."""
    import imageio.v3 as iio
    import numpy as np

    if len(frames) == 0:
        raise ValueError("write_gif: no frames")
    images = [np.asarray(f)[..., :3] if isinstance(f, np.ndarray) else iio.imread(f)[..., :3] for f in frames]
    shapes = sorted({im.shape for im in images})
    if len(shapes) != 1:
        raise ValueError(f"write_gif: frames differ in size: {shapes}")
    out_gif = Path(out_gif)
    with atomic_path(out_gif) as tmp:
        iio.imwrite(tmp, np.stack(images), extension=".gif", duration=int(1000 / fps), loop=0)
    return out_gif


def plot_generator_gradients(out_png: str | Path) -> Path:
    """The "generator loss gradient" figure: saturating vs non-saturating generator loss against D(G(z)).

    Left: the losses log(1 − D(G(z))) (minimax) and −log D(G(z)) (non-saturating).
    Right: their gradients with respect to D's logit, computed by autograd from
    `counterfeit.losses`: the minimax gradient vanishes where D confidently rejects
    the fakes (D(G(z)) → 0), the non-saturating one does not.
    """
    import numpy as np
    import torch
    from matplotlib.figure import Figure

    from counterfeit.losses import get_objective

    logits = torch.linspace(-8, 8, 401, dtype=torch.float64, requires_grad=True)
    d_of_fake = torch.sigmoid(logits).detach().numpy()
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax_loss, ax_grad = fig.subplots(1, 2)
    for name, label in (("minimax", "minimax: log(1 − D(G(z)))"), ("nonsaturating", "non-saturating: −log D(G(z))")):
        obj = get_objective(name)
        per_sample = torch.stack([obj.g_loss(l.reshape(1)) for l in logits])
        (grad,) = torch.autograd.grad(per_sample.sum(), logits)
        ax_loss.plot(d_of_fake, per_sample.detach().numpy(), label=label)
        ax_grad.plot(d_of_fake, grad.numpy(), label=label)
    ax_loss.set_xlabel("D(G(z))")
    ax_loss.set_ylabel("generator loss")
    ax_grad.set_xlabel("D(G(z))")
    ax_grad.set_ylabel("d loss / d logit")
    ax_grad.axvspan(0, 0.05, color="0.85", label="D rejects fakes")
    for ax in (ax_loss, ax_grad):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(_render_figure_array(fig), out_png)
