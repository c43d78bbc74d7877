"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input (file, option, data) with a message that names the input and the problem."""


class InputFileError(UserError):
    """A file could not be used: missing, unreadable, corrupt, or of the wrong kind."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
