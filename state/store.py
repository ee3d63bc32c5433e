"""Per-target bookkeeping: the target row (platform audience id, state version), run history, the
platform's read-back status and upload sessions."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from audiencesync.state.db import atomic, connect
from audiencesync.state.sealed import bind_key_file

RUN_COUNTS = (
    "source_members",
    "adds",
    "removes",
    "identity_changes",
    "confirmed",
    "pending",
    "rejected",
    "requests",
    "invalid",
)
"""The counts a run records (``finish_run``) and its history shows (``run_history``), as columns of
``runs``; ``invalid`` holds a JSON object of counts by reason."""

# A run in the history: name -> SQL over runs r JOIN targets t.
_HISTORY_COLUMNS = {
    "id": "r.id",
    "target": "t.key",
    "trigger": "r.trigger",
    "started_at": "r.started_at",
    "finished_at": "r.finished_at",
    "duration": "r.finished_at - r.started_at",
    "status": "r.status",
    **{count: f"r.{count}" for count in RUN_COUNTS},
    "error": "r.error",
}

# Meta closes an upload session 90 minutes after its first batch (meta.md, Payload: "without
# last_batch_flag, a session ends 90 minutes after its first batch"); start a new one well before. The
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
            "(SELECT count(*) FROM outbox o WHERE o.target_id = t.id AND o.status = 'queued'), "
            "(SELECT count(*) FROM outbox o WHERE o.target_id = t.id AND o.status = 'in_flight'), "
            "(SELECT r.status FROM runs r WHERE r.target_id = t.id ORDER BY r.id DESC LIMIT 1), "
            "t.last_success_at FROM targets t ORDER BY t.key"
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

    # --- runs ------------------------------------------------------------------------------------
    def start_run(self, target_id: int, trigger: str) -> int:
        with atomic(self.db) as conn:
            cur = conn.execute(
                "INSERT INTO runs (target_id, trigger, started_at, status) VALUES (?, ?, ?, 'running')",
                [target_id, trigger, time.time()],
            )
            conn.execute("UPDATE targets SET last_run_at = ? WHERE id = ?", [time.time(), target_id])
            return int(cur.lastrowid or 0)

    def finish_run(
        self,
        run_id: int,
        status: str,
        counts: Mapping[str, Any],
        error: str | None,
        rejection_reasons: Mapping[str, int] | None = None,
    ) -> None:
        values = {k: counts[k] for k in RUN_COUNTS if k in counts}
        if "invalid" in values:
            values["invalid"] = json.dumps(values["invalid"], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in values)
        now = time.time()
        with atomic(self.db) as conn:
            conn.execute(
                f"UPDATE runs SET status = ?, finished_at = ?, error = ?{', ' if sets else ''}{sets} "
                "WHERE id = ?",
                [status, now, error, *values.values(), run_id],
            )
            target_id = conn.execute("SELECT target_id FROM runs WHERE id = ?", [run_id]).fetchone()[0]
            if rejection_reasons:
                conn.executemany(
                    "INSERT OR REPLACE INTO run_rejections (run_id, reason, count) VALUES (?, ?, ?)",
                    [(run_id, reason, n) for reason, n in rejection_reasons.items() if n],
                )
            if status == "ok":
                conn.execute(
                    "UPDATE targets SET last_success_at = ?, last_error = NULL WHERE id = ?", [now, target_id]
                )
            elif error:
                conn.execute("UPDATE targets SET last_error = ? WHERE id = ?", [error, target_id])

    def run_history(self, limit: int, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` runs as dicts, newest first, optionally only those of target ``keys``."""
        where, params = "", []
        if keys is not None:
            where = f"WHERE t.key IN ({', '.join('?' * len(keys))})"
            params = list(keys)
        cursor = self.db.execute(
            f"SELECT {', '.join(_HISTORY_COLUMNS.values())} "
            f"FROM runs r JOIN targets t ON t.id = r.target_id {where} ORDER BY r.id DESC LIMIT ?",
            [*params, limit],
        )
        out = []
        for row in cursor.fetchall():
            item = dict(zip(_HISTORY_COLUMNS, row, strict=True))
            item["invalid"] = json.loads(item["invalid"]) if item["invalid"] else {}
            out.append(item)
        return out

    # --- platform read-back ----------------------------------------------------------------------
    def save_platform_status(
        self,
        target_id: int,
        size_lower: int | None,
        size_upper: int | None,
        state: str,
        ready: bool,
        updated_at: float | None,
        detail: Mapping[str, object],
    ) -> None:
        """Keep the platform's latest view of the audience. Stamping lag records ready is
        ``sync.lag.record_read_back``'s job, which calls this in the same transaction."""
        now = time.time()
        with atomic(self.db) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO platform_status "
                "(target_id, read_at, size_lower, size_upper, state, ready, updated_at, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    target_id,
                    now,
                    size_lower,
                    size_upper,
                    state,
                    int(ready),
                    updated_at,
                    json.dumps(detail, default=str),
                ],
            )

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
