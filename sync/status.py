"""The status page's model: everything the daemon's ``/`` page, ``lag --html`` and ``/metrics`` show,
read from the state file (and, for in-flow coverage, the source) in one place. Data only: rendering
lives in ``sync/cli/lag_html.py`` and the metrics collector in ``sync/metrics.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audiencesync.state.lag_store import LagMeasure
from audiencesync.state.run_log import RunTotals
from audiencesync.state.store import StateStore
from audiencesync.sync.config import Config, Target
from audiencesync.sync.lag import LAG_BUCKETS, LagHistogram, LagPoint, TargetLag, lag_report

RECENT_RUNS = 20


@dataclass(frozen=True)
class TargetTotals:
    """Sums over a target's run history and its rejections on file."""

    confirmed: int = 0
    rejected: int = 0
    requests: int = 0
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    """Members rejected now (the rejections on file), by reason."""
    rejected_changes_by_reason: Mapping[str, int] = field(default_factory=dict)
    """Changes rejected over the run history, by reason; adds up to ``rejected``."""


@dataclass
class StatusPage:
    """One snapshot of every sync target: the lag report rows, lag over time, histograms, totals and
    the most recent runs. ``daemon`` is the daemon's health when a daemon built it, else None."""

    generated_at: float
    since: float
    entries: list[TargetLag]
    series: dict[str, list[LagPoint]]
    """Per target key, p95 lag to confirmation over the window."""
    histograms: dict[str, dict[str, LagHistogram]]
    """Per target key, per measure (to_confirmed, to_ready), every retained lag record bucketed."""
    totals: dict[str, TargetTotals]
    runs: list[dict[str, Any]]
    daemon: Mapping[str, Any] | None = None

    def entry(self, key: str) -> TargetLag | None:
        return next((e for e in self.entries if e.target == key), None)


def build_status(
    config: Config,
    store: StateStore,
    *,
    since: float,
    now: float | None = None,
    targets: Sequence[Target] | None = None,
    with_coverage: bool = True,
    runs_limit: int = RECENT_RUNS,
    daemon: Mapping[str, Any] | None = None,
) -> StatusPage:
    """Read one snapshot. Every target of the config has its entry, synced or not, so a page or a
    scrape taken before the first run already lists each of them."""
    now = time.time() if now is None else now
    chosen = list(config.targets() if targets is None else targets)
    entries = lag_report(config, store, since=since, now=now, with_coverage=with_coverage, targets=chosen)
    ids = store.target_ids()
    points = store.lag.series(since, now)
    hist = {
        str(m): store.lag.histograms(m, LAG_BUCKETS) for m in (LagMeasure.TO_CONFIRMED, LagMeasure.TO_READY)
    }
    empty = LagHistogram(tuple(0 for _ in LAG_BUCKETS), 0, 0.0)
    sums, reasons = store.runs.totals(), store.rejections_by_reason()
    run_reasons = store.runs.rejection_totals()
    series: dict[str, list[LagPoint]] = {}
    histograms: dict[str, dict[str, LagHistogram]] = {}
    totals: dict[str, TargetTotals] = {}
    for t in chosen:
        tid = ids.get(t.key, -1)
        series[t.key] = points.get(tid, [])
        histograms[t.key] = {m: hist[m].get(tid, empty) for m in hist}
        s = sums.get(t.key, RunTotals())
        totals[t.key] = TargetTotals(
            s.confirmed,
            s.rejected,
            s.requests,
            reasons.get(t.key, {}),
            run_reasons.get(t.key, {}),
        )
    keys = [t.key for t in chosen]
    return StatusPage(
        generated_at=now,
        since=since,
        entries=entries,
        series=series,
        histograms=histograms,
        totals=totals,
        runs=store.runs.history(runs_limit, keys),
        daemon=daemon,
    )
