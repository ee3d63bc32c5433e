"""SIGTERM and SIGINT for a one-shot command: the first asks the run to stop after the batch in flight
(the runner checks between batches), and the command then exits 128 + the signal's number, as a shell
reports a process a signal ended (130 for Ctrl-C, 143 for SIGTERM)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("audiencesync.stop")


class StopRequest:
    """Set by the first SIGTERM or SIGINT; ``requested`` is what ``RunOptions.should_stop`` checks."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def requested(self) -> bool:
        return self._event.is_set()

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self._event.is_set():
            self.signum = signum
            log.warning(
                "stop requested: finishing the batch in flight, then stopping",
                extra={"signal": signal.Signals(signum).name},
            )
        self._event.set()

    @property
    def exit_code(self) -> int | None:
        """128 + the signal number once a stop was requested, else None."""
        return None if self.signum is None else 128 + self.signum


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the handlers for the duration of the block (main thread only), then restore them."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.signal(sig, request.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
