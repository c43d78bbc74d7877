"""`counterfeit synthesize`: run a trained model on new inputs.

MR -> CT runs (cyclegan, paired): `--input MR --output sCT`, a volume file to a volume file or a
folder to a folder. CRN runs: `--layout L.png ... --output DIR`. The kind of model is read from
the run's config.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from counterfeit.cli.app import app, train_app  # noqa: F401


SCT_DTYPES = ("float32", "int16")


@app.command("synthesize")
def synthesize(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained model (cyclegan, paired or crn).")],
    input_path: Annotated[Optional[Path], typer.Option("--input", "-i", help="MR volume file, DICOM series folder, or folder of MR volumes.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "--out", "-o", help="Synthetic CT file (format from its extension) or folder; for --layout, the output folder.")] = None,
    layout: Annotated[Optional[List[Path]], typer.Option("--layout", help="CRN runs: semantic layout PNG (repeat for several). Writes <name>_k0.png ... (8-bit RGB; one-channel models: 16-bit grayscale, 0 ... 65535 spanning the network's [-1, 1], which for a phantom-ct run is -1024 ... 3000 HU linearly: HU = -1024 + value * 4024 / 65535) and <name>_montage.png.")] = None,
    input_name: Annotated[Optional[str], typer.Option("--input-name", help="Folder input with one sub-folder per subject: the MR file inside each (e.g. mr.nii.gz for a phantom root).")] = None,
    suffix: Annotated[str, typer.Option("--suffix", help="Folder input: extension of the outputs (.nii.gz, .nii, .mha, .mhd, .nrrd).")] = ".nii.gz",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Slices per forward pass.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N].")] = "auto",
    weights: Annotated[str, typer.Option("--weights", help="MR -> CT runs: best (the checkpoint with the lowest validation MAE, when the run kept one with --keep-best) or latest.")] = "best",
    dtype: Annotated[str, typer.Option("--dtype", help="MR -> CT runs: voxel type of the synthetic CT: float32 (HU as computed) | int16 (HU rounded to integers, as scanners store CT; half the size).")] = "float32",
) -> None:
    """Synthetic CT from MR with a cyclegan/paired run, or images from layouts with a crn run."""
    from counterfeit.errors import UserError
    from counterfeit.train.loop import WEIGHTS, read_run_config

    kind = read_run_config(model).get("recipe")
    if output is None:
        raise UserError("synthesize: give --output (a file or folder)")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if weights not in WEIGHTS:
        raise UserError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if dtype not in SCT_DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(SCT_DTYPES)}, got {dtype!r}")
    if kind == "crn":
        if input_path is not None or not layout:
            raise UserError(f"{model} is a crn (layout -> image) run: give --layout L.png (and --output DIR), not --input")
        from counterfeit.layout_synthesis import synthesize_from_layouts

        written = synthesize_from_layouts(model, list(layout), output, device)
        montages = sum(p.stem.endswith("_montage") for p in written)
        typer.echo(f"wrote {len(written) - montages} image(s) and {montages} montage(s) (layout beside its images) "
                   f"to {output}")
        return

    from counterfeit.medical.synthesize import MR2CT_RECIPES, load_mr2ct_run, synthesize_path

    if kind not in MR2CT_RECIPES:
        raise UserError(f"{model}: a {kind!r} run cannot synthesize (MR -> CT needs cyclegan or paired, layouts need crn; "
                        "sample a dcgan run with `counterfeit sample`)")
    if layout:
        raise UserError(f"{model} is a {kind} (MR -> CT) run: --layout needs a crn run; give --input MR instead")
    if input_path is None:
        raise UserError(f"{model} is a {kind} (MR -> CT) run: give --input MR (file or folder)")
    recipe = load_mr2ct_run(model, device, weights)
    typer.echo(f"model: {recipe.checkpoint} ({recipe.checkpoint_choice})")
    results = synthesize_path(model, input_path, output, device, input_name=input_name, suffix=suffix,
                              batch_size=batch_size, model=recipe, dtype=dtype)
    for path, seconds in results:
        typer.echo(f"wrote {path} ({seconds:.2f} s)")
    mean = sum(s for _, s in results) / len(results)
    typer.echo(f"{len(results)} volume(s), {mean:.2f} s per volume")
