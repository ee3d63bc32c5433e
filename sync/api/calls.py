"""The library's calls: the one place the API reaches into the engine.

Each call takes a loaded ``Config`` or the path of a config file, and returns a result record; none
prints. Engine modules are imported inside the calls, so ``import audiencesync`` stays light (the
state file's library, sqlite-utils, brings click along when a call first opens state).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

from audiencesync.results import LagReport, SyncReport
from audiencesync.sync.config import Config, parse_duration, resolve_config_path
from audiencesync.sync.config import load_config as _load_config
from audiencesync.sync.errors import InputError
from audiencesync.sync.progress import ProgressSink, no_progress

ConfigLike = Config | str | os.PathLike[str]
"""A loaded config, or the path of a config file to load."""


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate a config file.

    ``path`` defaults as the CLI's ``--config`` does: ``$AUDIENCE_SYNC_CONFIG``, then
    ``./audience-sync.toml``. Secrets named by ``*_env`` keys are read from ``environ`` (default
    ``os.environ``). Raises ``ConfigError`` listing every problem, each with its key path.
    """
    return _load_config(resolve_config_path(path), environ)


def plan(
    config: ConfigLike,
    *,
    only: str | None = None,
    allow_mass_remove: bool = False,
    plan_out: str | os.PathLike[str] | None = None,
    progress: ProgressSink | None = None,
) -> SyncReport:
    """Plan every target against its last-synced state; send nothing and write nothing to state.

    The same as ``sync_once(config, dry_run=True)``: what ``audience-sync sync --dry-run`` reports.
    ``plan_out`` saves the plan to that file, for ``sync_once(apply_plan=...)`` to push later.
    """
    return sync_once(
        config,
        dry_run=True,
        only=only,
        allow_mass_remove=allow_mass_remove,
        plan_out=plan_out,
        progress=progress,
    )


def sync_once(
    config: ConfigLike,
    *,
    dry_run: bool = False,
    only: str | None = None,
    allow_mass_remove: bool = False,
    plan_out: str | os.PathLike[str] | None = None,
    apply_plan: str | os.PathLike[str] | None = None,
    progress: ProgressSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    trigger: str = "api",
) -> SyncReport:
    """One run over the config's targets: plan each against state and push the adds and removes.

    What ``audience-sync sync`` does; named ``sync_once`` because ``audiencesync.sync`` is the engine's
    package. ``dry_run`` plans only (see ``plan``). ``only`` keeps the targets whose audience,
    destination or ``audience@destination`` key equals it. ``apply_plan`` pushes exactly a plan saved
    by ``plan_out`` (refused with ``StaleStateError`` if state moved on since) and takes no
    ``dry_run``, ``only`` or ``plan_out``. ``allow_mass_remove`` lets a plan through that the circuit
    breaker refuses. ``progress`` is called with a ``ProgressEvent`` as planning and pushing go;
    ``should_stop`` is checked between batches, and the run stops after the batch in flight when it
    returns True. ``trigger`` is what the run history records as having started the run.

    A destination that fails does not raise: its ``TargetResult`` says so and the report's
    ``exit_code`` is ``FAILED``. Bad input raises an ``InputError`` (config, source, plan file) or
    ``StateFileError`` (an unusable state file), and state is left as it was.
    """
    from audiencesync.sync.runner import sync_once as run_targets

    if apply_plan is not None and (dry_run or plan_out is not None or only is not None):
        raise InputError("apply_plan pushes a saved plan as it is: it takes no dry_run, plan_out or only")
    results = run_targets(
        _config(config),
        dry_run=dry_run,
        only=only,
        allow_mass_remove=allow_mass_remove,
        plan_out=None if plan_out is None else Path(plan_out),
        apply_plan=None if apply_plan is None else Path(apply_plan),
        trigger=trigger,
        should_stop=should_stop,
        progress=progress or no_progress,
    )
    return SyncReport(dry_run=dry_run, targets=tuple(results))


def lag_report(
    config: ConfigLike,
    *,
    since: str | timedelta = "7d",
    only: str | None = None,
    now: float | None = None,
    send_alerts: bool = False,
) -> LagReport:
    """Sync lag, pending work and coverage per target, with each target's SLO verdict.

    ``since`` is the window of lag records measured, as a ``timedelta`` or a duration such as
    ``"90m"``, ``"24h"`` or ``"7d"``; ``now`` (default: the clock) is where it ends. Lag records older
    than the config's ``lag_retention_days`` are pruned from state first, as every ``lag`` run does.
    ``send_alerts`` evaluates the config's ``[alerts]`` and sends the changes to its webhook.
    Raises ``InputError`` when the state file does not exist yet or ``only`` matches no target.
    """
    from audiencesync.state.store import StateStore
    from audiencesync.sync import alerts
    from audiencesync.sync.lag import lag_report as measure_lag
    from audiencesync.sync.lag import prune_lag

    loaded = _config(config)
    window = _seconds(since)
    if not loaded.state_path.exists():
        raise InputError(f"{loaded.state_path}: no state file yet; run `audience-sync sync` first")
    targets = loaded.targets(only)
    if not targets:
        raise InputError(f"--only {only}: no sync target matches (check audience or destination names)")
    now = time.time() if now is None else now
    store = StateStore.open(loaded.state_path)
    try:
        prune_lag(store, loaded.lag_retention_days, now)
        entries = measure_lag(loaded, store, since=now - window, now=now, targets=targets)
        if send_alerts:
            alerts.evaluate(
                store,
                entries,
                alerts.drift_threshold(loaded),
                alerts.sender_for(loaded),
                now,
                alerts.hold_for(loaded),
            )
    finally:
        store.close()
    return LagReport(generated_at=now, since=now - window, targets=tuple(entries))


def _config(config: ConfigLike) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def _seconds(since: str | timedelta) -> float:
    if isinstance(since, timedelta):
        return since.total_seconds()
    try:
        return parse_duration(since)
    except ValueError as exc:
        raise InputError(f"since: {exc}") from None
