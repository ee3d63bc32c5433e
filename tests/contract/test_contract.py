"""The contract the runner relies on, checked for every (connector, emulator) pair in ``platforms``.

Each test drives a real connector with its real SDK or HTTP client over a real socket against the
platform's emulator, and looks at the emulator's admin state for what the platform holds. The pattern
is Meltano's target test suites: one set of behaviours, parametrized over every platform.

What the runner relies on (``audiencesync.connectors.contract``):
- ``ensure_audience`` finds or creates by name (never a second audience), takes a pinned id, and
  raises ``AudienceGone`` for a pinned id the platform does not have;
- re-sending an add is harmless; a remove takes out exactly the members added with those identifiers;
- a member the platform refuses is reported as rejected, with a reason, and the rest are applied;
- after the retry budget a transient failure raises ``TransientError`` and leaves the audience as it
  was, so the batch can be sent again from the outbox;
- throttling is waited out (the connector sleeps, at least as long as the platform asked);
- a request-level refusal raises ``FatalError`` and is never turned into member rejections.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import ExitStack

import pytest
from audiencesync.connectors.contract import AudienceSpec, Change, Connector, PushResult
from audiencesync.connectors.errors import AudienceGone, FatalError, TransientError
from platforms import PLATFORMS, Platform, Running, expected, person

KINDS = ("email", "phone")
_names = itertools.count()

# Cases known to fail because of a bug not fixed yet; strict, so they flip to a failure (and the mark
# is removed) once it is fixed.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "platform" in metafunc.fixturenames:
        params = []
        for platform in PLATFORMS:
            marks = []
            reason = KNOWN_BUGS.get((platform.name, metafunc.function.__name__))
            if reason:
                marks.append(pytest.mark.xfail(reason=reason, strict=True))
            params.append(pytest.param(platform, id=platform.name, marks=marks))
        metafunc.parametrize("platform", params, scope="module")


@pytest.fixture(scope="module")
def _servers() -> Iterator[_Lazy]:
    """Emulators started on first use, one per platform, stopped when the module is done."""
    with ExitStack() as stack:
        yield _Lazy(stack)


class _Lazy(dict[str, Running]):
    def __init__(self, stack: ExitStack) -> None:
        super().__init__()
        self.stack = stack

    def __missing__(self, key: str) -> Running:
        platform = next(p for p in PLATFORMS if p.name == key)
        self[key] = self.stack.enter_context(platform.start())
        return self[key]


class Harness:
    """A platform's emulator, emptied, and connectors on it that record their sleeps."""

    def __init__(self, platform: Platform, emulator: Running) -> None:
        self.platform = platform
        self.emulator = emulator
        self.slept: list[float] = []
        self.spec = AudienceSpec("vip@dest", f"audience-sync: vip {next(_names)}", "VIPs", KINDS)
        self._made: list[Connector] = []

    def connector(self, max_wait: float = 30.0) -> Connector:
        connector = self.platform.connect(self.emulator, self.slept.append, max_wait)
        self._made.append(connector)
        return connector

    def close(self) -> None:
        for connector in self._made:
            self.platform.close(connector)

    def members(self) -> set[frozenset[str]]:
        return self.platform.members(self.emulator, name=self.spec.name)

    def platform_id(self) -> str:
        (audience,) = [a for a in self.emulator.audiences() if a["name"] == self.spec.name]
        return str(audience["id"])

    def people(self, start: int = 0, count: int | None = None) -> list[Change]:
        return [person(i) for i in range(start, start + (count or self.platform.population))]


@pytest.fixture
def harness(platform: Platform, _servers: dict[str, Running]) -> Iterator[Harness]:
    emulator = _servers[platform.name]
    emulator.reset()
    made = Harness(platform, emulator)
    yield made
    made.close()


def push(
    connector: Connector, audience_id: str, batch: Sequence[Change], *, remove: bool = False
) -> PushResult:
    """One add or remove as the runner sends it, followed until nothing is pending, folded into one
    result (pending handles that settle confirmed count as confirmed)."""
    send = connector.remove if remove else connector.add
    result = send(audience_id, batch, None)
    outcome = PushResult(
        confirmed=list(result.confirmed), rejected=dict(result.rejected), retry=list(result.retry)
    )
    pending = dict(result.pending)
    for _ in range(200):
        if not pending:
            break
        for handle, status in connector.follow(audience_id, list(pending)).items():
            if status.state == "confirmed":
                outcome.confirmed.extend(pending.pop(handle))
            elif status.state == "failed":
                outcome.retry.extend(pending.pop(handle))
    assert not pending, "handles never settled"
    return outcome


def keys(changes: Sequence[Change]) -> set[bytes]:
    return {c.member_key for c in changes}


# --- audiences ----------------------------------------------------------------------------------------


def test_ensure_audience_finds_by_name_and_never_creates_a_second(harness: Harness) -> None:
    first = harness.connector()
    audience_id = first.ensure_audience(harness.spec)
    batch = harness.people()
    assert set(push(first, audience_id, batch).confirmed) == keys(batch)

    again = harness.connector()
    found = again.ensure_audience(harness.spec)
    more = harness.people(len(batch), 3)
    assert set(push(again, found, more).confirmed) == keys(more)
    assert harness.members() == expected(batch + more)  # one audience by that name, holding both


