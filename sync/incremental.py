"""Whether a scan is planned in full or from the source's changed rows, and what its plans record.

With ``[source] incremental = true`` a scan reads the rows changed since the oldest watermark of its
targets, less the safety margin (a row committed late, or stamped by a clock behind the tool's, still
falls inside it). A full reconciliation, the only plan that notices a deleted row, runs when any of
its targets has none recorded or its last one is older than ``full_reconcile_every``. A watermark is
recorded by the transaction that commits the plan to the outbox (``Planner.commit_plan``), so a dry
run, a refused plan or a crash before the commit never moves it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlite_utils
from audiencesync.state.watermarks import Watermark, read_watermark
from audiencesync.sync.config import AudienceConfig, SourceConfig
from audiencesync.sync.plan import Planner, TargetPlan, TargetSpec
from audiencesync.sync.progress import ROWS_EVERY, ProgressEvent, ProgressSink, ProgressStage, no_progress
from audiencesync.sync.row_batches import RowBatch
from audiencesync.sync.source_scan import read_scan, scans_changes


@dataclass(frozen=True)
class ScanWindow:
    """Which rows a scan reads: all of them (``changed_since`` None) or those changed since."""

    changed_since: float | None
    tracked: bool
    """The source is incremental: the scan's plans record a watermark when committed."""

    @property
    def incremental(self) -> bool:
        return self.changed_since is not None


def choose_window(
    db: sqlite_utils.Database,
    source: SourceConfig,
    audiences: Sequence[AudienceConfig],
    target_ids: Sequence[int | None],
    now: float,
) -> ScanWindow:
    """Full when the source is not incremental, a target has no watermark yet, or a full
    reconciliation is due; else the rows changed since the oldest watermark less the margin."""
    settings = source.incremental
    if settings is None or not scans_changes(source, audiences):
        return ScanWindow(None, tracked=False)
    marks = [read_watermark(db, t) if t is not None else None for t in target_ids]
    since: list[float] = []
    for mark in marks:
        if mark is None or mark.changed_at is None or mark.full_at is None:
            return ScanWindow(None, tracked=True)
        if now - mark.full_at >= settings.full_every_seconds:
            return ScanWindow(None, tracked=True)
        since.append(mark.changed_at)
    return ScanWindow(min(since) - settings.margin_seconds, tracked=True)


def mark_plans(plans: Sequence[TargetPlan], window: ScanWindow, now: float) -> None:
    """Set what each plan records when committed. A plan that held back a member in flight records
    nothing: that member's change is planned by the next run, which must read its row again."""
    if not window.tracked:
        return
    for plan in plans:
        if plan.held_in_flight:
            continue
        plan.watermark = Watermark(plan.changed_at_max, None if window.incremental else now)


def plan_scan(
    planner: Planner,
    source: SourceConfig,
    audiences: Sequence[Sequence[TargetSpec]],
    *,
    allow_mass_remove: bool = False,
    progress: ProgressSink = no_progress,
    now: float | None = None,
) -> list[TargetPlan]:
    """Plan the targets of one scan group (``source_scan.scan_groups``) from one read of the
    source: in full, or from its changed rows when the window allows."""
    now = time.time() if now is None else now
    configs = [targets[0][0].audience for targets in audiences]
    target_ids = [spec[1] for targets in audiences for spec in targets]
    window = choose_window(planner.db, source, configs, target_ids, now)
    rows = _counting(
        read_scan(source, configs, changed_since=window.changed_since),
        ",".join(a.name for a in configs),
        progress,
    )
    plans = planner.plan_audiences(
        source, rows, audiences, incremental=window.incremental, allow_mass_remove=allow_mass_remove, now=now
    )
    mark_plans(plans, window, now)
    return plans


def _counting(batches: Iterator[RowBatch], name: str, sink: ProgressSink) -> Iterator[RowBatch]:
    """Pass ``batches`` through, reporting rows read as ``progress.counting_rows`` does."""
    read = 0
    for batch in batches:
        before, read = read, read + len(batch)
        if read // ROWS_EVERY > before // ROWS_EVERY:
            sink(ProgressEvent(ProgressStage.PLAN, name, rows_read=read))
        yield batch
    sink(ProgressEvent(ProgressStage.PLAN, name, rows_read=read, done=True))
