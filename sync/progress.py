"""Progress of long work, reported by the engine through a callback and rendered by whoever listens
(the CLI's progress bar, or periodic log lines). The library never prints."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("audiencesync.progress")

ROWS_EVERY = 5_000
"""Source rows between two progress reports while planning."""


@dataclass(frozen=True)
class ProgressEvent:
    """Where one target's work stands. ``stage`` is ``plan`` (reading the source) or ``push``
    (sending the outbox); ``to_send`` is what the push has to do, for an ETA (0 while planning)."""

    stage: str
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
            sink(ProgressEvent("plan", target, rows_read=read))
        yield row
    sink(ProgressEvent("plan", target, rows_read=read, done=True))


class ProgressLog:
    """A sink that logs a progress line at most every ``interval`` seconds (and when a stage ends),
    for JSON logs from cron and the daemon."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        now = self._clock()
        if not event.done and self._last is not None and now - self._last < self.interval:
            return
        if self._last is None and not event.done:
            self._last = now
            return  # the first report only starts the clock: short work logs no progress at all
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
