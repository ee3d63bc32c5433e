"""TikTokConnector: golden request bodies, the pure envelope mapping, and end-to-end runs against the
Business API emulator on a real socket."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from audiencesync.connectors.contract import AudienceSpec, Change, DestinationConfig
from audiencesync.connectors.errors import (
    AudienceGone,
    AuthError,
    ConfigurationRejected,
    ConnectorError,
    FatalError,
    PermissionDenied,
    SchemaMismatch,
    TransientError,
)
from audiencesync.connectors.tiktok import payload as tp
from audiencesync.connectors.tiktok.connector import RetryPolicy, TikTokConnector, base_url
from audiencesync.connectors.tiktok.emulator import TikTokEmulator, start_emulator

ADVERTISER = "7000000000000000042"
TOKEN = "tok-very-secret-0123456789"
FAST = RetryPolicy(initial_wait=0.001, max_single_wait=0.005, connect_timeout=2.0, read_timeout=2.0)
API = "https://business-api.tiktok.com/open_api/v1.3/"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def person(i: int, *, phone: bool = True) -> Change:
    ids = {"email": sha(f"user{i}@example.com")}
    if phone:
        ids["phone"] = sha(f"+1555{i:07d}")
    return Change(member_key=f"m{i}".encode(), identifiers=ids)


def people(start: int, stop: int) -> list[Change]:
    return [person(i, phone=i % 3 != 0) for i in range(start, stop)]


def row_of(change: Change) -> list[str | None]:
    return [change.identifiers.get("email"), change.identifiers.get("phone")]


def destination(endpoint: str, **settings: Any) -> DestinationConfig:
    values: dict[str, Any] = {
        "platform": "tiktok",
        "advertiser_id": ADVERTISER,
        "access_token_env": "TIKTOK_ACCESS_TOKEN",
        "batch_size": 10_000,
        "flow": "segment",
        "maid_type": "GAID",
        "name_prefix": "audience-sync: ",
        "max_wait_seconds": 5,
        "endpoint": endpoint,
    }
    values.update(settings)
    return DestinationConfig(
        name="tiktok_main",
        platform="tiktok",
        settings=values,
        secrets={"access_token": TOKEN},
        name_prefix="audience-sync: ",
        base_dir=Path("."),
    )


SPEC = AudienceSpec(
    target="vip@tiktok_main",
    name="audience-sync: vip",
    description="",
    identifier_kinds=("email", "phone"),
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


# --- pure: envelope and code mapping ---------------------------------------------------------------
def envelope(code: int, message: str = "msg", http: int = 200) -> tp.Envelope:
    return tp.Envelope(http, code, message, "req-123", {})


@pytest.mark.parametrize(
    ("code", "http", "error_class"),
    [
        # tiktok_code.py names; the classes are the connector's (docs/setup-tiktok.md).
        (40100, 200, TransientError),  # REQUEST_TOO_FREQUENT
        (40132, 200, TransientError),  # REQUEST_FREQUENCY_LIMITED
        (61000, 200, TransientError),  # TOO_MANY_REQUESTS_BL
        (40202, 200, TransientError),  # WRITE_CONFLICT
        (50000, 200, TransientError),  # SYS_ERROR
        (50002, 200, TransientError),  # SYS_TIMEOUT
        (51003, 200, TransientError),  # DMP_ERROR
        (51234, 200, TransientError),  # in the 51xxx block
        (60001, 200, TransientError),  # MAINTENANCE
        (-1, 503, TransientError),
        (-1, 429, TransientError),
        (40102, 200, AuthError),  # ACCESS_TOKEN_EXPIRE
        (40104, 200, AuthError),  # EMPTY_ACCESS_TOKEN
        (40105, 200, AuthError),  # INVALID_ACCESS_TOKEN
        (40101, 200, FatalError),  # INVALID_PARTNER
        (40110, 200, FatalError),  # AUTH_CODE_ERROR
        (40001, 200, PermissionDenied),  # PERMISSION_ERROR
        (40118, 200, PermissionDenied),  # NOT_IN_WHITELIST
        (40002, 200, FatalError),  # PARAM_ERROR
        (40062, 200, FatalError),  # PII_NOT_HASHED
        (40061, 200, FatalError),  # INVALID_BATCH_SIZE, once it cannot be split further
        (42900, 200, FatalError),  # not a TikTok code
        (40999, 200, FatalError),
        (-1, 404, FatalError),
    ],
)
def test_each_tiktok_code_maps_to_its_error_class(code: int, http: int, error_class: type) -> None:
    error = tp.classify(envelope(code, http=http), operation="member add")
    assert type(error) is error_class


def test_every_code_of_tiktoks_sdk_has_its_name_and_one_class() -> None:
    assert tp.code_name(40132) == "REQUEST_FREQUENCY_LIMITED"
    assert tp.code_name(61000) == "TOO_MANY_REQUESTS_BL"
    assert tp.code_name(42900) is None
    for code in tp.TIKTOK_CODES:
        assert isinstance(tp.code_class(200, code), tp.CodeClass)
    assert tp.code_class(200, 61000) is tp.CodeClass.RATE_LIMITED_LONG


def test_partial_ok_is_success_and_keeps_what_tiktok_said() -> None:
    env = envelope(20001, f"2 of 3 ids failed: {sha('x')}")
    assert tp.classify(env, operation="member add") is None
    detail = tp.partial_detail(env)
    assert detail["tiktok_message"] == "2 of 3 ids failed: <redacted>"
    assert detail["request_id"] == "req-123"


def test_permission_and_credential_errors_name_the_code_and_what_to_do() -> None:
    allowlist = tp.classify(envelope(40118), operation="member add")
    assert allowlist is not None and "NOT_IN_WHITELIST" in str(allowlist) and "allowlist" in str(allowlist)
    partner = tp.classify(envelope(40101), operation="member add")
    assert type(partner) is FatalError and "app's credentials" in str(partner)
    hashing = tp.classify(envelope(40062), operation="member add")
    assert hashing is not None and "bug" in str(hashing)


def test_an_unknown_code_is_fatal_with_the_request_id() -> None:
    error = tp.classify(envelope(47777), operation="member add")
    assert type(error) is FatalError
    assert "req-123" in str(error) and "47777" in str(error) and "unexpected" in str(error)


def test_success_is_code_zero_and_http_200_with_code_zero_is_not_enough_otherwise() -> None:
    assert tp.classify(envelope(0), operation="x") is None
    assert tp.classify(envelope(40002), operation="x") is not None


def test_not_found_means_a_gone_audience_only_when_the_call_named_one() -> None:
    gone = tp.classify(envelope(40007), operation="x", audience_id="71")
    assert type(gone) is AudienceGone and "audience 71" in str(gone)
    error = tp.classify(envelope(40007), operation="audience list")
    assert type(error) is FatalError
    assert "advertiser_id" in str(error)


def test_errors_carry_the_request_id_and_tiktoks_message_without_hashes() -> None:
    leaky = f"invalid id {sha('a@b.c')} in batch"
    error = tp.classify(envelope(40002, leaky), operation="member add")
    assert error is not None
    assert "req-123" in str(error)
    assert "invalid id <redacted> in batch" in str(error)
    assert sha("a@b.c") not in str(error)


def test_a_body_that_is_not_the_envelope_keeps_the_http_status() -> None:
    env = tp.parse_envelope(503, b"<html>Service Unavailable</html>")
    assert (env.http_status, env.code, env.request_id) == (503, -1, None)
    assert isinstance(tp.classify(env, operation="x"), TransientError)


def test_too_large_is_tiktoks_size_codes_or_http_413() -> None:
    # tiktok_code.py: 40061 INVALID_BATCH_SIZE, 40011 ID_LIMIT_EXCEED, 40907 FILE_TOO_LARGE.
    for code in (40061, 40011, 40907):
        assert tp.is_too_large(envelope(code))
    assert tp.is_too_large(envelope(-1, http=413))
    # A parameter error is not a size error, whatever its message says.
    assert not tp.is_too_large(envelope(40002, "batch_data too large: at most 5000 per request"))
    assert not tp.is_too_large(envelope(40002, "id_schema: unknown id type"))


def test_rows_leave_out_malformed_hashes_and_reject_people_with_none_left() -> None:
    batch = [
        Change(b"a", {"email": sha("a"), "phone": "not-a-hash"}),
        Change(b"b", {"email": "UPPER" * 3}),
        Change(b"c", {"phone": sha("c").upper()}),
    ]
    rows = tp.person_rows(("email", "phone"), batch)
    assert rows.keys == [b"a", b"c"]
    assert rows.rows == [(sha("a"), None), (None, sha("c"))]
    assert rows.rejected == {b"b": tp.NO_VALID_ID}


def test_read_back_says_when_tiktok_is_recalculating_or_the_audience_is_too_small() -> None:
    calculating = tp.platform_status({"audience_details": {"cover_num": 5000, "is_valid": False}})
    assert (calculating.size_lower, calculating.ready, calculating.state) == (5000, False, "calculating")
    small = tp.platform_status({"cover_num": 600, "is_valid": True, "is_expiring": False})
    assert small.ready and small.state == "valid, too small to target"
    assert "1,000" in str(small.detail["note"])
    usable = tp.platform_status({"cover_num": 25_000, "is_valid": True})
    assert usable.state == "valid" and usable.detail["usable"] is True


def test_base_url_appends_the_v13_prefix_once() -> None:
    assert base_url(None) == API
    assert base_url("http://127.0.0.1:8802/") == "http://127.0.0.1:8802/open_api/v1.3/"
    assert base_url("127.0.0.1:8802") == "http://127.0.0.1:8802/open_api/v1.3/"
    assert base_url("https://proxy.example/open_api/v1.3") == "https://proxy.example/open_api/v1.3/"


# --- golden request bodies -------------------------------------------------------------------------
GOLDEN_BATCH = [
    Change(b"k1", {"email": sha("one@example.com"), "phone": sha("+15550000001")}),
    Change(b"k2", {"email": sha("two@example.com")}),
]


AUDIENCE = "7100000000000000001"


def golden_connector(kinds: tuple[str, ...] = ("email", "phone"), **settings: Any) -> TikTokConnector:
    """A connector pointed at TikTok's real host (answered by ``responses``) whose audience was
    resolved through ensure_audience, as the runner always does before pushing."""
    ok = {"code": 0, "message": "OK", "request_id": "r0"}
    responses.get(API + "user/info/", json={**ok, "data": {}})
    found = {"list": [{"audience_id": AUDIENCE, "name": SPEC.name}], "page_info": {"total_page": 1}}
    responses.get(API + "dmp/custom_audience/list/", json={**ok, "data": found})
    connector = TikTokConnector(destination("https://business-api.tiktok.com", **settings), FAST)
    assert connector.ensure_audience(AudienceSpec(SPEC.target, SPEC.name, "", kinds)) == AUDIENCE
    return connector


def sent_to(route: str) -> list[Any]:
    return [call.request for call in responses.calls if call.request.url.startswith(API + route)]


@responses.activate
def test_golden_add_body() -> None:
    responses.post(
        API + "segment/mapping/", json={"code": 0, "message": "OK", "request_id": "r1", "data": {}}
    )
    result = golden_connector().add(AUDIENCE, GOLDEN_BATCH, None)
    (sent,) = sent_to("segment/mapping/")
    assert sent.headers["Access-Token"] == TOKEN
    assert json.loads(sent.body) == {
        "advertiser_ids": [ADVERTISER],
        "action": "add",
        "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [
            [
                {"id": sha("one@example.com"), "audience_ids": [AUDIENCE]},
                {"id": sha("+15550000001"), "audience_ids": [AUDIENCE]},
            ],
            [{"id": sha("two@example.com"), "audience_ids": [AUDIENCE]}, {}],
        ],
    }
    assert (result.confirmed, result.requests) == ([b"k1", b"k2"], 1)


@responses.activate
def test_golden_delete_body_uses_delete_never_remove() -> None:
    responses.post(
        API + "segment/mapping/", json={"code": 0, "message": "OK", "request_id": "r2", "data": {}}
    )
    golden_connector().remove(AUDIENCE, GOLDEN_BATCH[1:], None)
    (sent,) = sent_to("segment/mapping/")
    assert json.loads(sent.body) == {
        "advertiser_ids": [ADVERTISER],
        "action": "delete",
        "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [[{"id": sha("two@example.com"), "audience_ids": [AUDIENCE]}, {}]],
    }


def test_mapping_json_is_the_mapping_body_serialized() -> None:
    schema = ["EMAIL_SHA256", "PHONE_SHA256"]
    rows: list[tuple[str | None, ...]] = [(sha("a"), sha("b")), (None, sha("c")), (sha("d"), None)]
    for action, audience in (("add", AUDIENCE), ("delete", AUDIENCE), ("add", "71%s00%%")):
        fast = tp.mapping_json(ADVERTISER, audience, action, schema, rows)
        body = tp.mapping_body(ADVERTISER, audience, action, schema, rows)
        assert fast == json.dumps(body, separators=(",", ":")).encode()
    # A value that would need escaping goes through json.dumps.
    odd = [('x"\\é', None)]
    assert json.loads(tp.mapping_json(ADVERTISER, AUDIENCE, "add", schema, odd)) == tp.mapping_body(
        ADVERTISER, AUDIENCE, "add", schema, odd
    )
    assert json.loads(tp.mapping_json(ADVERTISER, AUDIENCE, "add", schema, []))["batch_data"] == []
    with pytest.raises(ValueError):
        tp.mapping_json(ADVERTISER, AUDIENCE, "remove", schema, rows)


def test_person_rows_take_hex_as_is_and_normalize_or_drop_the_rest() -> None:
    kinds = ("email", "phone")
    batch = [
        Change(b"k1", {"email": sha("a"), "phone": sha("b")}),
        Change(b"k2", {"email": " " + sha("c").upper() + " "}),
        Change(b"k3", {"email": "not-a-hash"}),
        Change(b"k4", {}),
    ]
    out = tp.person_rows(kinds, batch)
    assert out.keys == [b"k1", b"k2"]
    assert out.rows == [(sha("a"), sha("b")), (sha("c"), None)]
    assert out.rejected == {b"k3": tp.NO_VALID_ID, b"k4": tp.NO_VALID_ID}
    clean = tp.person_rows(kinds, batch[:1])
    assert (clean.keys, clean.rows, clean.rejected) == ([b"k1"], [(sha("a"), sha("b"))], {})


def multipart_fields(request: Any) -> dict[str, bytes]:
    raw = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode() + request.body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    out: dict[str, bytes] = {}
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        out[str(part.get_param("name", header="content-disposition"))] = payload
    return out


@responses.activate
def test_golden_file_upload_then_append_names_the_action() -> None:
    ok = {"code": 0, "message": "OK", "request_id": "r3"}
    responses.post(API + "dmp/custom_audience/file/upload/", json={**ok, "data": {"file_path": "f/1.csv"}})
    responses.post(API + "dmp/custom_audience/update/", json={**ok, "data": {}})
    golden_connector(flow="file").add(AUDIENCE, GOLDEN_BATCH, None)
    (upload,) = sent_to("dmp/custom_audience/file/upload/")
    (update,) = sent_to("dmp/custom_audience/update/")

    content = (
        f"EMAIL_SHA256,PHONE_SHA256\n{sha('one@example.com')},{sha('+15550000001')}\n{sha('two@example.com')},\n"
    ).encode()
    signature = hashlib.md5(content).hexdigest()
    assert multipart_fields(upload) == {
        "advertiser_id": ADVERTISER.encode(),
        "calculate_type": b"MULTIPLE_TYPES",
        "file_name": f"audience-sync-{signature[:16]}.csv".encode(),
        "file_signature": signature.encode(),
        "file": content,
    }
    assert json.loads(update.body) == {
        "advertiser_id": ADVERTISER,
        "custom_audience_id": AUDIENCE,
        "action": "APPEND",
        "file_paths": ["f/1.csv"],
    }


@responses.activate
def test_golden_single_type_file_is_one_hash_per_line() -> None:
    ok = {"code": 0, "message": "OK", "request_id": "r4"}
    responses.post(API + "dmp/custom_audience/file/upload/", json={**ok, "data": {"file_path": "f/2.csv"}})
    responses.post(API + "dmp/custom_audience/update/", json={**ok, "data": {}})
    big = {"audience_id": AUDIENCE, "cover_num": 5_000, "is_valid": True}
    responses.get(API + "dmp/custom_audience/get/", json={**ok, "data": {"list": [big]}})
    golden_connector(("email",), flow="file").remove(AUDIENCE, GOLDEN_BATCH, None)
    (upload,) = sent_to("dmp/custom_audience/file/upload/")
    (update,) = sent_to("dmp/custom_audience/update/")
    fields = multipart_fields(upload)
    assert fields["calculate_type"] == b"EMAIL_SHA256"
    assert fields["file"] == f"{sha('one@example.com')}\n{sha('two@example.com')}\n".encode()
    assert json.loads(update.body)["action"] == "REMOVE"


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


def assert_actionable(error: ConnectorError, *words: str) -> None:
    text = str(error)
    assert error.request_id and error.request_id in text
    assert TOKEN not in text
    assert "http" not in text.lower()
    for word in words:
        assert word in text


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


@responses.activate
def test_a_parameter_error_is_fatal_with_tiktoks_message() -> None:
    connector = golden_connector()
    answer = {"code": 40002, "message": "id_schema: unknown id type", "request_id": "r9", "data": {}}
    responses.post(API + "segment/mapping/", json=answer)
    with pytest.raises(FatalError) as caught:
        connector.add(AUDIENCE, GOLDEN_BATCH, None)
    assert_actionable(caught.value, "40002", "PARAM_ERROR", "id_schema: unknown id type")


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


# --- TikTok's SDK as the authority -----------------------------------------------------------------
# The request schemas TikTok's SDK publishes, transcribed field by field (names, required or not):
# python_sdk/docs/AudienceApi.md (dmp_custom_audience_file_upload parameters) and
# yml_files/dmp_custom_audience_file_upload.yml; python_sdk/docs/CustomAudienceCreateBody.md;
# python_sdk/docs/CustomAudienceUpdateBody.md. The SDK publishes no filled-in sample request, so the
# golden check is on the fields, their required set and their enum values.
SDK_UPLOAD_REQUIRED = {"advertiser_id", "calculate_type", "file", "file_signature"}
SDK_UPLOAD_OPTIONAL = {"file_name", "name", "context_info"}
SDK_CALCULATE_TYPES = {
    "EMAIL_SHA256", "FIRST_MD5", "FIRST_SHA256", "GAID_MD5", "GAID_SHA256", "IDFA_MD5", "IDFA_SHA256",
    "MAID_MD5", "MAID_SHA256", "MULTIPLE_TYPES", "PHONE_SHA256",
}  # fmt: skip
SDK_CREATE_REQUIRED = {"advertiser_id", "calculate_type", "custom_audience_name", "file_paths"}
SDK_CREATE_OPTIONAL = {"audience_enhancement", "audience_sub_type", "retention_in_days"}
SDK_UPDATE_REQUIRED = {"advertiser_id", "custom_audience_id"}
SDK_UPDATE_OPTIONAL = {
    "action", "audience_enhancement", "audience_sub_type", "context_info", "custom_audience_name",
    "file_paths",
}  # fmt: skip


def _check_against_sdk(fields: set[str], required: set[str], optional: set[str]) -> None:
    assert required <= fields, f"missing required fields: {required - fields}"
    assert fields <= required | optional, (
        f"fields TikTok's SDK does not document: {fields - required - optional}"
    )


@responses.activate
@pytest.mark.parametrize("maid_type", ["IDFA", "GAID", "AAID"])
def test_golden_file_create_and_update_follow_tiktoks_sdk_schemas(maid_type: str) -> None:
    ok = {"code": 0, "message": "OK", "request_id": "r5"}
    responses.get(API + "user/info/", json={**ok, "data": {}})
    responses.get(API + "dmp/custom_audience/list/", json={**ok, "data": {"list": [], "page_info": {}}})
    responses.post(API + "dmp/custom_audience/file/upload/", json={**ok, "data": {"file_path": "f/9.csv"}})
    responses.post(API + "dmp/custom_audience/create/", json={**ok, "data": {"custom_audience_id": "71"}})
    responses.post(API + "dmp/custom_audience/update/", json={**ok, "data": {}})
    connector = TikTokConnector(
        destination("https://business-api.tiktok.com", flow="file", maid_type=maid_type), FAST
    )
    spec = AudienceSpec("m@t", "audience-sync: devices", "", ("maid",))
    placeholder = connector.ensure_audience(spec)
    devices = [Change(f"d{i}".encode(), {"maid": sha(f"device-{i}")}) for i in range(1_000)]
    connector.add(placeholder, devices[:1_000], None)
    connector.add(placeholder, [Change(b"late", {"maid": sha("late")})], None)

    upload = multipart_fields(sent_to("dmp/custom_audience/file/upload/")[0])
    _check_against_sdk(set(upload), SDK_UPLOAD_REQUIRED, SDK_UPLOAD_OPTIONAL)
    assert upload["calculate_type"].decode() in SDK_CALCULATE_TYPES
    # AAID is the Android (Google) advertising id: the enum has no AAID_SHA256.
    assert upload["calculate_type"] == (b"IDFA_SHA256" if maid_type == "IDFA" else b"GAID_SHA256")
    assert upload["file_signature"] == hashlib.md5(upload["file"]).hexdigest().encode()
    assert upload["file_name"].endswith(b".csv")

    (create,) = [json.loads(r.body) for r in sent_to("dmp/custom_audience/create/")]
    _check_against_sdk(set(create), SDK_CREATE_REQUIRED, SDK_CREATE_OPTIONAL)
    assert create["calculate_type"] == upload["calculate_type"].decode()
    assert "retention_in_days" not in create  # it would fix the expiry (CustomAudienceCreateBody.md)
    assert len(create["custom_audience_name"]) <= 128

    (update,) = [json.loads(r.body) for r in sent_to("dmp/custom_audience/update/")]
    _check_against_sdk(set(update), SDK_UPDATE_REQUIRED, SDK_UPDATE_OPTIONAL)
    assert update["action"] == "APPEND"  # always named: the default is REPLACE
    assert update["custom_audience_id"] == "71"


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
