"""Lag and coverage: how stale each platform's copy of each audience is, and the SLO verdict.

The figures are read from state (``state.lag_store``, which says how lag is measured); this module
puts them together per sync target of the config and judges them against ``max_lag``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from audiencesync.connectors.contract import PlatformStatus
from audiencesync.state.lag_store import CoverageBucket, LagHistogram, LagMeasure, LagPoint, LagStats
from audiencesync.state.store import StateStore
from audiencesync.sync.config import Config, Target
from audiencesync.sync.source_load import member_key
from audiencesync.sync.sources import read_audience

__all__ = [
    "LAG_BUCKETS",
    "MEASURES",
    "Coverage",
    "LagHistogram",
    "LagPoint",
    "LagStats",
    "TargetLag",
    "coverage",
    "format_seconds",
    "judge_slo",
    "lag_report",
    "prune_lag",
    "record_read_back",
]

MEASURES = tuple(LagMeasure)
SLO_OK, SLO_BREACH, SLO_NONE = "ok", "breach", "no_slo"
SLO_AT_RISK = "at_risk"
"""Within max_lag, but the p95 lag, oldest pending change or time since the last success has used more
than ``AT_RISK_SHARE`` of it."""
AT_RISK_SHARE = 0.8
AT_RISK_REASONS = tuple(
    str(b)
    for b in (
        CoverageBucket.NO_VALID_IDENTIFIER,
        CoverageBucket.CONSENT_DENIED,
        CoverageBucket.PENDING,
        CoverageBucket.REJECTED,
        CoverageBucket.UNVERIFIED,
    )
)
"""Why an in-flow profile is not excluded yet, in the order the report lists them."""

LAG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21_600.0, 86_400.0)
"""Histogram bucket bounds in seconds: from a second (a quick platform) to a day (a stuck target)."""


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


def prune_lag(store: StateStore, retention_days: int, now: float | None = None) -> int:
    """Delete lag records confirmed more than ``retention_days`` ago; returns how many went."""
    cutoff = (time.time() if now is None else now) - retention_days * 86_400
    return store.lag.prune(cutoff)


def record_read_back(
    store: StateStore, target_id: int, status: PlatformStatus, now: float | None = None
) -> None:
    """Save a read-back and, when the platform says its processing is done, stamp every confirmed
    change still waiting for it as ready now.

    The stamp is the time readiness was observed, not the platform's ``updated_at``: Meta's
    ``time_content_updated`` is when content last changed, not when processing finished. The ready
    lag is therefore exact to within the read-back interval.
    """
    store.record_read_back(target_id, status, read_at=time.time() if now is None else now)


def coverage(store: StateStore, config: Config, target: Target, target_id: int | None) -> Coverage:
    """Read the in-flow audience from the source now and count how many of its profiles are confirmed
    members on the platform (their exclusion is in place); members not settled as 'synced' are at risk."""
    profiles = (
        (member_key(r.profile_id), r.consent is False) for r in read_audience(config.source, target.audience)
    )
    buckets = {str(b): n for b, n in store.lag.coverage(target_id, profiles).items()}
    confirmed = buckets.pop(CoverageBucket.CONFIRMED, 0)
    reasons = {r: buckets[r] for r in AT_RISK_REASONS if buckets.get(r)}
    return Coverage(confirmed + sum(buckets.values()), confirmed, reasons)


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
    stats = {m: store.lag.stats(m, since) for m in MEASURES}
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
        row = store.lag.target_row(target.key)
        if row is not None:
            entry.synced = True
            entry.last_run_at, entry.last_success_at, entry.last_error = (
                row.last_run_at,
                row.last_success_at,
                row.last_error,
            )
            entry.members, entry.rejected = row.members, row.rejected
            entry.pending_adds, entry.pending_removes, entry.in_flight = (
                row.pending_adds,
                row.pending_removes,
                row.in_flight,
            )
            if row.oldest_pending_at is not None:
                entry.oldest_pending_age = max(0.0, now - max(row.oldest_pending_at, row.created_at))
            if row.platform is not None:
                p = row.platform
                entry.platform_size = (p.size_lower, p.size_upper)
                entry.platform_state, entry.platform_ready, entry.platform_read_at = (
                    p.state,
                    p.ready,
                    p.read_at,
                )
            entry.to_confirmed = stats[LagMeasure.TO_CONFIRMED].get(row.id, LagStats())
            entry.to_ready = stats[LagMeasure.TO_READY].get(row.id, LagStats())
            entry.processing = stats[LagMeasure.PROCESSING].get(row.id, LagStats())
        if with_coverage and target.audience.is_in_flow:
            entry.coverage = coverage(store, config, target, None if row is None else row.id)
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
