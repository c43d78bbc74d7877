"""The `counterfeit` command and its `train` group. Commands live one module each in this package."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="counterfeit",
    help="Adversarial image synthesis: GAN toy lab, DCGAN, MR->CT CycleGAN, cascaded refinement networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train a model (recipes: cyclegan, paired, dcgan, crn).", no_args_is_help=True)
app.add_typer(train_app, name="train")
