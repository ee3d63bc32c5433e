"""MetaConnector: golden request bodies through ``responses``, the error table, and the real SDK
against the Graph API emulator on a real socket."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import responses
from audiencesync.connectors.contract import AudienceSpec, Change, DestinationConfig, SessionInfo
from audiencesync.connectors.emulation.http import parse_multipart
from audiencesync.connectors.errors import (
    AudienceGone,
    AuthError,
    ConfigurationRejected,
    FatalError,
    PermissionDenied,
    SchemaMismatch,
    TransientError,
)
from audiencesync.connectors.meta import payload as mp
from audiencesync.connectors.meta.connector import MetaConnector
from audiencesync.connectors.meta.emulator import MetaEmulator, start_emulator

TOKEN = "EAAB-secret-token-value"
KINDS = ("email", "phone", "first_name", "external_id")
GRAPH = "https://graph.example.test"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def change(i: int, *, phone: bool = True) -> Change:
    ids = {"email": h(f"user{i}@example.com"), "first_name": h(f"name{i}"), "external_id": f"crm-{i}"}
    if phone:
        ids["phone"] = h(f"1555{i:07d}")
    return Change(member_key=f"m{i}".encode(), identifiers=ids)


def row(c: Change) -> tuple[str, ...]:
    return tuple(c.identifiers.get(k, "") for k in KINDS)


def destination(endpoint: str, max_wait: int = 30, **extra: object) -> DestinationConfig:
    settings = {
        "platform": "meta",
        "ad_account_id": "act_1234567890",
        "access_token_env": "META_TOKEN",
        "api_version": "v25.0",
        "customer_file_source": "USER_PROVIDED_ONLY",
        "max_wait_seconds": max_wait,
        "endpoint": endpoint,
        **extra,
    }
    return DestinationConfig(
        "meta_main", "meta", settings, {"access_token": TOKEN}, "audience-sync: ", Path(".")
    )


def connector(endpoint: str, max_wait: int = 30, timeout: float = 5.0) -> MetaConnector:
    return MetaConnector(
        destination(endpoint, max_wait), backoff_initial=0.005, backoff_max=0.05, timeout_seconds=timeout
    )


SPEC = AudienceSpec("vip@meta_main", "audience-sync: vip", "VIP customers", KINDS)


# --- golden request bodies ----------------------------------------------------------------------------


def _form(call: responses.Call) -> dict[str, str]:
    """The form fields of a request body, URL-encoded or multipart (the payload rides as its own part)."""
    body = call.request.body
    raw = body if isinstance(body, bytes) else str(body).encode()
    ctype = call.request.headers.get("Content-Type", "")
    if "multipart/form-data" in ctype:
        return {k: v.decode() for k, v in parse_multipart(raw, ctype).items()}
    return {k: v[-1] for k, v in parse_qs(raw.decode()).items()}


@pytest.fixture
def graph() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def _ok(n: int) -> dict[str, object]:
    return {
        "audience_id": "42",
        "session_id": 0,
        "num_received": n,
        "num_invalid_entries": 0,
        "invalid_entry_samples": {},
    }


def test_add_sends_the_multi_key_payload_in_the_form_body(graph: responses.RequestsMock) -> None:
    graph.post(f"{GRAPH}/v25.0/42/users", json=_ok(2))
    meta = connector(GRAPH)
    batch = [change(1), change(2, phone=False)]
    meta._kinds["42"] = KINDS  # as ensure_audience would have recorded
    result = meta.add("42", batch, None)
    form = _form(graph.calls[0])
    assert "method" not in form and "session" not in form
    assert json.loads(form["payload"]) == {
        "schema": ["EMAIL", "PHONE", "FN", "EXTERN_ID"],
        "is_raw": True,
        "data": [
            [h("user1@example.com"), h("15550000001"), h("name1"), "crm-1"],
            [h("user2@example.com"), "", h("name2"), "crm-2"],
        ],
    }
    assert "user1@example.com" not in graph.calls[0].request.url
    assert result.confirmed == [b"m1", b"m2"] and result.requests == 1
    assert result.detail["num_received"] == 2


def test_remove_is_an_http_delete_with_the_rows_in_the_body_never_the_url(
    graph: responses.RequestsMock,
) -> None:
    graph.delete(f"{GRAPH}/v25.0/42/users", json=_ok(1))
    meta = connector(GRAPH)
    meta._kinds["42"] = KINDS
    meta.remove("42", [change(7)], SessionInfo(5, 1, True, 1))
    call = graph.calls[0]
    assert call.request.method == "DELETE"  # Meta's /users reference: DELETE /{id}/users
    form = _form(call)
    assert "method" not in form and json.loads(form["session"])["session_id"] == 5
    assert json.loads(form["payload"])["data"] == [
        [h("user7@example.com"), h("15550000007"), h("name7"), "crm-7"]
    ]
    url = str(call.request.url)
    assert "payload" not in url and "session" not in url and h("user7@example.com") not in url


def test_a_three_batch_push_carries_one_session(graph: responses.RequestsMock) -> None:
    graph.post(f"{GRAPH}/v25.0/42/users", json=_ok(1))
    meta = connector(GRAPH)
    meta._kinds["42"] = KINDS
    for seq in (1, 2, 3):
        meta.add("42", [change(seq)], SessionInfo(987654321012, seq, seq == 3, 3))
    sessions = [json.loads(_form(c)["session"]) for c in graph.calls]
    assert sessions == [
        {"session_id": 987654321012, "batch_seq": 1, "last_batch_flag": False, "estimated_num_total": 3},
        {"session_id": 987654321012, "batch_seq": 2, "last_batch_flag": False, "estimated_num_total": 3},
        {"session_id": 987654321012, "batch_seq": 3, "last_batch_flag": True, "estimated_num_total": 3},
    ]
    assert [json.loads(_form(c)["payload"])["data"][0][3] for c in graph.calls] == ["crm-1", "crm-2", "crm-3"]


def test_an_html_error_page_is_retried(graph: responses.RequestsMock) -> None:
    # The SDK raises TypeError on a page holding the word "error" and FacebookRequestError otherwise.
    graph.post(f"{GRAPH}/v25.0/42/users", body="<html><title>Facebook | Error</title></html>", status=502)
    graph.post(f"{GRAPH}/v25.0/42/users", body="<html><p>an error occurred</p></html>", status=500)
    graph.post(f"{GRAPH}/v25.0/42/users", json=_ok(1))
    meta = connector(GRAPH)
    meta._kinds["42"] = KINDS
    result = meta.add("42", [change(1)], None)
    assert result.confirmed == [b"m1"] and result.requests == 3


def test_golden_users_request_matches_the_sdks_own_add_users_request() -> None:
    """The request Meta's SDK builds for the same pre-hashed rows (``CustomAudience.format_params``,
    what ``add_users(..., is_raw=True, pre_hashed=True, session=...)`` posts), field by field."""
    from facebook_business.adobjects.customaudience import CustomAudience

    batch = [change(1), change(2, phone=False)]
    session = SessionInfo(9778993, 10, True, 99996)
    fields, payload = mp.users_request(KINDS, mp.rows_for(batch, KINDS), session)
    schema = [CustomAudience.Schema.MultiKeySchema.email, "PHONE", "FN", "EXTERN_ID"]
    sdk = CustomAudience.format_params(
        schema,
        [list(row(c)) for c in batch],
        is_raw=True,
        pre_hashed=True,
        session={
            "session_id": 9778993,
            "batch_seq": 10,
            "last_batch_flag": True,
            "estimated_num_total": 99996,
        },
    )
    ours = json.loads(payload)
    assert set(ours) == set(sdk["payload"]) == {"schema", "is_raw", "data"}
    for name in ("schema", "is_raw", "data"):
        assert ours[name] == sdk["payload"][name], name
    assert json.loads(fields["session"]) == sdk["session"]
    assert set(fields) == {"session"}


# --- the error table ------------------------------------------------------------------------------


def _err(code: int, subcode: int | None = None, transient: bool = False) -> dict[str, object]:
    error: dict[str, object] = {
        "message": "m",
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "T1",
        "is_transient": transient,
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


@pytest.mark.parametrize(
    ("status", "code", "subcode", "expected"),
    [
        (400, 1, None, TransientError),
        (400, 2, None, TransientError),
        (400, 4, None, TransientError),
        (400, 17, 2446079, TransientError),
        (400, 341, None, TransientError),
        (400, 368, None, TransientError),
        (400, 613, 1487742, TransientError),
        (400, 80000, None, TransientError),
        (400, 80003, None, TransientError),
        (400, 80004, None, TransientError),
        (400, 80014, None, TransientError),
        (400, 2650, 1870145, TransientError),
        (500, 99999, None, TransientError),
        (400, 190, 460, AuthError),
        (400, 190, 463, AuthError),
        (400, 10, None, PermissionDenied),
        (400, 200, None, PermissionDenied),
        (400, 294, None, PermissionDenied),
        (400, 200, 1870090, PermissionDenied),
        (400, 2655, None, PermissionDenied),
        (400, 2663, None, PermissionDenied),
        (400, 200, 1870050, PermissionDenied),
        (400, 100, 33, PermissionDenied),
        (400, 100, 1713230, AudienceGone),
        (400, 2650, None, SchemaMismatch),
        (400, 2650, 1870158, FatalError),
        (400, 2650, 1870159, FatalError),
        (400, 2650, 1870144, FatalError),
        (400, 2635, None, ConfigurationRejected),
        (400, 100, None, FatalError),
    ],
)
def test_error_table(status: int, code: int, subcode: int | None, expected: type[Exception]) -> None:
    exc = mp.classify_error(status, _err(code, subcode), {}, "act_1234567890")
    assert type(exc) is expected
    assert exc.request_id == "T1"


def test_an_unknown_error_flagged_transient_is_retried_and_html_is_transient() -> None:
    assert isinstance(mp.classify_error(400, _err(12345, transient=True), {}, "act_1"), TransientError)
    assert isinstance(mp.classify_error(502, "<html>error</html>", {}, "act_1"), TransientError)


def test_a_deprecated_version_names_the_setting_and_the_sdks_version() -> None:
    exc = mp.classify_error(400, _err(2635), {}, "act_1")
    assert "api_version" in str(exc) and "v26.0" in str(exc) and "2635" in str(exc)


def test_the_default_api_version_is_the_one_the_pinned_sdk_is_built_for() -> None:
    from audiencesync.connectors.meta.connector import DEFAULT_API_VERSION
    from facebook_business.apiconfig import ads_api_config

    assert DEFAULT_API_VERSION == ads_api_config["API_VERSION"] == "v26.0"


def test_the_version_warning_header_is_read_whatever_its_case() -> None:
    note = "The call has been auto-upgraded to v26.0 as v24.0 has been deprecated."
    assert mp.version_warning({"x-ad-api-version-warning": note}) == note
    assert mp.version_warning({"X-Ad-Api-Version-Warning": "  "}) is None
    assert mp.version_warning(None) is None


def test_terms_message_gives_the_terms_url() -> None:
    exc = mp.classify_error(400, _err(200, 1870090), {}, "act_1234567890")
    assert "https://business.facebook.com/ads/manage/customaudiences/tos/?act=1234567890" in str(exc)


def test_throttling_honours_estimated_time_to_regain_access() -> None:
    usage = json.dumps({"1234567890": [{"type": "custom_audience", "estimated_time_to_regain_access": 3}]})
    exc = mp.classify_error(400, _err(80003), {"X-Business-Use-Case-Usage": usage}, "act_1")
    assert isinstance(exc, TransientError) and exc.retry_after == 180.0


def test_schema_marker_round_trips() -> None:
    text = mp.with_schema_marker("VIP customers", ["EMAIL", "PHONE"])
    assert text == "VIP customers [audience-sync schema: EMAIL,PHONE]"
    assert mp.schema_in_description(mp.with_schema_marker(text, ["EMAIL"])) == ["EMAIL"]
    assert mp.schema_in_description("made by hand") is None


# --- against the emulator -------------------------------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[MetaEmulator]:
    emu = start_emulator()
    yield emu
    emu.stop()


def _members(emu: MetaEmulator, audience_id: str) -> set[tuple[str, ...]]:
    return emu.members(audience_id)


def test_25000_members_in_three_requests_then_changes_and_removes(emulator: MetaEmulator) -> None:
    meta = connector(emulator.url)
    audience_id = meta.ensure_audience(SPEC)
    people = [change(i) for i in range(25_000)]
    requests = 0
    batches = [people[i : i + 10_000] for i in range(0, len(people), 10_000)]
    for seq, batch in enumerate(batches, start=1):
        result = meta.add(audience_id, batch, SessionInfo(111, seq, seq == len(batches), len(people)))
        assert len(result.confirmed) == len(batch)
        requests += result.requests
    assert requests == math.ceil(25_000 / 10_000) == emulator.server.requests_to("POST", "/users")
    assert _members(emulator, audience_id) == {row(c) for c in people}

    gone, joined = people[:12_000], [change(i) for i in range(25_000, 26_000)]
    before = emulator.server.requests_to("POST", "/users")
    for seq, batch in enumerate([gone[:10_000], gone[10_000:]], start=1):
        assert meta.remove(audience_id, batch, SessionInfo(112, seq, seq == 2, len(gone))).confirmed
    assert meta.add(audience_id, joined, None).requests == 1
    assert emulator.server.requests_to("DELETE", "/users") == math.ceil(12_000 / 10_000)
    assert emulator.server.requests_to("POST", "/users") - before == 1
    assert _members(emulator, audience_id) == {row(c) for c in people[12_000:] + joined}
    assert meta.ensure_audience(SPEC) == audience_id  # found again by name, schema matches


def test_converges_under_throttling_and_server_errors(emulator: MetaEmulator) -> None:
    emulator.faults.set({"throttle_rate": 0.15, "server_error_rate": 0.15, "html_rate": 0.05, "seed": 7})
    meta = connector(emulator.url, max_wait=1)
    audience_id = meta.ensure_audience(SPEC)
    people = [change(i) for i in range(3_000)]
    todo = {c.member_key: c for c in people}
    for _run in range(30):
        if not todo:
            break
        for chunk in [list(todo.values())[i : i + 500] for i in range(0, len(todo), 500)]:
            try:
                result = meta.add(audience_id, chunk, None)
            except TransientError:
                continue
            for key in result.confirmed:
                todo.pop(key)
    assert not todo
    assert _members(emulator, audience_id) == {row(c) for c in people}


def test_wait_budget_exhausted_raises_transient_with_retry_after(emulator: MetaEmulator) -> None:
    meta = connector(emulator.url, max_wait=5)
    audience_id = meta.ensure_audience(SPEC)
    emulator.faults.set({"throttle_rate": 1.0, "regain_minutes": 2})
    with pytest.raises(TransientError) as info:
        meta.add(audience_id, [change(1)], None)
    assert info.value.retry_after == 120.0
    assert TOKEN not in str(info.value)


def test_timeouts_and_dropped_connections_are_retried(emulator: MetaEmulator) -> None:
    meta = connector(emulator.url, timeout=0.3)
    audience_id = meta.ensure_audience(SPEC)
    emulator.faults.set({"slow_rate": 0.3, "slow_seconds": 0.6, "drop_rate": 0.3, "seed": 3})
    result = meta.add(audience_id, [change(i) for i in range(10)], None)
    assert len(result.confirmed) == 10
    assert _members(emulator, audience_id) == {row(change(i)) for i in range(10)}


@pytest.mark.parametrize(
    ("preset", "expected", "hint"),
    [
        ("token", AuthError, "access_token_env"),
        ("terms", PermissionDenied, "customaudiences/tos/?act=1234567890"),
        ("no_access", PermissionDenied, "system user"),
        ("permission", PermissionDenied, "ads_management"),
        ("flagged", AudienceGone, "audience_ids"),
        ("deprecated", ConfigurationRejected, "api_version"),
        ("schema", SchemaMismatch, "identifier"),
    ],
)
def test_each_fatal_answer_raises_its_own_class(
    emulator: MetaEmulator, preset: str, expected: type[Exception], hint: str
) -> None:
    meta = connector(emulator.url)
    audience_id = meta.ensure_audience(SPEC)
    emulator.faults.set({"force_error": preset})
    with pytest.raises(expected) as info:
        meta.add(audience_id, [change(1)], None)
    assert type(info.value) is expected
    assert hint in str(info.value)
    assert TOKEN not in str(info.value) and h("user1@example.com") not in str(info.value)
    assert emulator.server.requests_to("POST", "/users") == 1  # fatal: no retries


def test_a_version_meta_no_longer_serves_stops_with_the_setting_named(emulator: MetaEmulator) -> None:
    emulator.faults.set({"deprecated_versions": ["v24.0"]})
    old = MetaConnector(destination(emulator.url, api_version="v24.0"), backoff_initial=0.005)
    with pytest.raises(ConfigurationRejected) as info:
        old.ensure_audience(SPEC)
    assert "api_version" in str(info.value) and info.value.code == "2635"
    assert emulator.server.requests_to("GET", "/customaudiences") == 1  # fatal: not retried
    assert connector(emulator.url).ensure_audience(SPEC)  # v25.0 still served


def test_an_auto_upgraded_call_is_logged_once_and_shown_in_read_back(
    emulator: MetaEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    note = "The call has been auto-upgraded to v26.0 as v25.0 has been deprecated."
    emulator.faults.set({"version_warning": note})
    meta = connector(emulator.url)
    audience_id = meta.ensure_audience(SPEC)
    meta.add(audience_id, [change(1)], None)
    status = meta.read_back(audience_id)
    assert status.detail["version_warning"] == note and status.detail["api_version"] == "v25.0"
    warnings = [r for r in caplog.records if r.name == "audiencesync.connectors.meta.connector"]
    assert len(warnings) == 1 and "api_version v25.0" in warnings[0].getMessage()


def test_a_wrong_token_is_an_auth_error(emulator: MetaEmulator) -> None:
    emulator.faults.set({"expected_token": "the-right-one"})
    with pytest.raises(AuthError) as info:
        connector(emulator.url).ensure_audience(SPEC)
    assert TOKEN not in str(info.value)


def test_rejected_rows_map_to_their_members(emulator: MetaEmulator) -> None:
    meta = connector(emulator.url)
    audience_id = meta.ensure_audience(SPEC)
    emulator.faults.set({"reject_row_rate": 0.3, "seed": 5})
    batch = [change(i) for i in range(50)]
    result = meta.add(audience_id, batch, None)
    assert result.rejected and set(result.confirmed).isdisjoint(result.rejected)
    assert len(result.confirmed) + len(result.rejected) == 50
    stored = _members(emulator, audience_id)
    assert stored == {row(c) for c in batch if c.member_key in set(result.confirmed)}
    assert result.detail["num_invalid_entries"] == len(result.rejected)
    assert all(reason.startswith("invalid_entry") for reason in result.rejected.values())


def test_too_small_refusal_rejects_the_whole_remove_batch(emulator: MetaEmulator) -> None:
    meta = connector(emulator.url)
    audience_id = meta.ensure_audience(SPEC)
    batch = [change(i) for i in range(5)]
    meta.add(audience_id, batch, None)
    emulator.faults.set({"too_small": True})
    result = meta.remove(audience_id, batch[:2], None)
    assert result.rejected == {b"m0": "audience_too_small", b"m1": "audience_too_small"}
    assert not result.confirmed and result.requests == 1
    assert len(_members(emulator, audience_id)) == 5


def test_a_known_audience_with_another_schema_is_refused(emulator: MetaEmulator) -> None:
    audience_id = connector(emulator.url).ensure_audience(SPEC)
    other = AudienceSpec(SPEC.target, SPEC.name, "", ("email",), known_id=audience_id)
    with pytest.raises(SchemaMismatch):
        connector(emulator.url).ensure_audience(other)
    with pytest.raises(SchemaMismatch):
        connector(emulator.url).ensure_audience(AudienceSpec(SPEC.target, SPEC.name, "", ("email",)))


def test_a_missing_known_audience_is_gone(emulator: MetaEmulator) -> None:
    spec = AudienceSpec(SPEC.target, SPEC.name, "", KINDS, known_id="999")
    with pytest.raises(AudienceGone):
        connector(emulator.url).ensure_audience(spec)


def test_read_back_shows_changes_after_processing(emulator: MetaEmulator) -> None:
    emulator.faults.set({"processing_seconds": 0.3})
    meta = connector(emulator.url)
    audience_id = meta.ensure_audience(SPEC)
    meta.add(audience_id, [change(i) for i in range(4)], None)
    early = meta.read_back(audience_id)
    assert not early.ready and early.size_lower == 0 and early.state == "Processing"
    import time

    time.sleep(0.35)
    late = meta.read_back(audience_id)
    assert late.ready and late.size_lower == late.size_upper == 4 and late.updated_at is not None
    assert meta.follow(audience_id, ["x"])["x"].state == "confirmed"


def test_app_secret_adds_appsecret_proof_and_api_version_is_a_setting(graph: responses.RequestsMock) -> None:
    graph.get(f"{GRAPH}/v26.0/42", json={"operation_status": {"code": 200, "description": "Normal"}})
    dest = destination(GRAPH, api_version="v26.0")
    dest = DestinationConfig(
        dest.name, dest.platform, dest.settings, {**dest.secrets, "app_secret": "s3cret"}, "p", Path(".")
    )
    status = MetaConnector(dest).read_back("42")
    query = parse_qs(graph.calls[0].request.url.split("?", 1)[1])
    assert len(query["appsecret_proof"][0]) == 64
    assert status.ready and status.state == "Normal"
