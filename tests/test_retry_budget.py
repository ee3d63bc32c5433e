"""The one retry policy every connector uses (``audiencesync.connectors.retry``), without a platform."""

from __future__ import annotations

import contextlib

import pytest
from audiencesync.connectors.errors import FatalError, TransientError
from audiencesync.connectors.retry import Backoff, PlatformWait, RetryBudget
from hypothesis import given
from hypothesis import strategies as st


class Flaky:
    """Fails with ``error`` the first ``failures`` times, then answers "ok"."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or TransientError("busy", code="503")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def budget(max_wait: float, slept: list[float], platform_wait: PlatformWait | None = None) -> RetryBudget:
    return RetryBudget("test", max_wait, Backoff(0.01, 0.04), sleep=slept.append, platform_wait=platform_wait)


def test_a_transient_error_is_retried_until_the_call_lands() -> None:
    slept: list[float] = []
    call = Flaky(3)
    assert budget(10, slept).call("push", call) == "ok"
    assert call.calls == 4 and len(slept) == 3


def test_waits_back_off_with_equal_jitter_up_to_the_maximum() -> None:
    slept: list[float] = []
    budget(10, slept).call("push", Flaky(5))
    for attempt, wait in enumerate(slept, start=1):
        backoff = min(0.04, 0.01 * 2 ** (attempt - 1))
        assert backoff / 2 <= wait <= backoff


def test_any_other_error_is_raised_at_once() -> None:
    slept: list[float] = []
    call = Flaky(1, FatalError("no"))
    with pytest.raises(FatalError):
        budget(10, slept).call("push", call)
    assert call.calls == 1 and not slept


def test_the_wait_a_platform_asks_for_is_the_least_wait() -> None:
    slept: list[float] = []
    budget(10, slept).call("push", Flaky(1, TransientError("throttled", retry_after=2.5)))
    assert slept == [2.5]


def test_a_platform_wait_replaces_the_backoff() -> None:
    slept: list[float] = []
    budget(10, slept, lambda _error, wait: wait + 1.0).call("push", Flaky(1))
    assert 1.005 <= slept[0] <= 1.01


def test_giving_up_keeps_the_error_and_says_the_budget_ran_out() -> None:
    slept: list[float] = []
    with pytest.raises(TransientError) as caught:
        budget(0.02, slept).call("push", Flaky(1_000, TransientError("busy", request_id="r1", code="503")))
    error = caught.value
    assert error.code == "503" and error.request_id == "r1"
    assert "gave up after" in str(error) and "within max_wait_seconds" in str(error)
    assert error.retry_after is not None and error.retry_after > 0


@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=8))
def test_one_budget_spans_every_call(failures: list[int]) -> None:
    slept: list[float] = []
    shared = budget(0.1, slept)
    for count in failures:
        with contextlib.suppress(TransientError):
            shared.call("push", Flaky(count))
    assert sum(slept) <= 0.1 + 1e-9
    assert shared.waited == pytest.approx(sum(slept))