def test_a_pinned_audience_is_used_and_a_deleted_one_is_gone(harness: Harness) -> None:
    connector = harness.connector()
    batch = harness.people()
    push(connector, connector.ensure_audience(harness.spec), batch)
    pinned_id = harness.platform_id()

    renamed = AudienceSpec(harness.spec.target, "another name", "", KINDS, known_id=pinned_id)
    audience_id = harness.connector().ensure_audience(renamed)
    extra = harness.people(len(batch), 2)
    push(connector, audience_id, extra)
    assert harness.members() == expected(batch + extra)

    gone = AudienceSpec(harness.spec.target, harness.spec.name, "", KINDS, known_id="9999999999")
    with pytest.raises(AudienceGone):
        harness.connector().ensure_audience(gone)


# --- members --------------------------------------------------------------------------------------------


def test_re_adding_the_same_members_changes_nothing(harness: Harness) -> None:
    connector = harness.connector()
    audience_id = connector.ensure_audience(harness.spec)
    batch = harness.people()
    push(connector, audience_id, batch)
    again = push(connector, audience_id, batch)
    assert set(again.confirmed) == keys(batch) and not again.rejected
    assert harness.members() == expected(batch)


def test_a_remove_takes_out_exactly_the_members_added_with_those_identifiers(harness: Harness) -> None:
    connector = harness.connector()
    audience_id = connector.ensure_audience(harness.spec)
    stay = harness.people()
    leave = harness.people(len(stay), 4)
    push(connector, audience_id, stay + leave)

    removed = push(connector, audience_id, leave, remove=True)
    assert set(removed.confirmed) == keys(leave)
    assert harness.members() == expected(stay)


def test_a_refused_member_is_rejected_with_a_reason_and_the_rest_applied(harness: Harness) -> None:
    connector = harness.connector()
    audience_id = connector.ensure_audience(harness.spec)
    good = harness.people()
    bad = harness.platform.refuse(harness.emulator, person(len(good)))
    result = push(connector, audience_id, [*good, bad])
    assert set(result.rejected) == {bad.member_key}
    (reason,) = result.rejected.values()
    assert reason and bad.identifiers["email"].lower() not in reason.lower()  # no hash in a reason
    assert set(result.confirmed) == keys(good)
    assert harness.members() == expected(good)


def test_a_transient_error_past_the_retry_budget_raises_and_changes_nothing(harness: Harness) -> None:
    connector = harness.connector(max_wait=1.0)
    audience_id = connector.ensure_audience(harness.spec)
    first = harness.people()
    push(connector, audience_id, first)
    later = harness.people(len(first), 3)

    harness.emulator.faults(**harness.platform.transient)
    with pytest.raises(TransientError):
        push(connector, audience_id, later)
    assert harness.slept and sum(harness.slept) <= 1.0  # retried, within the budget
    harness.emulator.faults(**{switch: 0.0 for switch in harness.platform.transient})
    assert harness.members() == expected(first)

    # The batch was kept by the runner: the next run finds the audience and sends it again.
    next_run = harness.connector()
    pinned = AudienceSpec(harness.spec.target, harness.spec.name, "", KINDS, known_id=audience_id)
    resent = push(next_run, next_run.ensure_audience(pinned), later)
    assert set(resent.confirmed) == keys(later)
    assert harness.members() == expected(first + later)


def test_throttling_is_waited_out_as_long_as_the_platform_asks(harness: Harness) -> None:
    connector = harness.connector(max_wait=3_600.0)
    audience_id = connector.ensure_audience(harness.spec)
    harness.emulator.faults(seed=3, **harness.platform.throttle)
    batches = [harness.people(i * 10_000, harness.platform.population) for i in range(4)]
    for batch in batches:
        assert set(push(connector, audience_id, batch).confirmed) == keys(batch)
    assert harness.slept, "the throttling never reached the connector"
    assert all(wait >= harness.platform.min_asked_wait for wait in harness.slept)
    assert harness.members() == expected([c for b in batches for c in b])


def test_a_request_level_error_is_fatal_and_rejects_no_member(harness: Harness) -> None:
    connector = harness.connector()
    connector.ensure_audience(harness.spec)
    batch = harness.people()
    # An audience id the platform does not have fails the whole request, whatever the members.
    with pytest.raises(FatalError):
        result = push(connector, "9999999999", batch)
        pytest.fail(f"no error; {len(result.rejected)} members rejected, {len(result.confirmed)} confirmed")


def test_max_wait_seconds_is_one_budget_over_every_call_of_a_connector(harness: Harness) -> None:
    # One meaning on every platform (audiencesync.connectors.retry): the total a connector sleeps
    # between retries over all its calls, that is per destination per run; never a fresh budget for
    # each call, which would let six failing batches wait six times as long.
    budget = 0.3
    connector = harness.connector(max_wait=budget)
    audience_id = connector.ensure_audience(harness.spec)
    harness.emulator.faults(**harness.platform.transient)
    for batch in range(6):
        with pytest.raises(TransientError, match="within max_wait_seconds"):
            push(connector, audience_id, harness.people(batch * harness.platform.population))
    harness.emulator.faults(**{switch: 0.0 for switch in harness.platform.transient})
    assert harness.slept, "no retry was made"
    assert sum(harness.slept) <= budget
