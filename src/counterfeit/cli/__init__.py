"""Command-line interface. Each command module registers itself on `app` when imported.

Heavy imports (torch, SimpleITK) happen inside command bodies so that `--help` is fast.
"""

from __future__ import annotations

import sys

from counterfeit.cli.app import app

# Importing registers the commands; order = order in `counterfeit --help`.
from counterfeit.cli import (  # noqa: E402,F401
    demo,
    toy,
    phantom,
    train_cyclegan,
    train_dcgan,
    train_crn,
    synthesize,
    evaluate,
    sample,
)
from counterfeit.errors import UserError  # noqa: E402


def main() -> None:
    """Entry point: user errors print one clear line, not a traceback."""
    try:
        app()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
