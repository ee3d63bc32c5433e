"""Lag and coverage: how stale each platform's copy of each audience is, computed in SQL.

Every confirmed change leaves a lag record (``state.outbox``): when the source says the profile
changed (``source_at``, else when a run first saw it), when it was observed, sent, confirmed, and
when the platform reported its processing done (``ready_at``). Lag is measured from the change, but
never from before the target's first sync: the initial backfill of years-old profiles is not a lag.

Percentiles are nearest-rank, computed with window functions over the records in the window; nothing
of the history is loaded into memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any, TypeVar

import sqlite_utils
from audiencesync.connectors.contract import PlatformStatus
from audiencesync.state.db import atomic
from audiencesync.state.store import StateStore
from audiencesync.sync.config import Config, Target
from audiencesync.sync.source_load import member_key
from audiencesync.sync.sources import read_audience

# Where a lag is measured from: the change, clamped to the target's creation (see the module doc).
_START = "max(coalesce(l.source_at, l.observed_at), t.created_at)"
MEASURES = {
    "to_confirmed": (f"l.confirmed_at - {_START}", "1"),
    "to_ready": (f"l.ready_at - {_START}", "l.ready_at IS NOT NULL"),
    "processing": ("l.ready_at - l.confirmed_at", "l.ready_at IS NOT NULL"),
}
SLO_OK, SLO_BREACH, SLO_NONE = "ok", "breach", "no_slo"
T = TypeVar("T")
SLO_AT_RISK = "at_risk"
"""Within max_lag, but the p95 lag, oldest pending change or time since the last success has used more
than ``AT_RISK_SHARE`` of it."""
AT_RISK_SHARE = 0.8
AT_RISK_REASONS = ("no valid identifier", "consent denied", "pending", "rejected", "unverified")


@dataclass(frozen=True)
class LagStats:
    """Lag in seconds over the records in the window: how many, p50, p95 and max."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Coverage:
    """For an in-flow (suppression) audience: profiles in the flow right now, and how many of them the
    platform has confirmed as excluded."""

    in_flow: int
    confirmed: int
    at_risk_reasons: dict[str, int] = field(default_factory=dict)
    """The at-risk profiles by why they are not excluded yet: ``consent denied`` (never uploaded),
    ``pending`` (in the outbox), ``rejected`` (the platform refused it), ``no valid identifier`` (the
    rest: nothing of the profile could be matched, or the target was never synced)."""

    @property
    def at_risk(self) -> int:
        return self.in_flow - self.confirmed

    @property
    def share(self) -> float | None:
        return self.confirmed / self.in_flow if self.in_flow else None


@dataclass
class TargetLag:
    """One audience on one destination, as the lag report shows it."""

    target: str
    audience: str
    destination: str
    platform: str
    synced: bool
    """False until the target's first run wrote state."""
    members: int = 0
    pending_adds: int = 0
    pending_removes: int = 0
    in_flight: int = 0
    rejected: int = 0
    oldest_pending_age: float | None = None
    to_confirmed: LagStats = field(default_factory=LagStats)
    to_ready: LagStats = field(default_factory=LagStats)
    processing: LagStats = field(default_factory=LagStats)
    last_run_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    platform_size: tuple[int | None, int | None] | None = None
    platform_state: str | None = None
    platform_ready: bool | None = None
    platform_read_at: float | None = None
    max_lag: float | None = None
    slo: str = SLO_NONE
    slo_reasons: list[str] = field(default_factory=list)
    coverage: Coverage | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.coverage is not None:
            out["coverage"] = {
                "in_flow": self.coverage.in_flow,
                "confirmed": self.coverage.confirmed,
                "at_risk": self.coverage.at_risk,
                "share": self.coverage.share,
                "at_risk_reasons": dict(self.coverage.at_risk_reasons),
            }
        return out


@dataclass(frozen=True)
class LagPoint:
    """One bucket of the lag-over-time chart."""

    start: float
    count: int
    p50: float
    p95: float
    max: float


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


def lag_stats(db: sqlite_utils.Database, measure: str, since: float) -> dict[int, LagStats]:
    """``measure`` (to_confirmed, to_ready, processing) per target id, over records confirmed since
    ``since``."""
    expr, where = MEASURES[measure]
    rows = db.execute(_percentile_sql(expr, where), {"since": since}).fetchall()
    return {r[0]: LagStats(int(r[1]), r[2], r[3], r[4]) for r in rows}


LAG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21_600.0, 86_400.0)
"""Histogram bucket bounds in seconds: from a second (a quick platform) to a day (a stuck target)."""


@dataclass(frozen=True)
class LagHistogram:
    """Cumulative counts of lag records at or under each bound of ``LAG_BUCKETS``, their count and sum."""

    cumulative: tuple[int, ...]
    count: int
    total: float


