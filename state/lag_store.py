"""Lag records and what the lag report reads beside them, in SQL.

Every confirmed change leaves a lag record (``state.outbox``): when the source says the profile
changed (``source_at``, else when a run first saw it), when it was observed, sent, confirmed, and
when the platform reported its processing done (``ready_at``). Lag is measured from the change, but
never from before the target's first sync: the initial backfill of years-old profiles is not a lag.

Percentiles are nearest-rank, computed with window functions over the records in the window; nothing
of the history is loaded into memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice

import sqlite_utils
from audiencesync.state.db import atomic
from audiencesync.state.outbox_values import ChangeOp, Confirmation, OutboxStatus


class LagMeasure(StrEnum):
    """What a lag is measured to."""

    TO_CONFIRMED = "to_confirmed"
    """From the change to the platform's confirmation."""
    TO_READY = "to_ready"
    """From the change to the platform reporting its processing done."""
    PROCESSING = "processing"
    """From confirmation to ready: the platform's own processing time."""


# Where a lag is measured from: the change, clamped to the target's creation (see the module doc).
_START = "max(coalesce(l.source_at, l.observed_at), t.created_at)"
_MEASURES = {
    LagMeasure.TO_CONFIRMED: (f"l.confirmed_at - {_START}", "1"),
    LagMeasure.TO_READY: (f"l.ready_at - {_START}", "l.ready_at IS NOT NULL"),
    LagMeasure.PROCESSING: ("l.ready_at - l.confirmed_at", "l.ready_at IS NOT NULL"),
}


class CoverageBucket(StrEnum):
    """Where one profile of an in-flow audience stands, checked in this order."""

    CONFIRMED = "confirmed"
    UNVERIFIED = "unverified"
    """A member not settled as synced: reported failed only as a count, or sent with no answer."""
    CONSENT_DENIED = "consent denied"
    PENDING = "pending"
    REJECTED = "rejected"
    NO_VALID_IDENTIFIER = "no valid identifier"


@dataclass(frozen=True)
class LagStats:
    """Lag in seconds over the records in the window: how many, p50, p95 and max."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class LagHistogram:
    """Cumulative counts of lag records at or under each bound, their count and sum."""

    cumulative: tuple[int, ...]
    count: int
    total: float


@dataclass(frozen=True)
class LagPoint:
    """One bucket of the lag-over-time chart."""

    start: float
    count: int
    p50: float
    p95: float
    max: float


@dataclass(frozen=True)
class PlatformView:
    """The platform's latest read-back of an audience."""

    size_lower: int | None
    size_upper: int | None
    state: str | None
    ready: bool
    read_at: float


@dataclass(frozen=True)
class TargetLagRow:
    """One synced target's bookkeeping, as the lag report shows it."""

    id: int
    created_at: float
    last_run_at: float | None
    last_success_at: float | None
    last_error: str | None
    members: int
    rejected: int
    pending_adds: int
    pending_removes: int
    in_flight: int
    oldest_pending_at: float | None
    """When the oldest change in the outbox happened (its source time, else when it was seen)."""
    platform: PlatformView | None


_TARGET_SQL = f"""
    SELECT t.id, t.created_at, t.last_run_at, t.last_success_at, t.last_error,
        (SELECT count(*) FROM members m WHERE m.target_id = t.id),
        (SELECT count(*) FROM rejections r WHERE r.target_id = t.id),
        o.adds, o.removes, o.in_flight, o.oldest,
        p.size_lower, p.size_upper, p.state, p.ready, p.read_at
    FROM targets t
    LEFT JOIN (
        SELECT target_id,
               sum(op = '{ChangeOp.ADD}') AS adds, sum(op = '{ChangeOp.REMOVE}') AS removes,
               sum(status = '{OutboxStatus.IN_FLIGHT}') AS in_flight,
               min(coalesce(source_at, observed_at)) AS oldest
        FROM outbox GROUP BY target_id
    ) o ON o.target_id = t.id
    LEFT JOIN platform_status p ON p.target_id = t.id
    WHERE t.key = ?
"""

