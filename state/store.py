"""The state file's front door: ``StateStore`` opens it and holds per-target bookkeeping (the target
row, the platform's read-back status, upload sessions), with the run history (``runs``), the lag
records (``lag``) and the alert state (``alerts``) as its parts."""

from __future__ import annotations

import json
import secrets
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from audiencesync.connectors.contract import PlatformStatus
from audiencesync.state.alert_store import AlertStateStore
from audiencesync.state.db import atomic, connect
from audiencesync.state.lag_store import LagStore
from audiencesync.state.lease import DEFAULT_TTL_S, Lease, held
from audiencesync.state.outbox_values import OutboxStatus
from audiencesync.state.run_log import RUN_COUNTS, RunLog
from audiencesync.state.sealed import bind_key_file

__all__ = ["RUN_COUNTS", "SESSION_MAX_AGE_S", "StateStore", "TargetRow"]

# Meta closes an upload session 90 minutes after its first batch when no batch carried
# last_batch_flag (developers.facebook.com/docs/marketing-api/reference/custom-audience/users); start
# a new one well before. The
# runner also starts a new session for every push (connectors/meta/payload.py lists the assumptions).
SESSION_MAX_AGE_S = 80 * 60


@dataclass(frozen=True)
class TargetRow:
    id: int
    key: str
    platform_audience_id: str | None
    schema: tuple[str, ...] | None
    state_version: int