def lag_histograms(db: sqlite_utils.Database, measure: str) -> dict[int, LagHistogram]:
    """``measure`` per target id over every retained lag record, bucketed for a Prometheus histogram."""
    expr, where = MEASURES[measure]
    le = ", ".join(f"coalesce(sum(lag <= {b!r}), 0)" for b in LAG_BUCKETS)
    sql = f"""
        WITH v AS (
            SELECT l.target_id AS target_id, max(0.0, {expr}) AS lag
            FROM lag l JOIN targets t ON t.id = l.target_id WHERE {where}
        )
        SELECT target_id, count(*), coalesce(sum(lag), 0.0), {le} FROM v GROUP BY target_id
    """
    return {
        int(r[0]): LagHistogram(tuple(int(v) for v in r[3:]), int(r[1]), float(r[2]))
        for r in db.execute(sql).fetchall()
    }


def lag_series(
    db: sqlite_utils.Database, since: float, until: float, buckets: int = 48, measure: str = "to_confirmed"
) -> dict[int, list[LagPoint]]:
    """Lag over time per target: the window cut into ``buckets`` slices by confirmation time."""
    expr, where = MEASURES[measure]
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
    for tid, b, n, p50, p95, top in db.execute(sql, {"since": since, "until": until, "width": width}):
        out.setdefault(tid, []).append(LagPoint(since + min(b, buckets - 1) * width, n, p50, p95, top))
    return out


def prune_lag(db: sqlite_utils.Database, retention_days: int, now: float | None = None) -> int:
    """Delete lag records confirmed more than ``retention_days`` ago; returns how many went."""
    cutoff = (time.time() if now is None else now) - retention_days * 86_400
    with atomic(db) as conn:
        return conn.execute("DELETE FROM lag WHERE confirmed_at < ?", [cutoff]).rowcount


def record_read_back(
    store: StateStore, target_id: int, status: PlatformStatus, now: float | None = None
) -> None:
    """Save a read-back and, when the platform says its processing is done, stamp every confirmed
    change still waiting for it as ready now.

    The stamp is the time readiness was observed, not the platform's ``updated_at``: Meta's
    ``time_content_updated`` is when content last changed, not when processing finished. The ready
    lag is therefore exact to within the read-back interval.
    """
    read_at = time.time() if now is None else now
    with atomic(store.db) as conn:
        if status.ready:
            conn.execute(
                "UPDATE lag SET ready_at = ? WHERE target_id = ? AND ready_at IS NULL AND confirmed_at <= ?",
                [read_at, target_id, read_at],
            )
        store.save_platform_status(
            target_id,
            status.size_lower,
            status.size_upper,
            status.state,
            status.ready,
            status.updated_at,
            status.detail,
        )


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk


def coverage(db: sqlite_utils.Database, config: Config, target: Target, target_id: int | None) -> Coverage:
    """Read the in-flow audience from the source now and count how many of its profiles are confirmed
    members on the platform (their exclusion is in place); members not settled as 'synced' are at risk."""
    conn = db.conn
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS coverage_keys2 (member_key BLOB PRIMARY KEY, denied INTEGER) WITHOUT ROWID"
    )
    conn.execute("DELETE FROM coverage_keys2")
    keys = (
        (member_key(r.profile_id), int(r.consent is False))
        for r in read_audience(config.source, target.audience)
    )
    for chunk in _chunks(keys, 10_000):
        conn.executemany("INSERT OR IGNORE INTO coverage_keys2 VALUES (?, ?)", chunk)
    tid = -1 if target_id is None else target_id
    # One pass: each in-flow profile lands in exactly one bucket, checked in this order.
    rows = conn.execute(
        """
        SELECT CASE
                 WHEN EXISTS (SELECT 1 FROM members m WHERE m.target_id = :t AND m.member_key = c.member_key
                              AND m.confirmation = 'synced') THEN 'confirmed'
                 -- Reported failed only as a count, or sent with no answer recorded: at risk until a
                 -- resend or a read-back settles it.
                 WHEN EXISTS (SELECT 1 FROM members m WHERE m.target_id = :t AND m.member_key = c.member_key)
                   THEN 'unverified'
                 WHEN c.denied THEN 'consent denied'
                 WHEN EXISTS (SELECT 1 FROM outbox o WHERE o.target_id = :t AND o.member_key = c.member_key
                              AND o.op = 'add') THEN 'pending'
                 WHEN EXISTS (SELECT 1 FROM rejections r WHERE r.target_id = :t
                              AND r.member_key = c.member_key) THEN 'rejected'
                 ELSE 'no valid identifier'
               END AS bucket, count(*)
        FROM coverage_keys2 c GROUP BY bucket
        """,
        {"t": tid},
    ).fetchall()
    conn.execute("DELETE FROM coverage_keys2")
    buckets = {str(b): int(n) for b, n in rows}
    confirmed = buckets.pop("confirmed", 0)
    reasons = {r: buckets[r] for r in AT_RISK_REASONS if buckets.get(r)}
    return Coverage(confirmed + sum(buckets.values()), confirmed, reasons)