_COVERAGE_SQL = f"""
    SELECT CASE
             WHEN EXISTS (SELECT 1 FROM members m WHERE m.target_id = :t AND m.member_key = c.member_key
                          AND m.confirmation = '{Confirmation.SYNCED}') THEN '{CoverageBucket.CONFIRMED}'
             WHEN EXISTS (SELECT 1 FROM members m WHERE m.target_id = :t AND m.member_key = c.member_key)
               THEN '{CoverageBucket.UNVERIFIED}'
             WHEN c.denied THEN '{CoverageBucket.CONSENT_DENIED}'
             WHEN EXISTS (SELECT 1 FROM outbox o WHERE o.target_id = :t AND o.member_key = c.member_key
                          AND o.op = '{ChangeOp.ADD}') THEN '{CoverageBucket.PENDING}'
             WHEN EXISTS (SELECT 1 FROM rejections r WHERE r.target_id = :t
                          AND r.member_key = c.member_key) THEN '{CoverageBucket.REJECTED}'
             ELSE '{CoverageBucket.NO_VALID_IDENTIFIER}'
           END AS bucket, count(*)
    FROM coverage_keys2 c GROUP BY bucket
"""


def _percentile_sql(expr: str, where: str) -> str:
    # Nearest rank: the k-th smallest of n with k = ceil(p * n), in integer arithmetic.
    return f"""
        WITH v AS (
            SELECT l.target_id AS target_id, max(0.0, {expr}) AS lag
            FROM lag l JOIN targets t ON t.id = l.target_id
            WHERE l.confirmed_at >= :since AND {where}
        ), r AS (
            SELECT target_id, lag,
                   row_number() OVER (PARTITION BY target_id ORDER BY lag) AS rn,
                   count(*) OVER (PARTITION BY target_id) AS n
            FROM v
        )
        SELECT target_id, max(n),
               max(CASE WHEN rn = (50 * n + 99) / 100 THEN lag END),
               max(CASE WHEN rn = (95 * n + 99) / 100 THEN lag END),
               max(lag)
        FROM r GROUP BY target_id
    """


def _chunks(items: Iterator[tuple[bytes, bool]], size: int) -> Iterator[list[tuple[bytes, bool]]]:
    while chunk := list(islice(items, size)):
        yield chunk


