"""TikTokConnector end to end against the Business API emulator on a real socket: audiences,
pushes, errors, retries by TikTok's codes, the file flow's floor and names."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import requests
from audiencesync.connectors.contract import AudienceSpec, Change
from audiencesync.connectors.errors import (
    AudienceGone,
    AuthError,
    ConfigurationRejected,
    FatalError,
    PermissionDenied,
    SchemaMismatch,
    TransientError,
)
from audiencesync.connectors.tiktok import payload as tp
from audiencesync.connectors.tiktok.connector import RetryPolicy, TikTokConnector
from audiencesync.connectors.tiktok.emulator import TikTokEmulator, start_emulator
from tiktok_samples import (
    ADVERTISER,
    FAST,
    SPEC,
    assert_actionable,
    destination,
    people,
    row_of,
    sha,
)


@pytest.fixture(scope="module")
def tiktok_server() -> Iterator[TikTokEmulator]:
    """One emulator for the module: stopping a server takes up to half a second."""
    emulator = start_emulator(advertisers=(ADVERTISER,))
    yield emulator
    emulator.stop()


@pytest.fixture
def tiktok_emulator(tiktok_server: TikTokEmulator) -> TikTokEmulator:
    """The module's emulator, emptied, with its faults cleared and request counts zeroed."""
    requests.post(f"{tiktok_server.admin_url}/_emulator/reset", timeout=5).raise_for_status()
    return tiktok_server


@pytest.fixture
def connect(tiktok_emulator: TikTokEmulator) -> Iterator[Any]:
    made: list[TikTokConnector] = []

    def make(**settings: Any) -> TikTokConnector:
        connector = TikTokConnector(destination(tiktok_emulator.url, **settings), FAST)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


def set_faults(emulator: TikTokEmulator, **switches: Any) -> None:
    requests.post(f"{emulator.admin_url}/_emulator/faults", json=switches, timeout=5).raise_for_status()


def members(emulator: TikTokEmulator, audience_id: str) -> set[tuple[str | None, ...]]:
    state = requests.get(f"{emulator.admin_url}/_emulator/state", timeout=30).json()
    for audience in state["audiences"]:
        if audience["id"] == audience_id:
            return {tuple(m) for m in audience["members"]}
    raise AssertionError(f"no audience {audience_id} in the emulator")


def expected(changes: Sequence[Change]) -> set[tuple[str | None, ...]]:
    return {tuple(row_of(c)) for c in changes}


# --- end to end against the emulator ---------------------------------------------------------------
def push_all(connector: TikTokConnector, audience_id: str, batch: Sequence[Change], adding: bool) -> int:
    """Send in max_batch slices as the runner does; returns the requests made."""
    size = connector.capabilities().max_batch
    send = connector.add if adding else connector.remove
    total = 0
    for i in range(0, len(batch), size):
        result = send(audience_id, batch[i : i + size], None)
        assert len(result.confirmed) == len(batch[i : i + size])
        total += result.requests
    return total


