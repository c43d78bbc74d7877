"""`counterfeit train ...` command(s) for this recipe."""

from counterfeit.cli.app import app, train_app  # noqa: F401
