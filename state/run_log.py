"""The run history: one ``runs`` row per target run, the rejections it saw by reason, and the sums
the status page and the metrics show."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils
from audiencesync.state.db import atomic

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
"""The counts a run records (``finish``) and its history shows (``history``), as columns of
``runs``; ``invalid`` holds a JSON object of counts by reason."""

# The statuses this module writes or tests for itself; the full vocabulary is
# ``audiencesync.sync.run_status.RunStatus``, whose values are what ``runs.status`` holds.
RUNNING = "running"
OK = "ok"

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

TOTALS = ("confirmed", "rejected", "requests")


@dataclass(frozen=True)
class LastRun:
    """How a target's newest finished run ended."""

    status: str
    error: str | None


@dataclass(frozen=True)
class RunTotals:
    """Sums of ``runs``' confirmed, rejected and requests columns over one target's history."""

    confirmed: int = 0
    rejected: int = 0
    requests: int = 0


class RunLog:
    """The ``runs`` and ``run_rejections`` tables."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def start(self, target_id: int, trigger: str) -> int:
        """Record a run under way; returns its id."""
        with atomic(self.db) as conn:
            cur = conn.execute(
                "INSERT INTO runs (target_id, trigger, started_at, status) VALUES (?, ?, ?, ?)",
                [target_id, trigger, time.time(), RUNNING],
            )
            conn.execute("UPDATE targets SET last_run_at = ? WHERE id = ?", [time.time(), target_id])
            return int(cur.lastrowid or 0)

    def finish(
        self,
        run_id: int,
        status: str,
        counts: Mapping[str, Any],
        error: str | None,
        rejection_reasons: Mapping[str, int] | None = None,
    ) -> None:
        """Record how a run ended, its ``RUN_COUNTS`` and its rejections by reason; an ``ok`` run
        stamps the target's last success, an error its last error."""
        values = {k: counts[k] for k in RUN_COUNTS if k in counts}
        if "invalid" in values:
            values["invalid"] = json.dumps(values["invalid"], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in values)
        now = time.time()
        with atomic(self.db) as conn:
            conn.execute(
                f"UPDATE runs SET status = ?, finished_at = ?, error = ?{', ' if sets else ''}{sets} "
                "WHERE id = ?",
                [str(status), now, error, *values.values(), run_id],
            )
            target_id = conn.execute("SELECT target_id FROM runs WHERE id = ?", [run_id]).fetchone()[0]
            if rejection_reasons:
                conn.executemany(
                    "INSERT OR REPLACE INTO run_rejections (run_id, reason, count) VALUES (?, ?, ?)",
                    [(run_id, reason, n) for reason, n in rejection_reasons.items() if n],
                )
            if status == OK:
                conn.execute(
                    "UPDATE targets SET last_success_at = ?, last_error = NULL WHERE id = ?", [now, target_id]
                )
            elif error:
                conn.execute("UPDATE targets SET last_error = ? WHERE id = ?", [error, target_id])

    def history(self, limit: int, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
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

    def latest_id(self, target_id: int) -> int:
        """The id of the target's newest run, finished or not; 0 before its first. Work settled
        between runs (the daemon's follow step) is attributed to it."""
        row = self.db.execute("SELECT max(id) FROM runs WHERE target_id = ?", [target_id]).fetchone()
        return int(row[0] or 0)

    def last_finished(self, key: str) -> LastRun | None:
        """How the newest finished run of target ``key`` ended; None before its first."""
        row = self.db.execute(
            "SELECT r.status, r.error FROM runs r JOIN targets t ON t.id = r.target_id "
            "WHERE t.key = ? AND r.status != ? ORDER BY r.id DESC LIMIT 1",
            [key, RUNNING],
        ).fetchone()
        return LastRun(str(row[0]), row[1]) if row else None

    def totals(self) -> dict[str, RunTotals]:
        """Per target key, its runs' confirmed, rejected and requests added up: the same figures
        ``audience-sync runs`` lists."""
        sql = (
            f"SELECT t.key, {', '.join(f'coalesce(sum(r.{c}), 0)' for c in TOTALS)} "
            "FROM targets t LEFT JOIN runs r ON r.target_id = t.id GROUP BY t.key"
        )
        return {str(key): RunTotals(*map(int, rest)) for key, *rest in self.db.execute(sql)}

    def rejection_totals(self) -> dict[str, dict[str, int]]:
        """Per target key, the changes its runs saw rejected, by the platform's reason. Runs recorded
        before reasons were kept count under ``unrecorded``, so the reasons add up to ``runs``' total."""
        out: dict[str, dict[str, int]] = {}
        for key, reason, count in self.db.execute(
            "SELECT t.key, j.reason, sum(j.count) FROM run_rejections j JOIN runs r ON r.id = j.run_id "
            "JOIN targets t ON t.id = r.target_id GROUP BY t.key, j.reason ORDER BY t.key, j.reason"
        ):
            out.setdefault(str(key), {})[str(reason)] = int(count)
        for key, total in self.db.execute(
            "SELECT t.key, coalesce(sum(r.rejected), 0) FROM targets t JOIN runs r ON r.target_id = t.id "
            "GROUP BY t.key"
        ):
            rest = int(total) - sum(out.get(str(key), {}).values())
            if rest > 0:
                out.setdefault(str(key), {})["unrecorded"] = rest
        return out
