"""Run statuses and exit codes: the one vocabulary that logs, ``runs``, ``/metrics``, the report,
alerts and the CLI's exit codes share."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class RunStatus(StrEnum):
    """How one target's run ended. The value is what state's ``runs.status`` holds and what every
    log line, table and metric label shows."""

    PLANNED = "planned"
    """A dry run: nothing sent."""
    RUNNING = "running"
    """Only while a run is under way (state's row before it finishes)."""
    OK = "ok"
    PARTIAL = "partial"
    """Transient errors left work queued for the next run."""
    ERROR = "error"
    BREAKER = "breaker"
    """The circuit breaker refused the plan."""
    STOPPED = "stopped"
    """SIGTERM, SIGINT or a lost lease stopped the run after the batch in flight was saved."""
    BUSY = "busy"
    """Another process held the target; nothing pushed (never recorded as a run)."""


FAILED = frozenset({RunStatus.ERROR, RunStatus.PARTIAL})


class ExitCode(IntEnum):
    """Exit codes of ``audience-sync``, documented in the README."""

    OK = 0
    FAILED = 1
    """A destination failed or is unreachable; the outbox keeps what was not sent."""
    BAD_INPUT = 2
    """Bad config, source, plan file or flag (``--only`` matching nothing); state untouched."""
    BREAKER = 3
    """A circuit breaker refused a plan."""
    SLO_BREACH = 4
    """``lag``: a target breaches its max_lag."""
    INVALID_VALUE = 5
    """``hash``: at least one value is not a valid identifier."""
    PORT_BUSY = 6
    """``demo`` / ``emulator``: a port the config names is taken by another program."""
    SIGINT = 130
    """Stopped by SIGINT (Ctrl-C) after the batch in flight was saved (128 + 2, the shell's convention)."""
    SIGTERM = 143
    """Stopped by SIGTERM after the batch in flight was saved (128 + 15)."""
