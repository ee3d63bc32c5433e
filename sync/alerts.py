"""Alerts: a Slack-compatible webhook (``{"text": ...}``) when a target's health changes.

Five kinds, each judged per target from state: ``slo`` (the lag report's verdict), ``run_failed``
(the last run ended in error or partial), ``breaker`` (the last run was refused by the circuit
breaker), ``audience_gone`` (the platform audience was deleted or flagged) and ``drift`` (the
platform's size differs from the members state holds by more than ``[alerts] drift_threshold``).

An alert goes out once per change of state, firing and resolved, never on every tick: the last
state sent is kept in the ``alert_state`` table. Hysteresis: a change is sent only once the new state
held for ``[alerts] hold_evaluations`` evaluations in a row (default 2) and ``hold_seconds`` seconds
(default 0), so a condition that flickers (a drift seen between a push and its read-back) sends
nothing. A webhook that fails is tried again on the next
evaluation, since its state change is only recorded once delivered.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests
import sqlite_utils
from audiencesync.state.db import atomic
from audiencesync.sync.config import Config
from audiencesync.sync.lag import SLO_BREACH, TargetLag
from audiencesync.sync.run_status import FAILED, RunStatus

log = logging.getLogger("audiencesync.alerts")

DEFAULT_DRIFT_THRESHOLD = 0.1
DEFAULT_HOLD_EVALUATIONS = 2
KINDS = ("slo", "run_failed", "breaker", "audience_gone", "drift")


@dataclass(frozen=True)
class Condition:
    """One kind of alert for one target, as judged now."""

    kind: str
    firing: bool
    detail: str


@dataclass(frozen=True)
class Alert:
    target: str
    kind: str
    firing: bool
    detail: str

    @property
    def text(self) -> str:
        verb = "FIRING" if self.firing else "resolved"
        return f"audience-sync {verb}: {self.kind} on {self.target}: {self.detail}"


Sender = Callable[[str], bool]


def webhook_sender(url: str | None, timeout: float = 10.0) -> Sender:
    """Posts ``{"text": ...}`` to ``url``; without a URL, alerts are only logged."""

    def send(text: str) -> bool:
        if url is None:
            return True
        try:
            response = requests.post(url, json={"text": text}, timeout=timeout)
        except requests.RequestException as exc:
            log.warning("alert webhook unreachable", extra={"error": type(exc).__name__})
            return False
        if response.status_code >= 300:
            log.warning("alert webhook refused the alert", extra={"status": response.status_code})
            return False
        return True

    return send


def sender_for(config: Config) -> Sender:
    """The webhook named by ``[alerts] webhook_url_env``, read from the environment."""
    env_name = config.alerts.get("webhook_url_env")
    url = os.environ.get(str(env_name)) if env_name else None
    return webhook_sender(url or None)


def drift_threshold(config: Config) -> float:
    value = config.alerts.get("drift_threshold", DEFAULT_DRIFT_THRESHOLD)
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else DEFAULT_DRIFT_THRESHOLD
    )


@dataclass(frozen=True)
class Hold:
    """How long a change of state must hold before it is sent (``[alerts] hold_*``)."""

    evaluations: int = DEFAULT_HOLD_EVALUATIONS
    seconds: float = 0.0


def hold_for(config: Config) -> Hold:
    evaluations = config.alerts.get("hold_evaluations", DEFAULT_HOLD_EVALUATIONS)
    seconds = config.alerts.get("hold_seconds", 0.0)
    return Hold(int(evaluations), float(seconds))


def drift(entry: TargetLag) -> float | None:
    """How far the platform's size is from state's member count, as a fraction of the members; None
    when the platform gives no size or is still processing (sizes lag changes then)."""
    if entry.platform_size is None or not entry.platform_ready:
        return None
    low, high = entry.platform_size
    if low is None and high is None:
        return None
    low = low if low is not None else high
    high = high if high is not None else low
    assert low is not None and high is not None
    members = entry.members
    gap = 0 if low <= members <= high else min(abs(members - low), abs(members - high))
    return gap / max(members, 1)


def _last_run_status(db: sqlite_utils.Database, target: str) -> tuple[str | None, str | None]:
    row = db.execute(
        "SELECT r.status, r.error FROM runs r JOIN targets t ON t.id = r.target_id "
        "WHERE t.key = ? AND r.status != 'running' ORDER BY r.id DESC LIMIT 1",
        [target],
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def conditions(db: sqlite_utils.Database, entry: TargetLag, threshold: float) -> list[Condition]:
    """Every alert kind for one target, judged from its lag-report entry and its last run."""
    status, error = _last_run_status(db, entry.target)
    error = error or ""
    gap = drift(entry)
    return [
        Condition(
            "slo",
            entry.slo == SLO_BREACH,
            "; ".join(entry.slo_reasons) if entry.slo == SLO_BREACH else "within max_lag",
        ),
        Condition(
            "run_failed",
            status in FAILED,
            f"last run {status}: {error}" if status in FAILED else f"last run {status}",
        ),
        Condition("breaker", status == RunStatus.BREAKER, error or f"last run {status}"),
        Condition(
            "audience_gone",
            error.startswith("AudienceGone"),
            error if error.startswith("AudienceGone") else "audience usable",
        ),
        Condition(
            "drift",
            gap is not None and gap > threshold,
            f"platform size {entry.platform_size} vs {entry.members} members in state "
            f"({(gap or 0):.0%} apart, threshold {threshold:.0%})",
        ),
    ]


def evaluate(
    db: sqlite_utils.Database,
    entries: Sequence[TargetLag],
    threshold: float,
    send: Sender,
    now: float | None = None,
    hold: Hold | None = None,
) -> list[Alert]:
    """Compare each target's conditions with the state last sent; send and record every change that
    held long enough (``hold``). Returns the alerts that were delivered."""
    now = time.time() if now is None else now
    hold = hold or Hold()
    delivered: list[Alert] = []
    for entry in entries:
        row = db.execute("SELECT id FROM targets WHERE key = ?", [entry.target]).fetchone()
        if row is None:
            continue
        tid = int(row[0])
        known = {
            kind: (bool(firing), pending, since, int(count or 0))
            for kind, firing, pending, since, count in db.execute(
                "SELECT kind, firing, pending, pending_since, pending_count FROM alert_state WHERE target_id = ?",
                [tid],
            )
        }
        for cond in conditions(db, entry, threshold):
            # A kind never seen before counts as not firing: a healthy start sends nothing.
            firing, pending, since, count = known.get(cond.kind, (False, None, None, 0))
            if firing == cond.firing:
                if pending is not None:  # it flickered back before it held: forget the change
                    _save_pending(db, tid, cond.kind, firing, None, None, 0, now)
                continue
            if pending is None or bool(pending) != cond.firing:
                since, count = now, 0
            count += 1
            assert since is not None
            if count < hold.evaluations or now - since < hold.seconds:
                _save_pending(db, tid, cond.kind, firing, cond.firing, since, count, now)
                continue
            alert = Alert(entry.target, cond.kind, cond.firing, cond.detail)
            if not send(alert.text):
                _save_pending(db, tid, cond.kind, firing, cond.firing, since, count, now)
                continue
            log.log(logging.WARNING if cond.firing else logging.INFO, alert.text)
            with atomic(db) as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO alert_state (target_id, kind, firing, detail, changed_at, notified_at, "
                    "pending, pending_since, pending_count) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, 0)",
                    [tid, cond.kind, int(cond.firing), cond.detail[:500], now, now],
                )
            delivered.append(alert)
    return delivered


def _save_pending(
    db: sqlite_utils.Database,
    tid: int,
    kind: str,
    firing: bool,
    pending: bool | None,
    since: float | None,
    count: int,
    now: float,
) -> None:
    with atomic(db) as conn:
        conn.execute(
            "INSERT INTO alert_state (target_id, kind, firing, changed_at, pending, pending_since, pending_count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target_id, kind) DO UPDATE SET "
            "pending = excluded.pending, pending_since = excluded.pending_since, "
            "pending_count = excluded.pending_count",
            [tid, kind, int(firing), now, None if pending is None else int(pending), since, count],
        )
