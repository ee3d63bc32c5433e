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
from enum import StrEnum

import requests
from audiencesync.state.alert_store import AlertState
from audiencesync.state.store import StateStore
from audiencesync.sync.config import Config
from audiencesync.sync.lag import SLO_BREACH, TargetLag
from audiencesync.sync.run_status import FAILED, RunStatus

log = logging.getLogger("audiencesync.alerts")

DEFAULT_DRIFT_THRESHOLD = 0.1
DEFAULT_HOLD_EVALUATIONS = 2


class AlertKind(StrEnum):
    """What an alert is about; the value is what ``alert_state.kind`` holds and the metrics label."""

    SLO = "slo"
    RUN_FAILED = "run_failed"
    BREAKER = "breaker"
    AUDIENCE_GONE = "audience_gone"
    DRIFT = "drift"


KINDS = tuple(AlertKind)


@dataclass(frozen=True)
class Condition:
    """One kind of alert for one target, as judged now."""

    kind: AlertKind
    firing: bool
    detail: str


@dataclass(frozen=True)
class Alert:
    target: str
    kind: AlertKind
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


def conditions(store: StateStore, entry: TargetLag, threshold: float) -> list[Condition]:
    """Every alert kind for one target, judged from its lag-report entry and its last run."""
    last = store.runs.last_finished(entry.target)
    status, error = (last.status, last.error or "") if last else (None, "")
    gap = drift(entry)
    return [
        Condition(
            AlertKind.SLO,
            entry.slo == SLO_BREACH,
            "; ".join(entry.slo_reasons) if entry.slo == SLO_BREACH else "within max_lag",
        ),
        Condition(
            AlertKind.RUN_FAILED,
            status in FAILED,
            f"last run {status}: {error}" if status in FAILED else f"last run {status}",
        ),
        Condition(AlertKind.BREAKER, status == RunStatus.BREAKER, error or f"last run {status}"),
        Condition(
            AlertKind.AUDIENCE_GONE,
            error.startswith("AudienceGone"),
            error if error.startswith("AudienceGone") else "audience usable",
        ),
        Condition(
            AlertKind.DRIFT,
            gap is not None and gap > threshold,
            f"platform size {entry.platform_size} vs {entry.members} members in state "
            f"({(gap or 0):.0%} apart, threshold {threshold:.0%})",
        ),
    ]


def evaluate(
    store: StateStore,
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
        target = store.find_target(entry.target)
        if target is None:
            continue
        tid = target.id
        known = store.alerts.known(tid)
        for cond in conditions(store, entry, threshold):
            # A kind never seen before counts as not firing: a healthy start sends nothing.
            was = known.get(cond.kind, AlertState(firing=False))
            firing, pending, since, count = was.firing, was.pending, was.pending_since, was.pending_count
            if firing == cond.firing:
                if pending is not None:  # it flickered back before it held: forget the change
                    store.alerts.save_pending(tid, cond.kind, AlertState(firing), now)
                continue
            if pending is None or pending != cond.firing:
                since, count = now, 0
            count += 1
            assert since is not None
            held_change = AlertState(firing, cond.firing, since, count)
            if count < hold.evaluations or now - since < hold.seconds:
                store.alerts.save_pending(tid, cond.kind, held_change, now)
                continue
            alert = Alert(entry.target, cond.kind, cond.firing, cond.detail)
            if not send(alert.text):
                store.alerts.save_pending(tid, cond.kind, held_change, now)
                continue
            log.log(logging.WARNING if cond.firing else logging.INFO, alert.text)
            store.alerts.record_delivered(tid, cond.kind, cond.firing, cond.detail, now)
            delivered.append(alert)
    return delivered
