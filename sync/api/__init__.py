"""audience-sync as a library: plan and push ad-platform audiences from Python, without the CLI.

    import audiencesync

    config = audiencesync.load_config("audience-sync.toml")
    report = audiencesync.plan(config)            # a dry run: nothing sent, state untouched
    for target in report.targets:
        print(target.plan.key, target.plan.total_adds, target.plan.total_removes)
    report = audiencesync.sync_once(config)       # plan and push
    print(report.to_json())
    lag = audiencesync.lag_report(config, since="24h")

Nothing here prints or configures logging: the engine logs to the ``audiencesync`` logger, which
has a ``NullHandler`` until the application sets up its own. Bad input raises an ``InputError``
(``ConfigError``, ``SourceError``, ``StaleStateError``) or a ``StateFileError``; a destination that
fails is reported in its ``TargetResult`` and in the report's ``exit_code``, not raised. The
platforms' errors are the ``ConnectorError`` family.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from audiencesync.calls import lag_report, load_config, plan, sync_once
from audiencesync.connectors.errors import (
    AudienceGone,
    AuthError,
    ConfigurationRejected,
    ConnectorError,
    FatalError,
    PermissionDenied,
    SchemaMismatch,
    TransientError,
)
from audiencesync.results import LagReport, SyncReport
from audiencesync.sync.config import Config
from audiencesync.sync.errors import ConfigError, InputError, SourceError, StaleStateError
from audiencesync.sync.progress import ProgressEvent
from audiencesync.sync.run_status import ExitCode, RunStatus

if TYPE_CHECKING:
    from audiencesync.state.db import StateFileError
    from audiencesync.sync.lag import TargetLag
    from audiencesync.sync.runner import TargetResult

if __name__ != "audiencesync":
    # sync/api/ is also reachable as audiencesync.sync.api from a checkout; a second copy would
    # have its own classes, and isinstance checks against the real ones would fail.
    raise ImportError(f"import audiencesync, not {__name__}")

# A library leaves logging to the application (logging HOWTO, "Configuring Logging for a Library").
logging.getLogger("audiencesync").addHandler(logging.NullHandler())

# Records that live beside the engine's heavier modules, loaded on first use.
_LAZY = {
    "StateFileError": "audiencesync.state.db",
    "TargetLag": "audiencesync.sync.lag",
    "TargetResult": "audiencesync.sync.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiencesync' has no attribute {name!r}")


__all__ = [
    "AudienceGone",
    "AuthError",
    "Config",
    "ConfigError",
    "ConfigurationRejected",
    "ConnectorError",
    "ExitCode",
    "FatalError",
    "InputError",
    "LagReport",
    "PermissionDenied",
    "ProgressEvent",
    "RunStatus",
    "SchemaMismatch",
    "SourceError",
    "StaleStateError",
    "StateFileError",
    "SyncReport",
    "TargetLag",
    "TargetResult",
    "TransientError",
    "lag_report",
    "load_config",
    "plan",
    "sync_once",
]
