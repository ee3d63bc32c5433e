"""One log line per retry, as it happens: what is retried, why, and when the next try is. Shared by
every connector's tenacity loop (``before_sleep``), so a run that keeps retrying is never silent."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import RetryCallState

log = logging.getLogger("audiencesync.connectors.retry")


def retry_logger(platform: str, what: str) -> Callable[[RetryCallState], None]:
    """A ``before_sleep`` hook logging ``what`` on ``platform``, the error that caused the retry
    (its type and first line: connector errors carry no payloads or tokens) and the next try."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}" if error else "unknown"
        log.warning(
            f"{platform}: {what} failed ({reason}); try {state.attempt_number + 1} in {state.upcoming_sleep:.1f}s",
            extra={
                "platform": platform,
                "attempt": state.attempt_number,
                "next_in": round(state.upcoming_sleep, 1),
            },
        )

    return before_sleep
