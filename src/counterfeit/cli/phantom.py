"""`counterfeit phantom` command."""

from counterfeit.cli.app import app, train_app  # noqa: F401
