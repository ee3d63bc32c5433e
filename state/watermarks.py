"""Where an incremental plan starts: per target, the latest source change time its last committed
plan read, and when its last full reconciliation was committed."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import sqlite_utils


@dataclass(frozen=True)
class Watermark:
    """What a committed plan records for its target."""

    changed_at: float | None
    """The latest change time among the rows read; None keeps the recorded one."""
    full_at: float | None
    """Set when the plan was a full reconciliation: the time it was made; None keeps the recorded one."""


def read_watermark(db: sqlite_utils.Database, target_id: int) -> Watermark | None:
    """The target's watermark, or None when no plan of it was committed with one."""
    row = db.conn.execute(
        "SELECT changed_at, full_at FROM plan_watermarks WHERE target_id = ?", [target_id]
    ).fetchone()
    return None if row is None else Watermark(row[0], row[1])


def record_watermark(conn: sqlite3.Connection, target_id: int, mark: Watermark) -> None:
    """Advance the target's watermark; called inside the transaction that commits its plan. A change
    time never moves back (a full plan of an audience that shrank reads older rows)."""
    conn.execute(
        "INSERT INTO plan_watermarks (target_id, changed_at, full_at) VALUES (?1, ?2, ?3) "
        "ON CONFLICT (target_id) DO UPDATE SET "
        "changed_at = CASE WHEN ?2 IS NULL THEN changed_at WHEN changed_at IS NULL THEN ?2 "
        "ELSE max(changed_at, ?2) END, full_at = coalesce(?3, full_at)",
        [target_id, mark.changed_at, mark.full_at],
    )
