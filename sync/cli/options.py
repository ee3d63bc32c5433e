"""What every ``audience-sync`` command shares on its input side: the ``--config`` option, loading
the config it names, and turning ``InputError`` into a message on stderr and its exit code (2).

Its own module because ``sync/cli/commands.py`` imports ``sync/cli/ops.py`` to register the operations
commands, and both need these.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from audiencesync.state.db import StateFileError
from audiencesync.sync.config import Config, load_config, resolve_config_path
from audiencesync.sync.errors import InputError
from audiencesync.sync.redact import redact
from rich.console import Console
from rich.markup import escape

F = TypeVar("F", bound=Callable[..., Any])

FILE = click.Path(dir_okay=False, path_type=Path)
"""The type of every option that names a file: a path, never a directory."""


def config_file_option(help: str, default: Path | None = None) -> Callable[[F], F]:
    """A ``--config`` option (as ``config_path``); a default path is shown in ``--help``."""
    return click.option(
        "--config", "config_path", type=FILE, default=default, show_default=default is not None, help=help
    )


config_option = config_file_option("Config file. Default: $AUDIENCE_SYNC_CONFIG, then ./audience-sync.toml.")


def input_errors(fn: F) -> F:
    """Turn ``InputError`` (and an unusable state file) into its message on stderr, tokens redacted,
    and its exit code (2)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InputError, StateFileError) as exc:
            Console(stderr=True, highlight=False).print(
                f"[red]error:[/red] {escape(redact(str(exc)))}", markup=True, soft_wrap=True
            )
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def load(config_path: Path | None) -> Config:
    """The config ``--config`` names, else ``$AUDIENCE_SYNC_CONFIG``, else ``./audience-sync.toml``."""
    return load_config(resolve_config_path(config_path))
