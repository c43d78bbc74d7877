"""`counterfeit sample`: images from a trained unconditional generator (a `train dcgan` run)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from counterfeit.cli.app import app, train_app  # noqa: F401


@app.command("sample")
def sample(
    model: Annotated[Path, typer.Option("--model", help="Run directory of `counterfeit train dcgan`.")],
    out: Annotated[Path, typer.Option("--out", help="Output picture (.png, .tif, .jpg).")] = Path("samples.png"),
    n: Annotated[Optional[int], typer.Option("--n", help="Images in the grid (default 64), or rows with --interpolate (default 8).")] = None,
    interpolate: Annotated[bool, typer.Option("--interpolate", help="Draw latent interpolations: one row per pair of random latents.")] = False,
    steps: Annotated[int, typer.Option("--steps", help="--interpolate: images per row, ends included.")] = 10,
    method: Annotated[Optional[str], typer.Option("--method", help="--interpolate: slerp | linear (default: the run's setting).")] = None,
    nrow: Annotated[Optional[int], typer.Option("--nrow", min=1, help="Images per grid row (default: square grid).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Seed of the latent vectors.")] = 0,
    bit_depth: Annotated[int, typer.Option("--bit-depth", help="8, or 16 (grayscale .png or .tif).")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N].")] = "auto",
) -> None:
    """Write a grid of generated images, or latent interpolation strips with --interpolate."""
    from counterfeit.data.images import save_image_grid
    from counterfeit.errors import UserError
    from counterfeit.train.loop import load_run, read_run_config

    if n is not None and n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    if bit_depth not in (8, 16):
        raise UserError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    if interpolate and nrow is not None:
        raise UserError("--nrow is for grids: with --interpolate each row is one interpolation of --steps images")
    if not interpolate and (steps != 10 or method is not None):
        raise UserError("--steps and --method are for --interpolate")
    kind = read_run_config(model).get("recipe")
    if kind != "dcgan":  # only a DCGAN draws images from noise alone
        raise UserError(f"{model}: a {kind!r} run has no unconditional generator; `sample` needs a dcgan run "
                        "(use `counterfeit synthesize` for image-to-image models)")
    recipe = load_run(model, device)
    if interpolate:
        rows = n or 8
        ends = recipe.latents(2 * rows, seed)
        images = recipe.interpolation(ends[:rows], ends[rows:], steps, method)
        columns = steps
    else:
        count = n or 64
        images = recipe.generate(recipe.latents(count, seed))
        columns = nrow or int(math.ceil(math.sqrt(count)))
    path = save_image_grid(images, out, nrow=columns, bit_depth=bit_depth)
    typer.echo(f"wrote {len(images)} image{'s' if len(images) != 1 else ''} to {path}")
