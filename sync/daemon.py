"""The daemon: every sync target on its own cron schedule, on APScheduler (3.x).

- One job per target (``[[syncs]].schedule``, 5-field crontab). Missed runs are coalesced into one,
  a random jitter spreads targets that share a schedule, and a job never overlaps itself. Across
  processes, the runner's lease (``state.lease``) keeps a cron ``sync`` and a daemon, or two daemons,
  from pushing one target together: a daemon job that finds its target busy skips the tick.
- One interval job follows the platforms between runs: pending handles (Google jobs) are polled,
  each audience's status is read back (which stamps ``ready_at`` on lag records), old lag records
  are pruned and alerts are evaluated. A scheduled push that lands while its target is being
  followed waits for that step and then runs: the daemon never skips its own schedule for it.
- SIGTERM or SIGINT: the batch in flight finishes and is saved, nothing new starts, exit 0.

When each job fires (crontab, jitter, missed runs, ``AUDIENCE_SYNC_TICK_SECONDS``) is
``audiencesync.sync.schedule``'s; what the follow step does is ``audiencesync.sync.follow``'s.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from audiencesync.connectors.contract import Connector
from audiencesync.connectors.registry import build_connector
from audiencesync.state.db import StateFileError
from audiencesync.state.lease import LeaseBusy
from audiencesync.state.store import StateStore
from audiencesync.sync import alerts
from audiencesync.sync.cli.lag_html import render_page
from audiencesync.sync.config import Config, Target
from audiencesync.sync.errors import InputError
from audiencesync.sync.follow import FollowStep
from audiencesync.sync.lag import lag_report, prune_lag
from audiencesync.sync.metrics import Metrics, MetricsServer
from audiencesync.sync.progress import ProgressLog
from audiencesync.sync.redact import redact
from audiencesync.sync.run_result import TargetResult
from audiencesync.sync.run_status import RunStatus
from audiencesync.sync.runner import RunOptions, SyncRunner, close_connectors
from audiencesync.sync.schedule import DaemonSchedule
from audiencesync.sync.status import StatusPage, build_status

log = logging.getLogger("audiencesync.daemon")

ALERT_WINDOW_S = 86_400.0
"""Alerts judge the SLO on the last day of lag records, so a breach resolves once lag recovers."""


@dataclass(frozen=True)
class DaemonOptions:
    """How the daemon runs; ``jitter_seconds``, ``misfire_grace_seconds`` and ``tick_seconds`` are
    its ``DaemonSchedule``'s."""

    jitter_seconds: int = 30
    misfire_grace_seconds: int = 600
    follow_interval_seconds: float = 60.0
    """How often pending jobs are polled and platform status read back between runs."""
    metrics_port: int | None = None
    tick_seconds: float | None = None

    @property
    def schedule(self) -> DaemonSchedule:
        """When the daemon's jobs fire."""
        return DaemonSchedule(self.jitter_seconds, self.misfire_grace_seconds, self.tick_seconds)