_TARGET_SQL = """
    SELECT t.id, t.created_at, t.last_run_at, t.last_success_at, t.last_error,
        (SELECT count(*) FROM members m WHERE m.target_id = t.id),
        (SELECT count(*) FROM rejections r WHERE r.target_id = t.id),
        o.adds, o.removes, o.in_flight, o.oldest,
        p.size_lower, p.size_upper, p.state, p.ready, p.read_at
    FROM targets t
    LEFT JOIN (
        SELECT target_id,
               sum(op = 'add') AS adds, sum(op = 'remove') AS removes, sum(status = 'in_flight') AS in_flight,
               min(coalesce(source_at, observed_at)) AS oldest
        FROM outbox GROUP BY target_id
    ) o ON o.target_id = t.id
    LEFT JOIN platform_status p ON p.target_id = t.id
    WHERE t.key = ?
"""


def lag_report(
    config: Config,
    store: StateStore,
    *,
    since: float,
    now: float | None = None,
    with_coverage: bool = True,
    targets: Sequence[Target] | None = None,
) -> list[TargetLag]:
    """The lag report: one entry per sync target in config order."""
    now = time.time() if now is None else now
    db = store.db
    stats = {m: lag_stats(db, m, since) for m in MEASURES}
    out: list[TargetLag] = []
    for target in config.targets() if targets is None else targets:
        entry = TargetLag(
            target.key,
            target.audience.name,
            target.destination.name,
            target.destination.platform,
            synced=False,
            max_lag=target.sync.max_lag_seconds,
        )
        row = db.execute(_TARGET_SQL, [target.key]).fetchone()
        tid: int | None = None
        if row is not None:
            tid = int(row[0])
            entry.synced = True
            entry.last_run_at, entry.last_success_at, entry.last_error = row[2], row[3], row[4]
            entry.members, entry.rejected = int(row[5]), int(row[6])
            entry.pending_adds, entry.pending_removes, entry.in_flight = (int(v or 0) for v in row[7:10])
            if row[10] is not None:
                entry.oldest_pending_age = max(0.0, now - max(float(row[10]), float(row[1])))
            if row[15] is not None:
                entry.platform_size = (row[11], row[12])
                entry.platform_state, entry.platform_ready, entry.platform_read_at = (
                    row[13],
                    bool(row[14]),
                    row[15],
                )
            entry.to_confirmed = stats["to_confirmed"].get(tid, LagStats())
            entry.to_ready = stats["to_ready"].get(tid, LagStats())
            entry.processing = stats["processing"].get(tid, LagStats())
        if with_coverage and target.audience.is_in_flow:
            entry.coverage = coverage(db, config, target, tid)
        judge_slo(entry, now)
        out.append(entry)
    return out


def judge_slo(entry: TargetLag, now: float) -> None:
    """The SLO verdict against ``max_lag``: breached when the p95 lag to confirmation, the oldest
    pending change, or the time since the last successful run exceeds it; at risk when one of them is
    above ``AT_RISK_SHARE`` of it. ``slo_reasons`` says why, for either."""
    limit = entry.max_lag
    if limit is None:
        entry.slo, entry.slo_reasons = SLO_NONE, []
        return
    reasons: list[str] = []
    p95 = entry.to_confirmed.p95
    if p95 is not None and p95 > limit:
        reasons.append(f"p95 lag to confirmation {format_seconds(p95)} > max_lag {format_seconds(limit)}")
    if entry.oldest_pending_age is not None and entry.oldest_pending_age > limit:
        reasons.append(
            f"oldest pending change waited {format_seconds(entry.oldest_pending_age)} > max_lag "
            f"{format_seconds(limit)}"
        )
    if not entry.synced:
        reasons.append("never synced")
    elif entry.last_success_at is None or now - entry.last_success_at > limit:
        ago = (
            "never" if entry.last_success_at is None else f"{format_seconds(now - entry.last_success_at)} ago"
        )
        reasons.append(f"last successful run {ago} (max_lag {format_seconds(limit)})")
    if reasons:
        entry.slo, entry.slo_reasons = SLO_BREACH, reasons
        return
    near = [
        (what, value)
        for what, value in (
            ("p95 lag to confirmation", p95),
            ("oldest pending change", entry.oldest_pending_age),
            (
                "time since the last successful run",
                None if entry.last_success_at is None else now - entry.last_success_at,
            ),
        )
        if value is not None and value > AT_RISK_SHARE * limit
    ]
    entry.slo = SLO_AT_RISK if near else SLO_OK
    entry.slo_reasons = [
        f"{what} {format_seconds(value)} is {value / limit:.0%} of max_lag {format_seconds(limit)}"
        for what, value in near
    ]


def format_seconds(value: float | None) -> str:
    """``42s``, ``12m``, ``3.5h``, ``2.1d``; ``-`` for none."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.2f}s"
    if value < 120:
        return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    if value < 172_800:
        return f"{value / 3600:.1f}h"
    return f"{value / 86_400:.1f}d"
