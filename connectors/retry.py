"""The one retry policy of every connector, on tenacity: which errors are retried, how long each wait
is, how long a connector may wait in all, and the log line of each retry.

**``max_wait_seconds`` is the total a connector may sleep between retries over its life, across all
of its calls.** The runner builds one connector per destination per run (the daemon's follow step
one per destination per tick), so this is a budget per destination per run. Once spent, the next
transient failure is raised at once: what was not sent stays in the outbox for the next run. It is
per run, not per call, because a run makes one call per batch (tens of millions of members are
thousands of calls): a per-call budget would let one run against a failing platform wait
``max_wait_seconds`` times the number of batches, holding up the cron slot or the daemon's next tick
for hours, where a per-run budget bounds that delay by the one figure the user set.

Only ``TransientError`` is retried; each platform decides in its own classification which answers
are transient (with the source of each rule there). Each wait is exponential backoff from
``Backoff.initial`` doubling up to ``Backoff.maximum``, with "equal jitter" (half the backoff
fixed, half random, so parallel runs spread out:
aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter), never shorter than what the
platform asked for (``TransientError.retry_after``, such as Meta's
``estimated_time_to_regain_access``). A platform with waits of its own (TikTok's longer pause after
61000) passes ``platform_wait``. A wait that would overrun the budget is not slept: the last error is
raised instead, saying how many attempts were made, with the wait it would have needed as its
``retry_after``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from audiencesync.connectors.errors import TransientError
from tenacity import RetryCallState, Retrying, retry_if_exception_type

T = TypeVar("T")

log = logging.getLogger("audiencesync.connectors.retry")

PlatformWait = Callable[[TransientError, float], float]
"""``(error, backoff) -> wait``: a platform's own wait after ``error``, given the ordinary backoff."""


@dataclass(frozen=True)
class Backoff:
    """The first wait and the longest ordinary wait, in seconds; tests shrink both."""

    initial: float = 2.0
    maximum: float = 120.0

    def wait(self, attempt: int) -> float:
        """The jittered wait after failed attempt number ``attempt`` (1 for the first)."""
        backoff = min(self.maximum, self.initial * 2.0 ** (attempt - 1))
        return backoff / 2 + random.random() * backoff / 2


DEFAULT_MAX_WAIT_SECONDS = 300
"""A destination's ``max_wait_seconds`` when it sets none (every platform takes the key)."""


def max_wait_seconds(settings: Mapping[str, Any]) -> float:
    """The destination's ``max_wait_seconds``, or the default."""
    value = settings.get("max_wait_seconds")
    return float(DEFAULT_MAX_WAIT_SECONDS if value is None else value)


class RetryBudget:
    """Runs calls with retries on ``TransientError`` while the connector's ``max_wait_seconds`` lasts.
    One per connector: every call it runs draws on the same budget."""

    def __init__(
        self,
        platform: str,
        max_wait_seconds: float,
        backoff: Backoff | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        platform_wait: PlatformWait | None = None,
    ) -> None:
        self.platform = platform
        self.max_wait_seconds = max_wait_seconds
        self.backoff = backoff or Backoff()
        self.waited = 0.0
        """Seconds slept between retries so far, over every call."""
        self._sleep = sleep
        self._platform_wait = platform_wait

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()``, tried again after each ``TransientError`` while the budget lasts; any other
        error is raised at once. ``what`` names the call in the retry log line."""
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            wait=self._wait,
            stop=self._stop,
            sleep=self._sleep,
            before_sleep=retry_logger(self.platform, what),
            retry_error_callback=_give_up,
        )
        result: T = retrying(attempt)
        return result

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = self.backoff.wait(state.attempt_number)
        if isinstance(error, TransientError):
            if self._platform_wait is not None:
                wait = self._platform_wait(error, wait)
            wait = max(wait, error.retry_after or 0.0)
        return float(wait)

    def _stop(self, state: RetryCallState) -> bool:
        # tenacity computes the next wait before asking whether to stop, so a wait that would take
        # the total past the budget is never slept.
        if self.waited + state.upcoming_sleep <= self.max_wait_seconds:
            self.waited += state.upcoming_sleep
            return False
        return True


def _give_up(state: RetryCallState) -> object:
    """Raise the last transient error, saying how many attempts the budget allowed."""
    outcome = state.outcome
    assert outcome is not None
    last = outcome.exception()
    assert isinstance(last, TransientError)
    attempts = state.attempt_number
    raise TransientError(
        f"{last.message}; gave up after {attempts} attempt{'s' if attempts != 1 else ''} within "
        "max_wait_seconds",
        request_id=last.request_id,
        code=last.code,
        retry_after=last.retry_after or state.upcoming_sleep or None,
    ) from None


def retry_logger(platform: str, what: str) -> Callable[[RetryCallState], None]:
    """A ``before_sleep`` hook logging ``what`` on ``platform``, the error that caused the retry
    (its type and first line: connector errors carry no payloads or tokens) and the next try, so a
    run that keeps retrying is never silent."""

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
