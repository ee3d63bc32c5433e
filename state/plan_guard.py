"""Checks a saved plan must pass against state before it is applied."""

from __future__ import annotations

import sqlite_utils


def count_foreign_removes(db: sqlite_utils.Database, plan_table: str, target_id: int) -> int:
    """How many removes in ``plan_table`` (a loaded plan's desired rows) match neither a member state
    holds for the target nor an add it may have sent, payload and all: removes of people this tool
    never added."""
    row = db.execute(
        f"SELECT count(*) FROM {plan_table} d WHERE d.op = 'remove' AND NOT EXISTS "
        "(SELECT 1 FROM members m WHERE m.target_id = ? AND m.member_key = d.member_key "
        "AND m.payload_fp = d.payload_fp) AND NOT EXISTS (SELECT 1 FROM outbox o WHERE "
        "o.target_id = ? AND o.member_key = d.member_key AND o.op = 'add' AND o.payload_fp = d.payload_fp)",
        [target_id, target_id],
    ).fetchone()
    return int(row[0])