def test_initial_load_changes_and_removes_keep_the_emulator_in_step(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = connect()
    audience_id = connector.ensure_audience(SPEC)
    everyone = people(0, 25_000)

    assert push_all(connector, audience_id, everyone, adding=True) == math.ceil(25_000 / 10_000)
    assert members(tiktok_emulator, audience_id) == expected(everyone)

    joined, left = people(25_000, 26_500), everyone[:2_000]
    push_all(connector, audience_id, joined, adding=True)
    push_all(connector, audience_id, left, adding=False)
    current = everyone[2_000:] + joined
    assert members(tiktok_emulator, audience_id) == expected(current)

    push_all(connector, audience_id, current[:5_000], adding=False)
    assert members(tiktok_emulator, audience_id) == expected(current[5_000:])


def test_ensure_audience_finds_by_name_checks_known_ids_and_creates_once(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    first = connect().ensure_audience(SPEC)
    again = connect().ensure_audience(SPEC)
    pinned = connect().ensure_audience(
        AudienceSpec(SPEC.target, "some other name", "", SPEC.identifier_kinds, known_id=first)
    )
    assert first == again == pinned
    assert tiktok_emulator.requests_to("POST", "segment/audience/") == 1


def test_audience_names_over_70_characters_are_cut_and_still_found(connect: Any) -> None:
    long = AudienceSpec("x@t", "audience-sync: " + "n" * 80, "", ("email",))
    assert connect().ensure_audience(long) == connect().ensure_audience(long)


def test_name_lookup_pages_through_the_list(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    connector = connect()
    for i in range(105):
        connector.ensure_audience(AudienceSpec(f"a{i}@t", f"audience-sync: a{i}", "", ("email",)))
    last = AudienceSpec("a104@t", "audience-sync: a104", "", ("email",))
    before = tiktok_emulator.requests_to("GET", "dmp/custom_audience/list/")
    connect().ensure_audience(last)
    assert tiktok_emulator.requests_to("GET", "dmp/custom_audience/list/") - before == 2
    assert tiktok_emulator.requests_to("POST", "segment/audience/") == 105


def test_a_request_tiktok_finds_too_large_is_split_in_half(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    set_faults(tiktok_emulator, max_batch=3_000)
    connector = connect()
    audience_id = connector.ensure_audience(SPEC)
    batch = people(0, 10_000)
    result = connector.add(audience_id, batch, None)
    # 10,000 is refused, then 2 x 5,000 refused, then 4 x 2,500 accepted.
    assert len(result.confirmed) == 10_000
    assert result.requests == 1 + 2 + 4
    assert members(tiktok_emulator, audience_id) == expected(batch)


def test_people_without_a_usable_id_are_rejected_and_the_rest_sent(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = connect()
    audience_id = connector.ensure_audience(SPEC)
    batch = [*people(0, 10), Change(b"bad", {"email": "plain@example.com"})]
    result = connector.add(audience_id, batch, None)
    assert result.rejected == {b"bad": tp.NO_VALID_ID}
    assert len(result.confirmed) == 10
    assert members(tiktok_emulator, audience_id) == expected(batch[:10])


def test_with_30_percent_faults_resending_what_was_not_confirmed_converges(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = TikTokConnector(
        destination(tiktok_emulator.url, batch_size=500, max_wait_seconds=0),
        RetryPolicy(initial_wait=0.001, max_single_wait=0.005, connect_timeout=1.0, read_timeout=0.2),
    )
    audience_id = connector.ensure_audience(SPEC)
    set_faults(
        tiktok_emulator,
        seed=7,
        rate_limit_rate=0.08,
        server_error_rate=0.06,
        http_error_rate=0.06,
        drop_rate=0.06,
        timeout_rate=0.04,
        timeout_seconds=0.4,
    )
    outstanding = {c.member_key: c for c in people(0, 4_000)}
    rounds, transient = 0, 0
    while outstanding and rounds < 40:
        rounds += 1
        batch = list(outstanding.values())
        for i in range(0, len(batch), 500):
            try:
                result = connector.add(audience_id, batch[i : i + 500], None)
            except TransientError:
                transient += 1
                continue
            for key in result.confirmed:
                del outstanding[key]
    connector.close()
    set_faults(
        tiktok_emulator,
        rate_limit_rate=0,
        server_error_rate=0,
        http_error_rate=0,
        drop_rate=0,
        timeout_rate=0,
    )
    assert not outstanding
    assert transient > 0, "the faults never reached the loop"
    assert members(tiktok_emulator, audience_id) == expected(people(0, 4_000))


def test_retries_stop_at_max_wait_seconds_with_a_transient_error(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = TikTokConnector(
        destination(tiktok_emulator.url, max_wait_seconds=0.05),
        RetryPolicy(initial_wait=0.01, max_single_wait=0.02, connect_timeout=1.0, read_timeout=1.0),
    )
    audience_id = connector.ensure_audience(SPEC)
    set_faults(tiktok_emulator, rate_limit_rate=1.0)
    with pytest.raises(TransientError) as caught:
        connector.add(audience_id, people(0, 5), None)
    connector.close()
    assert caught.value.code == "40100"
    assert caught.value.request_id
    assert "gave up after" in str(caught.value)
    assert tiktok_emulator.requests_to("POST", "segment/mapping/") >= 2


def test_the_wait_budget_spans_every_call_of_the_run(tiktok_emulator: TikTokEmulator) -> None:
    slept: list[float] = []
    connector = TikTokConnector(
        destination(tiktok_emulator.url, max_wait_seconds=0.05),
        RetryPolicy(initial_wait=0.01, max_single_wait=0.02, connect_timeout=1.0, read_timeout=1.0),
        sleep=slept.append,
    )
    audience_id = connector.ensure_audience(SPEC)
    set_faults(tiktok_emulator, server_error_rate=1.0)
    for start in range(0, 50, 5):
        with pytest.raises(TransientError) as caught:
            connector.add(audience_id, people(start, start + 5), None)
        assert caught.value.code == "50000"
    connector.close()
    assert slept and sum(slept) <= 0.05
    # Every retry followed a wait from the budget; once it is spent a batch gets one attempt only.
    assert tiktok_emulator.requests_to("POST", "segment/mapping/") == 10 + len(slept)


def test_an_invalid_token_is_an_auth_error(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    set_faults(tiktok_emulator, invalid_token=True)
    with pytest.raises(AuthError) as caught:
        connect().ensure_audience(SPEC)
    assert_actionable(caught.value, "access_token_env", "40105")


def test_a_missing_permission_is_permission_denied(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    audience_id = connect().ensure_audience(SPEC)
    set_faults(tiktok_emulator, permission_denied=True)
    with pytest.raises(PermissionDenied) as caught:
        connect().add(audience_id, people(0, 3), None)
    assert_actionable(caught.value, "Audience Management", "40001")


def test_an_unknown_advertiser_is_fatal_and_names_the_setting(connect: Any) -> None:
    with pytest.raises(FatalError) as caught:
        connect(advertiser_id="123").ensure_audience(SPEC)
    assert type(caught.value) is FatalError
    assert_actionable(caught.value, "advertiser_id", "40007")


def test_a_deleted_audience_is_gone(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    connector = connect()
    audience_id = connector.ensure_audience(SPEC)
    requests.post(
        f"{tiktok_emulator.url}/open_api/v1.3/dmp/custom_audience/delete/",
        json={"advertiser_id": ADVERTISER, "custom_audience_ids": [audience_id]},
        headers={"Access-Token": "admin"},
        timeout=5,
    ).raise_for_status()
    pinned = AudienceSpec(SPEC.target, SPEC.name, "", SPEC.identifier_kinds, known_id=audience_id)
    with pytest.raises(AudienceGone) as caught:
        connect().ensure_audience(pinned)
    assert audience_id in str(caught.value)
    with pytest.raises(AudienceGone) as pushed:
        connector.add(audience_id, people(0, 3), None)
    assert_actionable(pushed.value, "40007")


def test_an_audience_without_email_phone_or_maid_is_a_schema_mismatch(connect: Any) -> None:
    with pytest.raises(SchemaMismatch):
        connect().ensure_audience(AudienceSpec("x@t", "x", "", ("first_name", "zip")))


def test_read_back_reflects_the_recalculation_delay(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    connector = connect()
    audience_id = connector.ensure_audience(SPEC)
    connector.add(audience_id, people(0, 1_500), None)
    assert connector.read_back(audience_id).size_lower == 1_500

    set_faults(tiktok_emulator, recalc_delay_seconds=0.3)
    connector.add(audience_id, people(1_500, 2_000), None)
    during = connector.read_back(audience_id)
    assert (during.size_lower, during.ready, during.state) == (1_500, False, "calculating")

    set_faults(tiktok_emulator, recalc_delay_seconds=0)
    after = connector.read_back(audience_id)
    assert (after.size_lower, after.size_upper, after.ready) == (2_000, 2_000, True)


def test_unmatched_ids_show_only_in_the_size(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    set_faults(tiktok_emulator, reject_id_rate=0.5)
    connector = connect()
    audience_id = connector.ensure_audience(SPEC)
    result = connector.add(audience_id, people(0, 2_000), None)
    assert len(result.confirmed) == 2_000
    size = connector.read_back(audience_id).size_lower
    assert size is not None and 800 < size < 1_200


def test_a_small_audience_is_reported_as_not_targetable(connect: Any) -> None:
    connector = connect()
    audience_id = connector.ensure_audience(SPEC)
    connector.add(audience_id, people(0, 10), None)
    status = connector.read_back(audience_id)
    assert status.state == "valid, too small to target"
    assert "1,000" in str(status.detail["note"])


def test_file_flow_creates_the_audience_with_the_first_upload(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = connect(flow="file", batch_size=1_000)
    placeholder = connector.ensure_audience(SPEC)
    assert placeholder.startswith("to-create:")
    assert connector.read_back(placeholder).state == "not created yet"
    assert connector.remove(placeholder, people(0, 5), None).requests == 0

    push_all(connector, placeholder, people(0, 2_500), adding=True)
    real_id = connect(flow="file").ensure_audience(
        AudienceSpec(SPEC.target, SPEC.name, "", SPEC.identifier_kinds, known_id=placeholder)
    )
    assert not real_id.startswith("to-create:")
    assert tiktok_emulator.requests_to("POST", "dmp/custom_audience/create/") == 1
    assert tiktok_emulator.requests_to("POST", "dmp/custom_audience/update/") == 2

    push_all(connector, placeholder, people(0, 300), adding=False)
    assert members(tiktok_emulator, real_id) == expected(people(300, 2_500))
    assert connector.read_back(placeholder).size_lower == 2_200


def test_follow_hands_unknown_handles_back_for_resending(connect: Any) -> None:
    statuses = connect().follow("1", ["h1"])
    assert statuses["h1"].state == "failed"


def test_maid_ids_use_the_configured_maid_type(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    connector = connect(maid_type="IDFA")
    spec = AudienceSpec("m@t", "audience-sync: mobile", "", ("maid",))
    audience_id = connector.ensure_audience(spec)
    connector.add(audience_id, [Change(b"d", {"maid": sha("device-1")})], None)
    state = requests.get(f"{tiktok_emulator.admin_url}/_emulator/state", timeout=5).json()
    (audience,) = [a for a in state["audiences"] if a["id"] == audience_id]
    assert audience["id_schema"] == ["IDFA_SHA256"]
    assert audience["members"] == [[sha("device-1")]]


# --- retries by TikTok's codes, end to end -------------------------------------------------------
@pytest.mark.parametrize("code", [40100, 40132, 61000])
def test_every_throttling_code_is_retried_until_the_call_lands(
    tiktok_emulator: TikTokEmulator, code: int
) -> None:
    slept: list[float] = []
    connector = TikTokConnector(destination(tiktok_emulator.url), FAST, sleep=slept.append)
    audience_id = connector.ensure_audience(SPEC)
    set_faults(tiktok_emulator, rate_limit_rate=0.5, rate_limit_code=code, seed=7)
    result = connector.add(audience_id, people(0, 50), None)
    set_faults(tiktok_emulator, rate_limit_rate=0.0)
    connector.close()
    assert len(result.confirmed) == 50
    assert members(tiktok_emulator, audience_id) == expected(people(0, 50))


def _first_wait(tiktok_emulator: TikTokEmulator, **faults: Any) -> float:
    slept: list[float] = []
    policy = RetryPolicy(
        initial_wait=0.001, max_single_wait=0.001, long_wait_factor=10.0, conflict_pause=0.05
    )
    connector = TikTokConnector(
        destination(tiktok_emulator.url, max_wait_seconds=0.2), policy, sleep=slept.append
    )
    audience_id = connector.ensure_audience(SPEC)
    set_faults(tiktok_emulator, **faults)
    with pytest.raises(TransientError):
        connector.add(audience_id, people(0, 5), None)
    set_faults(tiktok_emulator, rate_limit_rate=0.0, write_conflict_rate=0.0)
    connector.close()
    return slept[0]


def test_61000_backs_off_longer_and_40202_waits_at_least_the_conflict_pause(
    tiktok_emulator: TikTokEmulator,
) -> None:
    ordinary = _first_wait(tiktok_emulator, rate_limit_rate=1.0, rate_limit_code=40100)
    blocked = _first_wait(tiktok_emulator, rate_limit_rate=1.0, rate_limit_code=61000)
    conflict = _first_wait(tiktok_emulator, write_conflict_rate=1.0)
    assert ordinary <= 0.001 <= blocked <= 0.01  # a 61000 wait is never shorter than any ordinary one
    assert conflict >= 0.05


def test_a_61000_wait_is_never_shorter_than_the_longest_ordinary_wait(
    tiktok_emulator: TikTokEmulator,
) -> None:
    # The first wait is jittered: repeated, a 61000 block never backs off less than plain throttling.
    assert (
        min(_first_wait(tiktok_emulator, rate_limit_rate=1.0, rate_limit_code=61000) for _ in range(8))
        >= 0.001
    )


def test_an_expired_token_is_an_auth_error(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    set_faults(tiktok_emulator, expired_token=True)
    with pytest.raises(AuthError) as caught:
        connect().ensure_audience(SPEC)
    assert_actionable(caught.value, "40102", "ACCESS_TOKEN_EXPIRE", "access_token_env")


def test_partial_ok_counts_the_batch_as_sent_keeps_the_message_and_resends_nothing(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = connect()
    audience_id = connector.ensure_audience(SPEC)
    set_faults(tiktok_emulator, partial_ok_rate=1.0)
    result = connector.add(audience_id, people(0, 20), None)
    assert len(result.confirmed) == 20 and not result.retry and not result.rejected
    assert result.requests == 1
    (note,) = result.detail["tiktok_partial"]  # type: ignore[misc]
    assert note["tiktok_message"] == "Partial success" and note["request_id"]
    assert tiktok_emulator.requests_to("POST", "segment/mapping/") == 1


# --- the file flow's 1,000-member floor ------------------------------------------------------------
def test_a_file_audience_under_1000_people_is_refused_before_anything_is_uploaded(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = connect(flow="file")
    placeholder = connector.ensure_audience(SPEC)
    with pytest.raises(ConfigurationRejected) as caught:
        connector.add(placeholder, people(0, 999), None)
    text = str(caught.value)
    assert "999" in text and "1,000" in text and 'flow = "segment"' in text
    assert tiktok_emulator.requests_to("POST", "dmp/custom_audience/file/upload/") == 0


def test_a_remove_that_would_leave_under_1000_is_refused_before_upload(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = connect(flow="file")
    placeholder = connector.ensure_audience(SPEC)
    connector.add(placeholder, people(0, 1_200), None)
    uploads = tiktok_emulator.requests_to("POST", "dmp/custom_audience/file/upload/")
    with pytest.raises(ConfigurationRejected) as caught:
        connector.remove(placeholder, people(0, 201), None)
    text = str(caught.value)
    assert "1,200" in text and "stay queued" in text and 'flow = "segment"' in text
    assert tiktok_emulator.requests_to("POST", "dmp/custom_audience/file/upload/") == uploads
    assert tiktok_emulator.requests_to("POST", "dmp/custom_audience/update/") == 0
    # Down to exactly 1,000 is allowed.
    connector.remove(placeholder, people(0, 200), None)
    assert len(members(tiktok_emulator, connector._created[placeholder])) == 1_000


def test_aaid_devices_land_in_a_gaid_file_audience(connect: Any, tiktok_emulator: TikTokEmulator) -> None:
    connector = connect(flow="file", maid_type="AAID")
    spec = AudienceSpec("m@t", "audience-sync: android", "", ("maid",))
    placeholder = connector.ensure_audience(spec)
    connector.add(placeholder, [Change(f"d{i}".encode(), {"maid": sha(f"a{i}")}) for i in range(1_000)], None)
    state = requests.get(f"{tiktok_emulator.admin_url}/_emulator/state", timeout=5).json()
    (audience,) = state["audiences"]
    assert audience["id_schema"] == ["GAID_SHA256"] and len(audience["members"]) == 1_000


# --- names ---------------------------------------------------------------------------------------
def test_a_long_name_is_created_as_67_characters_and_dots_and_found_again(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    name = "audience-sync: " + "n" * 80
    assert tp.cut_name(name, 70) == name[:67] + "..."
    assert tp.cut_name("short", 70) == "short"
    spec = AudienceSpec("x@t", name, "", ("email",))
    first = connect().ensure_audience(spec)
    assert connect().ensure_audience(spec) == first
    state = requests.get(f"{tiktok_emulator.admin_url}/_emulator/state", timeout=5).json()
    assert [a["name"] for a in state["audiences"]] == [name[:67] + "..."]
    assert tiktok_emulator.requests_to("POST", "segment/audience/") == 1


def test_a_file_flow_batch_size_under_1000_is_refused_with_the_setting_to_change(
    connect: Any, tiktok_emulator: TikTokEmulator
) -> None:
    connector = connect(flow="file", batch_size=500)
    placeholder = connector.ensure_audience(SPEC)
    with pytest.raises(ConfigurationRejected) as caught:
        connector.add(placeholder, people(0, 500), None)
    assert "batch_size" in str(caught.value) and "1,000" in str(caught.value)
    assert tiktok_emulator.requests_to("POST", "dmp/custom_audience/file/upload/") == 0
