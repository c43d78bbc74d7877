"""Command-line interface. Each command module registers itself on `app` when imported.

Heavy imports (torch, SimpleITK) happen inside command bodies so that `--help` is fast.
"""

from __future__ import annotations

import signal
import sys
import warnings

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
    """Entry point: user errors print one clear line, not a traceback; so do the toolkit's warnings."""
    warnings.formatwarning = _format_warning
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # training replaces this with its own: checkpoint, then stop
    try:
        app()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))  # 130/143 for a run stopped by a signal (`RunStopped`)


_python_format_warning = warnings.formatwarning


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """`warning: <message>` for the warnings meant for users (UserWarning); Python's format for the rest."""
    if issubclass(category, UserWarning):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM outside training (reading data, evaluating, between a budget's phases): exit at once with the
    shell's code for it, running `finally` blocks (temporary files are removed), without a traceback."""
    print("error: terminated (SIGTERM)", file=sys.stderr)
    raise SystemExit(128 + signum)
