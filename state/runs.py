"""Run lookups the daemon needs between runs, against the state file's ``runs`` table."""

from __future__ import annotations

import sqlite_utils


def last_run_id(db: sqlite_utils.Database, target_id: int) -> int:
    """The id of the target's latest run, or 0 before its first. Work settled between runs (the
    daemon's follow step) is attributed to the run that sent it, or the latest one after it."""
    row = db.execute("SELECT max(id) FROM runs WHERE target_id = ?", [target_id]).fetchone()
    return int(row[0] or 0)
