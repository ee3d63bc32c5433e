"""The CLI's rendering of engine progress: a rich progress bar on a terminal, shown only once the
work has lasted a couple of seconds, so quick runs stay as quiet as before."""

from __future__ import annotations

import time

from audiencesync.sync.progress import ProgressEvent
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)


class ProgressBar:
    """A ``ProgressSink`` drawing one bar per target and stage on ``console`` (stderr)."""

    def __init__(self, console: Console, delay: float = 2.0) -> None:
        self.console = console
        self.delay = delay
        self._started = time.monotonic()
        self._progress: Progress | None = None
        self._tasks: dict[tuple[str, str], TaskID] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if self._progress is None:
            if time.monotonic() - self._started < self.delay:
                return
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        key = (event.stage, event.target)
        if key not in self._tasks:
            self._tasks[key] = self._progress.add_task(f"{event.stage} {event.target}", total=None, detail="")
        task = self._tasks[key]
        if event.stage == "plan":
            detail = f"{event.rows_read:,} rows read"
            if event.done:
                detail += f", {event.changes_planned:,} changes planned"
            total = event.rows_read if event.done else None
            self._progress.update(task, completed=event.rows_read, total=total, detail=detail)
        else:
            self._progress.update(
                task,
                completed=event.members_sent,
                total=max(event.to_send, event.members_sent) or None,
                detail=f"{event.requests:,} requests",
            )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
