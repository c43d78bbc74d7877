"""`counterfeit phantom` command: write the built-in MR/CT head phantom data set."""

from __future__ import annotations

from pathlib import Path

import typer

from counterfeit.cli.app import app, train_app  # noqa: F401


@app.command("phantom")
def phantom(
    out: Path = typer.Option(..., "--out", help="Output folder: sub-XXX/ subject folders and dataset.json."),
    subjects: int = typer.Option(20, "--subjects", help="Number of subjects."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Random seed: the same seed gives the same data set."),
    shape: str = typer.Option("64,128,128", "--shape", help="Volume size Z,Y,X in voxels (the field of view stays the same)."),
    preview: bool = typer.Option(False, "--preview", help="Also write preview.png: MR/CT/mask slices of a few subjects."),
    aligned: bool = typer.Option(False, "--aligned", help="CT exactly aligned to the MR (default: slightly misaligned, like real paired data)."),
    workers: int = typer.Option(0, "--workers", help="Processes to use (0 = one per CPU core)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a phantom data set already in --out (its subject folders, dataset.json, preview.png)."),
) -> None:
    """Generate head phantoms with known ground truth: MR, CT (HU), aligned CT, body mask, tissue labels."""
    import time

    from counterfeit.data.phantom import generate_dataset, load_dataset, remove_dataset
    from counterfeit.errors import UserError

    size = parse_shape(shape)
    if subjects < 1:
        raise UserError(f"--subjects must be at least 1, got {subjects}")
    if workers < 0:
        raise UserError(f"--workers must be 0 (auto) or positive, got {workers}")
    if (out / "dataset.json").is_file():
        # writing over it would leave the old subjects beyond the new count, at their old shape, beside it
        if not overwrite:
            raise UserError(f"{out} already holds a phantom data set; --overwrite replaces it, or choose another --out")
        remove_dataset(out)
    start = time.perf_counter()
    root = generate_dataset(out, subjects, shape=size, seed=seed, misalign=not aligned, workers=workers or None, progress=True)
    info = load_dataset(root)
    splits = ", ".join(f"{name} {len(ids)}" for name, ids in info["splits"].items())
    typer.echo(f"wrote {subjects} subjects ({'x'.join(map(str, size))} voxels) to {root} in {time.perf_counter() - start:.1f} s; splits: {splits}")
    if preview:
        from counterfeit.data.phantom import preview as write_preview

        png = write_preview(root, root / "preview.png", n_subjects=min(4, subjects))
        typer.echo(f"preview: {png}")


def parse_shape(text: str) -> tuple[int, int, int]:
    """'64,128,128' -> (64, 128, 128) with a clear error for anything else."""
    from counterfeit.errors import UserError

    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 8:
        raise UserError(f"--shape must be three sizes Z,Y,X of at least 8 voxels, e.g. 64,128,128; got {text!r}")
    return size
