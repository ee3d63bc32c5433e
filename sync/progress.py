"""Progress of long work, reported by the engine through a callback and rendered by whoever listens
(the CLI's progress bar, or periodic log lines). The library never prints."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("audiencesync.progress")

ROWS_EVERY = 5_000
"""Source rows between two progress reports while planning."""


class ProgressStage(StrEnum):
    PLAN = "plan"
    """Reading the source and planning."""
    PUSH = "push"
    """Sending the outbox."""


@dataclass(frozen=True)
class ProgressEvent:
    """Where one target's work stands in ``stage``; ``to_send`` is what the push has to do, for an
    ETA (0 while planning)."""

    stage: ProgressStage
    target: str
    rows_read: int = 0
    changes_planned: int = 0
    members_sent: int = 0
    to_send: int = 0
    requests: int = 0
    done: bool = False


ProgressSink = Callable[[ProgressEvent], None]


def no_progress(_event: ProgressEvent) -> None:
    """The default sink: nobody listens."""


def counting_rows(rows: Iterable[T], target: str, sink: ProgressSink) -> Iterator[T]:
    """Pass ``rows`` through, reporting every ``ROWS_EVERY`` rows read."""
    read = 0
    for row in rows:
        read += 1
        if read % ROWS_EVERY == 0:
            sink(ProgressEvent(ProgressStage.PLAN, target, rows_read=read))
        yield row
    sink(ProgressEvent(ProgressStage.PLAN, target, rows_read=read, done=True))


PROGRESS_ENV = "AUDIENCE_SYNC_PROGRESS_SECONDS"


def default_interval() -> float:
    """Seconds between progress lines: ``$AUDIENCE_SYNC_PROGRESS_SECONDS``, else 10."""
    try:
        return max(0.0, float(os.environ.get(PROGRESS_ENV, "10")))
    except ValueError:
        return 10.0


class ProgressLog:
    """A sink that logs a progress line at most every ``interval`` seconds, and one when a stage that
    ran that long ends, for JSON logs from cron and the daemon. Work shorter than ``interval`` logs
    nothing: a quick run's log stays one line per outcome. ``interval`` defaults to
    ``$AUDIENCE_SYNC_PROGRESS_SECONDS``, else 10."""

    def __init__(self, interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = default_interval() if interval is None else interval
        self._clock = clock
        self._started: float | None = None
        self._last: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        now = self._clock()
        if self._started is None:
            self._started = now
        due = now - (self._last if self._last is not None else self._started) >= self.interval
        logged_before = self._last is not None
        if event.done:
            self._started = self._last = None
            if not (due or logged_before):
                return
        elif not due:
            return
        else:
            self._last = now
        log.info(
            "progress",
            extra={
                "stage": event.stage,
                "target": event.target,
                "rows_read": event.rows_read,
                "changes_planned": event.changes_planned,
                "members_sent": event.members_sent,
                "to_send": event.to_send,
                "requests": event.requests,
                "done": event.done,
            },
        )
