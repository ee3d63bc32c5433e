"""Errors the CLI turns into a short message and exit code 2: bad input, named by file and key or row."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class InputError(Exception):
    """Bad input from the user's side. State is never touched when one is raised."""

    exit_code = 2


class ConfigError(InputError):
    """Every problem found in a config file, each as ``key.path: message``."""

    def __init__(self, file: Path, problems: Sequence[str]) -> None:
        self.file = file
        self.problems = list(problems)
        if len(self.problems) == 1:
            # One problem, one line: the file and the key path with what is wrong.
            super().__init__(f"{file}: {self.problems[0]}")
            return
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{file}: {len(self.problems)} problem(s)\n{lines}")


class SourceError(InputError):
    """The source could not be read: a missing file, an unreadable row, a SQL error."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


class StaleStateError(InputError):
    """A saved plan no longer matches state: someone synced since it was made."""