class StateStore:
    """The state file. Open one per process; every write is one ``atomic`` transaction."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.runs = RunLog(db)
        self.lag = LagStore(db)
        self.alerts = AlertStateStore(db)

    @classmethod
    def open(cls, path: Path) -> StateStore:
        return cls(connect(path))

    @classmethod
    def open_memory(cls, key_of: Path | None = None) -> StateStore:
        """An empty in-memory state, for dry runs before the first sync. With ``key_of``, values it
        seals use that state file's key, so a plan saved from it can be applied there."""
        store = cls(connect(None))
        bind_key_file(store.db.conn, key_of)
        return store

    def close(self) -> None:
        bind_key_file(self.db.conn, None)
        self.db.conn.close()

    def lease(
        self, target_id: int, *, wait: float = 0.0, ttl: float = DEFAULT_TTL_S
    ) -> AbstractContextManager[Lease]:
        """Hold the target's lease for a block (``state.lease.held``); ``LeaseBusy`` when another
        process keeps it past ``wait`` seconds."""
        return held(self.db, target_id, wait=wait, ttl=ttl)

    def transaction(self) -> AbstractContextManager[Any]:
        """One write transaction (``state.db.atomic``) around several store calls, each of which
        then runs in a savepoint of it."""
        return atomic(self.db)

    # --- targets -------------------------------------------------------------------------------
    def find_target(self, key: str) -> TargetRow | None:
        row = self.db.execute(
            "SELECT id, key, platform_audience_id, schema, state_version FROM targets WHERE key = ?", [key]
        ).fetchone()
        if row is None:
            return None
        schema = tuple(json.loads(row[3])) if row[3] else None
        return TargetRow(row[0], row[1], row[2], schema, row[4])

    def ensure_target(self, key: str, audience: str, destination: str, platform: str) -> TargetRow:
        with atomic(self.db) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO targets (key, audience, destination, platform, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [key, audience, destination, platform, time.time()],
            )
        row = self.find_target(key)
        assert row is not None
        return row

    def forget_target(self, key: str) -> None:
        """Drop everything state knows about a target (its platform copy is gone, as an emulator's is
        when it restarts)."""
        row = self.find_target(key)
        if row is None:
            return
        with atomic(self.db) as conn:
            for table in (
                "members",
                "outbox",
                "rejections",
                "lag",
                "platform_status",
                "push_sessions",
                "leases",
                # Target ids are reused once the highest is deleted: a firing alert left behind would
                # belong to the next new target.
                "alert_state",
                "plan_watermarks",
            ):
                conn.execute(f"DELETE FROM {table} WHERE target_id = ?", [row.id])
            conn.execute(
                "DELETE FROM run_rejections WHERE run_id IN (SELECT id FROM runs WHERE target_id = ?)",
                [row.id],
            )
            conn.execute("DELETE FROM runs WHERE target_id = ?", [row.id])
            conn.execute("DELETE FROM targets WHERE id = ?", [row.id])

    def target_summaries(self) -> list[dict[str, Any]]:
        """Every target state knows, by key: its platform audience, members, pending changes and last run."""
        rows = self.db.execute(
            "SELECT t.key, t.platform, t.platform_audience_id, "
            "(SELECT count(*) FROM members m WHERE m.target_id = t.id), "
            "(SELECT count(*) FROM outbox o WHERE o.target_id = t.id AND o.status = ?), "
            "(SELECT count(*) FROM outbox o WHERE o.target_id = t.id AND o.status = ?), "
            "(SELECT r.status FROM runs r WHERE r.target_id = t.id ORDER BY r.id DESC LIMIT 1), "
            "t.last_success_at FROM targets t ORDER BY t.key",
            [OutboxStatus.QUEUED, OutboxStatus.IN_FLIGHT],
        ).fetchall()
        names = (
            "key",
            "platform",
            "audience_id",
            "members",
            "queued",
            "in_flight",
            "last_status",
            "last_success_at",
        )
        return [dict(zip(names, row, strict=True)) for row in rows]

    def record_audience(self, target_id: int, audience_id: str, schema: tuple[str, ...]) -> None:
        with atomic(self.db) as conn:
            conn.execute(
                "UPDATE targets SET platform_audience_id = ?, schema = ? WHERE id = ?",
                [audience_id, json.dumps(list(schema)), target_id],
            )

    def target_ids(self) -> dict[str, int]:
        """Target key to its id in the state file."""
        return {str(key): int(tid) for tid, key in self.db.execute("SELECT id, key FROM targets")}

    def rejections_by_reason(self) -> dict[str, dict[str, int]]:
        """Per target key, the members the platform currently rejects, by the reason it gave."""
        out: dict[str, dict[str, int]] = {}
        sql = (
            "SELECT t.key, r.reason, count(*) FROM rejections r JOIN targets t ON t.id = r.target_id "
            "GROUP BY t.key, r.reason ORDER BY t.key, r.reason"
        )
        for key, reason, count in self.db.execute(sql):
            out.setdefault(str(key), {})[str(reason)] = int(count)
        return out

    # --- platform read-back ----------------------------------------------------------------------
    def save_platform_status(self, target_id: int, status: PlatformStatus) -> None:
        """Keep the platform's latest view of the audience. ``record_read_back`` also stamps the
        lag records it made ready."""
        with atomic(self.db) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO platform_status "
                "(target_id, read_at, size_lower, size_upper, state, ready, updated_at, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    target_id,
                    time.time(),
                    status.size_lower,
                    status.size_upper,
                    status.state,
                    int(status.ready),
                    status.updated_at,
                    json.dumps(status.detail, default=str),
                ],
            )

    def record_read_back(self, target_id: int, status: PlatformStatus, read_at: float) -> None:
        """In one transaction: keep the platform's view, and when its processing is done, stamp the
        confirmed changes waiting for it as ready at ``read_at``."""
        with atomic(self.db):
            if status.ready:
                self.lag.mark_ready(target_id, read_at)
            self.save_platform_status(target_id, status)

    # --- upload sessions -------------------------------------------------------------------------
    def reserve_batch_seq(self, target_id: int, op: str, fresh: bool) -> tuple[int, int]:
        """The session id and the next batch_seq for a push of ``op``, reserved before sending so a
        resumed push never reuses a sequence number. ``fresh`` starts a new session."""
        now = time.time()
        with atomic(self.db) as conn:
            row = conn.execute(
                "SELECT session_id, next_seq, started_at FROM push_sessions WHERE target_id = ? AND op = ?",
                [target_id, op],
            ).fetchone()
            if fresh or row is None or now - row[2] > SESSION_MAX_AGE_S:
                session_id, seq = secrets.randbits(62) + 1, 1
                conn.execute(
                    "INSERT OR REPLACE INTO push_sessions (target_id, op, session_id, next_seq, started_at) "
                    "VALUES (?, ?, ?, 2, ?)",
                    [target_id, op, session_id, now],
                )
            else:
                session_id, seq = int(row[0]), int(row[1])
                conn.execute(
                    "UPDATE push_sessions SET next_seq = next_seq + 1 WHERE target_id = ? AND op = ?",
                    [target_id, op],
                )
        return session_id, seq

    def end_session(self, target_id: int, op: str) -> None:
        with atomic(self.db) as conn:
            conn.execute("DELETE FROM push_sessions WHERE target_id = ? AND op = ?", [target_id, op])
