"""The ``alert_state`` table: per target and alert kind, the state last delivered and a change of
state that has not held long enough to be sent yet."""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils
from audiencesync.state.db import atomic

DETAIL_KEPT = 500
"""Characters of an alert's detail kept: enough for the message, bounded for the file."""


@dataclass(frozen=True)
class AlertState:
    """What state knows of one alert kind of one target."""

    firing: bool
    """The state last delivered."""
    pending: bool | None = None
    """The state the condition shows now, when it differs from ``firing`` and has not been sent."""
    pending_since: float | None = None
    pending_count: int = 0
    """Evaluations in a row that showed ``pending``."""


class AlertStateStore:
    """Reads and writes ``alert_state``; each write is its own transaction."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def known(self, target_id: int) -> dict[str, AlertState]:
        """Every alert kind state holds for the target, by kind."""
        return {
            str(kind): AlertState(
                bool(firing), None if pending is None else bool(pending), since, int(count or 0)
            )
            for kind, firing, pending, since, count in self.db.execute(
                "SELECT kind, firing, pending, pending_since, pending_count FROM alert_state WHERE target_id = ?",
                [target_id],
            )
        }

    def save_pending(self, target_id: int, kind: str, state: AlertState, now: float) -> None:
        """Keep a change of state that is not sent yet (or forget it: ``pending`` None). A kind seen
        for the first time is recorded with ``state.firing`` as its delivered state."""
        pending = None if state.pending is None else int(state.pending)
        with atomic(self.db) as conn:
            conn.execute(
                "INSERT INTO alert_state (target_id, kind, firing, changed_at, pending, pending_since, "
                "pending_count) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target_id, kind) DO UPDATE SET "
                "pending = excluded.pending, pending_since = excluded.pending_since, "
                "pending_count = excluded.pending_count",
                [target_id, kind, int(state.firing), now, pending, state.pending_since, state.pending_count],
            )

    def record_delivered(self, target_id: int, kind: str, firing: bool, detail: str, now: float) -> None:
        """The webhook took the change to ``firing``: it is now the delivered state, nothing pending."""
        with atomic(self.db) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO alert_state (target_id, kind, firing, detail, changed_at, notified_at, "
                "pending, pending_since, pending_count) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, 0)",
                [target_id, kind, int(firing), detail[:DETAIL_KEPT], now, now],
            )
