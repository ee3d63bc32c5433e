"""Read-only queries behind the status page and the metrics: totals over the run history and the
rejections on file, per sync target key."""

from __future__ import annotations

import sqlite_utils

TOTALS = ("confirmed", "rejected", "requests")


def run_totals(db: sqlite_utils.Database) -> dict[str, dict[str, int]]:
    """Per target key, the sums of ``runs``' confirmed, rejected and requests columns: the same
    figures ``audience-sync runs`` lists, added up."""
    sql = (
        f"SELECT t.key, {', '.join(f'coalesce(sum(r.{c}), 0)' for c in TOTALS)} "
        "FROM targets t LEFT JOIN runs r ON r.target_id = t.id GROUP BY t.key"
    )
    return {key: dict(zip(TOTALS, map(int, rest), strict=True)) for key, *rest in db.execute(sql)}


def rejections_by_reason(db: sqlite_utils.Database) -> dict[str, dict[str, int]]:
    """Per target key, the members the platform currently rejects, by the reason it gave."""
    out: dict[str, dict[str, int]] = {}
    sql = (
        "SELECT t.key, r.reason, count(*) FROM rejections r JOIN targets t ON t.id = r.target_id "
        "GROUP BY t.key, r.reason ORDER BY t.key, r.reason"
    )
    for key, reason, count in db.execute(sql):
        out.setdefault(str(key), {})[str(reason)] = int(count)
    return out


def run_rejection_totals(db: sqlite_utils.Database) -> dict[str, dict[str, int]]:
    """Per target key, the changes its runs saw rejected, by the platform's reason. Runs recorded
    before reasons were kept count under ``unrecorded``, so the reasons add up to ``runs``' total."""
    out: dict[str, dict[str, int]] = {}
    for key, reason, count in db.execute(
        "SELECT t.key, j.reason, sum(j.count) FROM run_rejections j JOIN runs r ON r.id = j.run_id "
        "JOIN targets t ON t.id = r.target_id GROUP BY t.key, j.reason ORDER BY t.key, j.reason"
    ):
        out.setdefault(str(key), {})[str(reason)] = int(count)
    for key, total in db.execute(
        "SELECT t.key, coalesce(sum(r.rejected), 0) FROM targets t JOIN runs r ON r.target_id = t.id "
        "GROUP BY t.key"
    ):
        rest = int(total) - sum(out.get(str(key), {}).values())
        if rest > 0:
            out.setdefault(str(key), {})["unrecorded"] = rest
    return out


def target_ids(db: sqlite_utils.Database) -> dict[str, int]:
    """Target key to its id in the state file."""
    return {str(key): int(tid) for tid, key in db.execute("SELECT id, key FROM targets")}