class Daemon:
    """Schedules every target of a config and follows the platforms between runs."""

    def __init__(self, config: Config, options: DaemonOptions, metrics: Metrics | None = None) -> None:
        self.config = config
        self.options = options
        self._page: StatusPage | None = None
        self._page_problem: str | None = None
        self.metrics = metrics or Metrics(config.targets(), page=lambda: self._page)
        self.stopping = threading.Event()
        self.schedule = options.schedule
        self.scheduler = BackgroundScheduler(job_defaults=self.schedule.job_defaults())
        self._metrics_server: MetricsServer | None = None
        self._last_follow: float | None = None
        # One lock per target, within this process: a scheduled push waits for the follow step of its
        # target to finish (a follow takes seconds) instead of finding the lease taken and skipping,
        # and the follow step skips a target whose push is under way (the push follows it itself).
        self._target_locks: dict[str, threading.Lock] = {t.key: threading.Lock() for t in config.targets()}

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        targets = self.config.targets()
        for target in targets:
            self.scheduler.add_job(
                self.run_target,
                self.schedule.target_trigger(target.sync.schedule),
                args=[target.key],
                id=target.key,
                name=f"sync {target.key}",
            )
        self.scheduler.add_job(
            self.follow_tick,
            self.schedule.follow_trigger(self.options.follow_interval_seconds),
            id="follow",
            name="follow and read back",
        )
        if self.options.metrics_port is not None:
            self.refresh_status()
            self._metrics_server = MetricsServer(
                self.metrics, self.options.metrics_port, self.health, self.status_html
            ).start()
        self.scheduler.start()
        log.info(
            "daemon started",
            extra={
                "targets": len(targets),
                "tick_seconds": self.options.tick_seconds,
                "follow_interval": self.options.follow_interval_seconds,
                "metrics_port": self._metrics_server.port if self._metrics_server else None,
                "pid": os.getpid(),
            },
        )

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Finish the batch in flight, start nothing new."""
        if not self.stopping.is_set():
            log.info("stop requested", extra={"signal": signal.Signals(signum).name if signum else None})
        self.stopping.set()

    def shutdown(self) -> None:
        self.stopping.set()
        # wait=True: a running job sees ``stopping`` between batches, saves and returns.
        self.scheduler.shutdown(wait=True)
        if self._metrics_server is not None:
            self._metrics_server.stop()
        log.info("daemon stopped")

    def run_forever(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit code (0)."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            self.shutdown()
        return 0

    def health(self) -> dict[str, Any]:
        """``/healthz``: the daemon's state and the problems worth restarting or paging for."""
        running = self.scheduler.running
        state = "stopping" if self.stopping.is_set() else "running" if running else "starting"
        problems = []
        if self.stopping.is_set():
            problems.append("stop requested")
        elif not running:
            problems.append("scheduler not running")
        if self._page_problem:
            problems.append(self._page_problem)
        return {
            "ok": not problems,
            "state": state,
            "problems": problems,
            "jobs": len(self.scheduler.get_jobs()) if running else 0,
            "targets": len(self.config.targets()),
            "last_follow": self._last_follow,
            "status_at": self._page.generated_at if self._page else None,
        }

    def refresh_status(self) -> None:
        """Re-read the status page's model (the state file, and the source for in-flow coverage); the
        status page and the state-file metrics show the latest one."""
        if self.options.metrics_port is None:
            return
        try:
            store = StateStore.open(self.config.state_path)
            try:
                self._page = build_status(self.config, store, since=time.time() - ALERT_WINDOW_S)
            finally:
                store.close()
            self._page_problem = None
        except Exception as exc:  # the state or source being unreadable is shown, not fatal
            self._page_problem = f"status unreadable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log.warning("status refresh failed", extra={"error": self._page_problem})

    def status_html(self) -> str:
        page = self._page
        if page is None:
            return "<!DOCTYPE html><title>audience-sync status</title><p>No status yet.</p>\n"
        page.daemon = self.health()
        return render_page(page, refresh_seconds=30)

    # --- jobs ----------------------------------------------------------------------------------
    def run_target(self, key: str) -> None:
        """One scheduled run of one target: plan, push under the lease, record, alert."""
        if self.stopping.is_set():
            return
        started = time.monotonic()
        with self._target_locks.setdefault(key, threading.Lock()):
            self._run_target(key, started)

    def _run_target(self, key: str, started: float) -> None:
        try:
            store = StateStore.open(self.config.state_path)
        except StateFileError as exc:
            # Corrupt, locked, read-only or newer: one line, the file left as it is, the schedule kept.
            self._refused(key, exc)
            return
        try:
            options = RunOptions(
                targets=(key,),
                trigger="daemon",
                should_stop=self.stopping.is_set,
                lease_wait=0.0,
                progress=ProgressLog(),
            )
            results = SyncRunner(self.config, store, options).run()
            for result in results:
                self._count(result, time.monotonic() - started)
            self._alert(store, [t for t in self.config.targets() if t.key == key])
        except (InputError, StateFileError) as exc:
            # The source or state file is unusable, or the config no longer fits it: nothing was written.
            self._refused(key, exc)
        except Exception as exc:  # one broken run must not stop the schedule of every other target
            self.metrics.inc("audience_sync_runs_total", target=key, status="crashed")
            self.metrics.inc("audience_sync_run_errors_total", target=key)
            log.exception("run crashed", extra={"target": key, "error": type(exc).__name__})
        finally:
            store.close()
            self.refresh_status()

    def _refused(self, key: str, exc: Exception) -> None:
        self.metrics.inc("audience_sync_runs_total", target=key, status="input_error")
        self.metrics.inc("audience_sync_run_errors_total", target=key)
        log.error("run refused", extra={"target": key, "error": redact(str(exc).splitlines()[0])})

    def _count(self, result: TargetResult, duration: float) -> None:
        key, status = result.plan.key, result.status
        if status == RunStatus.BUSY:
            self.metrics.inc("audience_sync_busy_total", target=key)
            log.info("target busy: skipped this tick", extra={"target": key})
            return
        self.metrics.inc("audience_sync_runs_total", target=key, status=status)
        if status in (RunStatus.ERROR, RunStatus.PARTIAL, RunStatus.BREAKER):
            self.metrics.inc("audience_sync_run_errors_total", target=key)
        now = time.time()
        self.metrics.set("audience_sync_last_run_timestamp_seconds", now, target=key)
        self.metrics.set("audience_sync_run_duration_seconds", duration, target=key)

    def follow_tick(self) -> None:
        """Between runs: poll pending handles, read back each audience, prune lag, evaluate alerts."""
        store = StateStore.open(self.config.state_path)
        connectors: dict[str, Connector] = {}
        try:
            for target in self.config.targets():
                if self.stopping.is_set():
                    return
                self._follow_target(store, target, connectors)
            prune_lag(store, self.config.lag_retention_days)
            self._alert(store, self.config.targets())
            self._last_follow = time.time()
        except Exception as exc:
            self.metrics.inc("audience_sync_follow_errors_total", target="*")
            log.exception("follow tick failed", extra={"error": type(exc).__name__})
        finally:
            close_connectors(connectors.values())
            store.close()
            self.refresh_status()

    def _follow_target(self, store: StateStore, target: Target, connectors: dict[str, Connector]) -> None:
        row = store.find_target(target.key)
        if row is None or row.platform_audience_id is None:
            return
        lock = self._target_locks.setdefault(target.key, threading.Lock())
        if not lock.acquire(blocking=False):
            return  # its push is under way and follows it itself
        try:
            self._follow_leased(store, target, row.id, row.platform_audience_id, connectors)
        finally:
            lock.release()

    def _follow_leased(
        self,
        store: StateStore,
        target: Target,
        target_id: int,
        audience_id: str,
        connectors: dict[str, Connector],
    ) -> None:
        try:
            # No wait: a target being pushed is followed by its own run.
            with store.lease(target_id, wait=0.0):
                dest = target.destination.name
                if dest not in connectors:
                    connectors[dest] = build_connector(target.destination)
                step = FollowStep(store, connectors[dest], target.key, target_id, audience_id)
                step.follow(lambda: store.runs.latest_id(target_id))
                read = step.read_back()
            if read is None:
                self.metrics.inc("audience_sync_follow_errors_total", target=target.key)
        except LeaseBusy:
            return
        except Exception as exc:  # a platform outage between runs is the next run's business
            self.metrics.inc("audience_sync_follow_errors_total", target=target.key)
            log.warning(
                "follow failed", extra={"target": target.key, "error": f"{type(exc).__name__}: {exc}"}
            )

    def _alert(self, store: StateStore, targets: list[Target]) -> None:
        entries = lag_report(
            self.config, store, since=time.time() - ALERT_WINDOW_S, with_coverage=False, targets=targets
        )
        sent = alerts.evaluate(
            store,
            entries,
            alerts.drift_threshold(self.config),
            alerts.sender_for(self.config),
            hold=alerts.hold_for(self.config),
        )
        for alert in sent:
            self.metrics.inc(
                "audience_sync_alerts_total", kind=alert.kind, state="firing" if alert.firing else "resolved"
            )


def run_daemon(config: Config, options: DaemonOptions) -> int:
    """What ``audience-sync daemon`` does: run until SIGTERM or SIGINT, then exit 0."""
    return Daemon(config, options).run_forever()
