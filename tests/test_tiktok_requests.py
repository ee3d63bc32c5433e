"""TikTokConnector without a socket: the pure envelope and code mapping, and the golden request
bodies checked against TikTok's SDK schemas (TikTok's host answered by ``responses``)."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
from typing import Any

import pytest
import responses
from audiencesync.connectors.contract import AudienceSpec, Change
from audiencesync.connectors.errors import (
    AudienceGone,
    AuthError,
    FatalError,
    PermissionDenied,
    TransientError,
)
from audiencesync.connectors.tiktok import payload as tp
from audiencesync.connectors.tiktok.connector import TikTokConnector, base_url
from tiktok_samples import ADVERTISER, API, FAST, SPEC, TOKEN, assert_actionable, destination, sha


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


@responses.activate
def test_a_parameter_error_is_fatal_with_tiktoks_message() -> None:
    connector = golden_connector()
    answer = {"code": 40002, "message": "id_schema: unknown id type", "request_id": "r9", "data": {}}
    responses.post(API + "segment/mapping/", json=answer)
    with pytest.raises(FatalError) as caught:
        connector.add(AUDIENCE, GOLDEN_BATCH, None)
    assert_actionable(caught.value, "40002", "PARAM_ERROR", "id_schema: unknown id type")