class LagStore:
    """The ``lag`` table, and the per-target figures the lag report reads with it."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def stats(self, measure: LagMeasure | str, since: float) -> dict[int, LagStats]:
        """``measure`` per target id, over records confirmed since ``since``."""
        expr, where = _MEASURES[LagMeasure(measure)]
        rows = self.db.execute(_percentile_sql(expr, where), {"since": since}).fetchall()
        return {int(r[0]): LagStats(int(r[1]), r[2], r[3], r[4]) for r in rows}

    def histograms(self, measure: LagMeasure | str, bounds: Sequence[float]) -> dict[int, LagHistogram]:
        """``measure`` per target id over every retained lag record, counted at or under each of
        ``bounds`` (seconds)."""
        expr, where = _MEASURES[LagMeasure(measure)]
        le = ", ".join(f"coalesce(sum(lag <= {float(b)!r}), 0)" for b in bounds)
        sql = f"""
            WITH v AS (
                SELECT l.target_id AS target_id, max(0.0, {expr}) AS lag
                FROM lag l JOIN targets t ON t.id = l.target_id WHERE {where}
            )
            SELECT target_id, count(*), coalesce(sum(lag), 0.0), {le} FROM v GROUP BY target_id
        """
        return {
            int(r[0]): LagHistogram(tuple(int(v) for v in r[3:]), int(r[1]), float(r[2]))
            for r in self.db.execute(sql).fetchall()
        }

    def series(
        self,
        since: float,
        until: float,
        buckets: int = 48,
        measure: LagMeasure | str = LagMeasure.TO_CONFIRMED,
    ) -> dict[int, list[LagPoint]]:
        """Lag over time per target id: the window cut into ``buckets`` slices by confirmation time."""
        expr, where = _MEASURES[LagMeasure(measure)]
        width = max((until - since) / buckets, 1e-6)
        sql = f"""
            WITH v AS (
                SELECT l.target_id AS target_id, CAST((l.confirmed_at - :since) / :width AS INTEGER) AS b,
                       max(0.0, {expr}) AS lag
                FROM lag l JOIN targets t ON t.id = l.target_id
                WHERE l.confirmed_at >= :since AND l.confirmed_at <= :until AND {where}
            ), r AS (
                SELECT target_id, b, lag,
                       row_number() OVER (PARTITION BY target_id, b ORDER BY lag) AS rn,
                       count(*) OVER (PARTITION BY target_id, b) AS n
                FROM v
            )
            SELECT target_id, b, max(n),
                   max(CASE WHEN rn = (50 * n + 99) / 100 THEN lag END),
                   max(CASE WHEN rn = (95 * n + 99) / 100 THEN lag END),
                   max(lag)
            FROM r GROUP BY target_id, b ORDER BY target_id, b
        """
        out: dict[int, list[LagPoint]] = {}
        for tid, b, n, p50, p95, top in self.db.execute(
            sql, {"since": since, "until": until, "width": width}
        ):
            out.setdefault(int(tid), []).append(
                LagPoint(since + min(b, buckets - 1) * width, n, p50, p95, top)
            )
        return out

    def prune(self, before: float) -> int:
        """Delete lag records confirmed before ``before``; returns how many went."""
        with atomic(self.db) as conn:
            return int(conn.execute("DELETE FROM lag WHERE confirmed_at < ?", [before]).rowcount)

    def mark_ready(self, target_id: int, read_at: float) -> None:
        """Stamp every confirmed change of the target still waiting for the platform's processing,
        confirmed by ``read_at``, as ready at ``read_at``."""
        with atomic(self.db) as conn:
            conn.execute(
                "UPDATE lag SET ready_at = ? WHERE target_id = ? AND ready_at IS NULL AND confirmed_at <= ?",
                [read_at, target_id, read_at],
            )

    def target_row(self, key: str) -> TargetLagRow | None:
        """Target ``key``'s bookkeeping; None until its first run wrote state."""
        row = self.db.execute(_TARGET_SQL, [key]).fetchone()
        if row is None:
            return None
        platform = None
        if row[15] is not None:
            platform = PlatformView(row[11], row[12], row[13], bool(row[14]), float(row[15]))
        adds, removes, in_flight = (int(v or 0) for v in row[7:10])
        return TargetLagRow(
            id=int(row[0]),
            created_at=float(row[1]),
            last_run_at=row[2],
            last_success_at=row[3],
            last_error=row[4],
            members=int(row[5]),
            rejected=int(row[6]),
            pending_adds=adds,
            pending_removes=removes,
            in_flight=in_flight,
            oldest_pending_at=None if row[10] is None else float(row[10]),
            platform=platform,
        )

    def coverage(
        self, target_id: int | None, profiles: Iterable[tuple[bytes, bool]]
    ) -> dict[CoverageBucket, int]:
        """How many of ``profiles`` (member key, consent denied) fall in each ``CoverageBucket`` for
        the target; ``None`` for a target never synced. Each profile counts once, in the first bucket
        that holds it."""
        conn = self.db.conn
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS coverage_keys2 "
            "(member_key BLOB PRIMARY KEY, denied INTEGER) WITHOUT ROWID"
        )
        conn.execute("DELETE FROM coverage_keys2")
        for chunk in _chunks(((key, bool(denied)) for key, denied in profiles), 10_000):
            conn.executemany(
                "INSERT OR IGNORE INTO coverage_keys2 VALUES (?, ?)", [(k, int(d)) for k, d in chunk]
            )
        rows = conn.execute(_COVERAGE_SQL, {"t": -1 if target_id is None else target_id}).fetchall()
        conn.execute("DELETE FROM coverage_keys2")
        return {CoverageBucket(str(b)): int(n) for b, n in rows}
