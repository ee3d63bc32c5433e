"""A local emulator of the TikTok Business API v1.3 audience endpoints, on 127.0.0.1.

Routes, under ``/open_api/v1.3/``: ``user/info/``, ``segment/audience/``, ``segment/mapping/``,
``dmp/custom_audience/list/``, ``get/``, ``file/upload/``, ``create/``, ``update/`` and ``delete/`` (the
last so tests can make an audience disappear). Errors come as TikTok sends them: HTTP 200 with a
non-zero ``code``, a ``message`` and a ``request_id``.

Every rule it enforces names its source beside the code; codes and their names are TikTok's SDK's
(``python_sdk/business_api_client/tiktok_business/tiktok_code.py``). Rules no primary source backs are
the assumptions listed in docs/setup-tiktok.md ("Assumptions", A1...), referred to by number. In short:
the ``Access-Token`` header (40104 EMPTY_ACCESS_TOKEN without it), the advertiser id and audience ids
(unknown -> 40007 NOT_EXIST), ids as 64 lowercase hex characters (else 40062 PII_NOT_HASHED, A7), the
persons per mapping request (more than ``max_batch`` -> 40061 INVALID_BATCH_SIZE, A3) or rows per file
(-> 40907 FILE_TOO_LARGE, A3), ``calculate_type`` from the upload yml's strict enum, the file's MD5
signature, and a file update of any action that would leave fewer than 1,000 members
(CustomAudienceUpdateBody.md). A member is the tuple of ids of one person in ``id_schema`` order
(``null`` for a missing one); delete removes exactly that tuple. ``dmp/custom_audience/update/``
without ``action`` replaces the audience, as TikTok's default does (CustomAudienceUpdateBody.md).

Fault switches (``POST /_emulator/faults`` with a JSON object; ``seed`` reseeds the dice):
    invalid_token         bool   every call answers 40105 INVALID_ACCESS_TOKEN
    expired_token         bool   every call answers 40102 ACCESS_TOKEN_EXPIRE
    permission_denied     bool   every call answers 40001 PERMISSION_ERROR
    rate_limit_rate       0..1   share of calls answered with rate_limit_code
    rate_limit_code       int    40100 REQUEST_TOO_FREQUENT (default), 40132 REQUEST_FREQUENCY_LIMITED
                                 or 61000 TOO_MANY_REQUESTS_BL
    write_conflict_rate   0..1   share of calls answered 40202 WRITE_CONFLICT, not applied
    partial_ok_rate       0..1   share of mapping and file-update calls applied, then answered 20001
                                 PARTIAL_OK (TikTok does not document which items failed; A8)
    server_error_rate     0..1   share of calls answered code 50000 (HTTP 200)
    http_error_rate       0..1   share of calls answered HTTP 503 with a non-JSON body
    timeout_rate          0..1   share of calls applied, then answered only after timeout_seconds
    timeout_seconds       float  how long such a call stalls (default 2.0)
    drop_rate             0..1   share of calls whose connection is closed unanswered, unapplied
    lost_answer_rate      0..1   share of calls applied, then closed unanswered
    reject_id_rate        0..1   share of persons that match no TikTok user. TikTok reports no per-id
                                 outcome in mapping answers, so neither does the emulator: the person is
                                 stored (and deleted) like any other but never counts in cover_num.
                                 Which persons is a pure function of their ids, so it is stable.
    recalc_delay_seconds  float  after a change, cover_num keeps its old value and is_valid is false
                                 until this many seconds passed without further change
    max_batch             int    most persons per mapping request (more: 40061) or rows per file
                                 (more: 40907); default 10,000 (TikTok publishes no figure; A3)

Known advertiser: ``7000000000000000000`` (the demo config's), or those passed to ``start_emulator``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from audiencesync.connectors.emulation.http import (
    EmulatorServer,
    FaultSwitches,
    HttpEmulator,
    Request,
    Response,
    parse_multipart,
)
from audiencesync.connectors.tiktok.emulator_store import (
    ApiError,
    Audience,
    Member,
    TikTokState,
    UploadedFile,
)

PREFIX = "/open_api/v1.3/"
DEMO_ADVERTISER = "7000000000000000000"
# segment/* id types: TikTok's SDK does not document segment/*; these are the peers' (A1, A2).
SCHEMAS = ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "GAID_SHA256", "AAID_SHA256")
MULTIPLE_TYPES = "MULTIPLE_TYPES"
# yml_files/dmp_custom_audience_file_upload.yml: calculate_type is a strict enum (no AAID_SHA256).
FILE_CALCULATE_TYPES = (
    "EMAIL_SHA256",
    "FIRST_MD5",
    "FIRST_SHA256",
    "GAID_MD5",
    "GAID_SHA256",
    "IDFA_MD5",
    "IDFA_SHA256",
    "MAID_MD5",
    "MAID_SHA256",
    MULTIPLE_TYPES,
    "PHONE_SHA256",
)
# The SHA-256 types of that enum, which the emulator can check row by row (MD5 ones it refuses: A4).
_FILE_SHA256_TYPES = ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "GAID_SHA256")
# python_sdk/docs/CustomAudienceUpdateBody.md: APPEND, REMOVE and REPLACE fail under 1,000 afterwards.
MIN_FILE_AUDIENCE = 1_000
# Segment's tiktok-audiences/properties.ts: a name over 70 characters is stored as 67 + "...".
SEGMENT_NAME_LIMIT = 70
# python_sdk/docs/CustomAudienceCreateBody.md: custom_audience_name at most 128 characters.
FILE_NAME_LIMIT = 128
# tiktok_code.py names for the codes the emulator answers with.
RATE_LIMIT_CODES = (40100, 40132, 61000)
_HEX64 = re.compile(r"[0-9a-f]{64}")

DEFAULT_FAULTS: dict[str, Any] = {
    "invalid_token": False,
    "expired_token": False,
    "permission_denied": False,
    "rate_limit_rate": 0.0,
    "rate_limit_code": 40100,
    "write_conflict_rate": 0.0,
    "partial_ok_rate": 0.0,
    "server_error_rate": 0.0,
    "http_error_rate": 0.0,
    "timeout_rate": 0.0,
    "timeout_seconds": 2.0,
    "drop_rate": 0.0,
    "lost_answer_rate": 0.0,
    "reject_id_rate": 0.0,
    "recalc_delay_seconds": 0.0,
    "max_batch": 10_000,
}


def _hashed(value: Any) -> str:
    # tiktok_code.py: 40062 PII_NOT_HASHED; that TikTok answers it for a malformed hash is A7.
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ApiError(40062, "Invalid id: expected a SHA256 hash as 64 lowercase hexadecimal characters")
    return value


def _too_large(count: int, limit: int, what: str, code: int) -> None:
    # The limit itself is the max_batch switch (A3); the codes are tiktok_code.py's 40061
    # INVALID_BATCH_SIZE (a mapping batch) and 40907 FILE_TOO_LARGE (a file).
    if count > limit:
        raise ApiError(code, f"{what} too large: at most {limit} per request")


def cut_name(name: str) -> str:
    """A segment audience's name as TikTok stores it (Segment, tiktok-audiences/properties.ts)."""
    return name if len(name) <= SEGMENT_NAME_LIMIT else name[: SEGMENT_NAME_LIMIT - 3] + "..."


class TikTokApi:
    """The routes. Each takes the request and returns ``data`` or raises ``ApiError``."""

    def __init__(self, state: TikTokState) -> None:
        self.state = state
        self.routes: dict[tuple[str, str], Callable[[Request], dict[str, Any]]] = {
            ("GET", "user/info/"): self.user_info,
            ("POST", "segment/audience/"): self.segment_audience,
            ("POST", "segment/mapping/"): self.segment_mapping,
            ("GET", "dmp/custom_audience/list/"): self.audience_list,
            ("GET", "dmp/custom_audience/get/"): self.audience_get,
            ("POST", "dmp/custom_audience/file/upload/"): self.file_upload,
            ("POST", "dmp/custom_audience/create/"): self.file_create,
            ("POST", "dmp/custom_audience/update/"): self.file_update,
            ("POST", "dmp/custom_audience/delete/"): self.audience_delete,
        }

    @property
    def max_batch(self) -> int:
        return int(self.state.faults["max_batch"])

    def user_info(self, req: Request) -> dict[str, Any]:
        return {"display_name": "audience-sync emulator", "core_user_id": "7000000000000000001"}

    def segment_audience(self, req: Request) -> dict[str, Any]:
        body = _json(req)
        adv = self.state.check_advertiser(body.get("advertiser_id"))
        # segment/audience/ body (A1): {advertiser_id, custom_audience_name, id_type, action: create}.
        if body.get("action") != "create":
            raise ApiError(40002, "action: only create is supported here")
        id_type = body.get("id_type")
        if id_type not in SCHEMAS:
            raise ApiError(40002, "id_type: not a supported id type")
        name = body.get("custom_audience_name")
        if not isinstance(name, str) or not name:
            raise ApiError(40002, "custom_audience_name is required")
        audience = self.state.new_audience(adv, cut_name(name), "segment", str(id_type))
        return {"audience_id": audience.audience_id}

    def segment_mapping(self, req: Request) -> dict[str, Any]:
        body = _json(req)
        advertisers = body.get("advertiser_ids")
        if not isinstance(advertisers, list) or not advertisers:
            raise ApiError(40002, "advertiser_ids: a non-empty list is required")
        advs = [self.state.check_advertiser(a) for a in advertisers]
        action = body.get("action")
        if action not in ("add", "delete"):
            raise ApiError(40002, "action: must be add or delete")
        schema = body.get("id_schema")
        if not isinstance(schema, list) or not schema or any(s not in SCHEMAS for s in schema):
            raise ApiError(40002, "id_schema: unknown id type")
        batch = body.get("batch_data")
        if not isinstance(batch, list):
            raise ApiError(40002, "batch_data: a list is required")
        _too_large(len(batch), self.max_batch, "batch_data", 40061)
        per_audience: dict[str, list[Member]] = {}
        # One inner array per person in id_schema order, {} for a missing id (A1: peers' shape).
        for person in batch:
            if not isinstance(person, list) or len(person) != len(schema):
                raise ApiError(40002, "batch_data: each person needs one entry per id_schema item")
            values: list[str | None] = []
            targets: set[str] = set()
            for entry in person:
                if not isinstance(entry, dict):
                    raise ApiError(40002, "batch_data: entries must be objects")
                if not entry:
                    values.append(None)
                    continue
                values.append(_hashed(entry.get("id")))
                ids = entry.get("audience_ids")
                if not isinstance(ids, list) or not ids:
                    raise ApiError(40002, "batch_data: audience_ids is required for each id")
                targets.update(str(i) for i in ids)
            for audience_id in targets:
                per_audience.setdefault(audience_id, []).append(tuple(values))
        # Every audience is checked before any is changed: a refused request changes nothing.
        audiences: dict[str, Audience] = {}
        for audience_id in per_audience:
            found = self.state.audiences.get(audience_id)
            owner = found.advertiser_id if found is not None and found.advertiser_id in advs else advs[0]
            audiences[audience_id] = self.state.audience(owner, audience_id)
        for audience_id, members in per_audience.items():
            audience = audiences[audience_id]
            audience.id_schema = list(schema)
            if action == "add":
                self.state.add_members(audience, members)
            else:
                self.state.remove_members(audience, members)
        return {}

    def audience_list(self, req: Request) -> dict[str, Any]:
        adv = self.state.check_advertiser(req.query.get("advertiser_id"))
        page = _int(req.query.get("page", "1"), "page")
        size = _int(req.query.get("page_size", "10"), "page_size")
        # yml_files/dmp_custom_audience_list.yml: page_size 1 to 100.
        if not 1 <= size <= 100 or page < 1:
            raise ApiError(40002, "page_size must be 1 to 100 and page at least 1")
        mine = [a for a in self.state.audiences.values() if a.advertiser_id == adv]
        total_page = max(1, -(-len(mine) // size))
        chunk = mine[(page - 1) * size : page * size]
        return {
            "list": [self.state.describe(a) for a in chunk],
            "page_info": {
                "page": page,
                "page_size": size,
                "total_number": len(mine),
                "total_page": total_page,
            },
        }

    def audience_get(self, req: Request) -> dict[str, Any]:
        adv = self.state.check_advertiser(req.query.get("advertiser_id"))
        try:
            ids = json.loads(req.query.get("custom_audience_ids", ""))
        except ValueError:
            raise ApiError(40002, "custom_audience_ids must be a JSON array") from None
        # yml_files/dmp_custom_audience_get.yml: custom_audience_ids, a JSON array of 1 to 100 ids.
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise ApiError(40002, "custom_audience_ids must hold 1 to 100 ids")
        found = [self.state.audience(adv, i) for i in ids]
        return {"list": [{"audience_details": self.state.describe(a), "audience_history": []} for a in found]}

    def file_upload(self, req: Request) -> dict[str, Any]:
        fields = _multipart(req)
        adv = self.state.check_advertiser(_text(fields.get("advertiser_id")))
        calculate_type = _text(fields.get("calculate_type"))
        # The upload yml's enum is strict: anything else, AAID_SHA256 included, is refused.
        if calculate_type not in FILE_CALCULATE_TYPES:
            raise ApiError(40002, "calculate_type: not a supported encryption type")
        if calculate_type not in (*_FILE_SHA256_TYPES, MULTIPLE_TYPES):
            raise ApiError(40909, "calculate_type: the emulator takes only the SHA-256 types")
        content = fields.get("file")
        # The upload yml: advertiser_id, calculate_type, file and file_signature are required; the
        # file's suffix is exactly .csv or .txt; file_signature is the file's MD5.
        if not content:
            raise ApiError(40002, "file is required")
        if not _text(fields.get("file.filename")).endswith((".csv", ".txt")):
            raise ApiError(40908, "file: the suffix must be .csv or .txt")
        if _text(fields.get("file_signature")) != hashlib.md5(content, usedforsecurity=False).hexdigest():
            raise ApiError(40002, "file_signature does not match the file's MD5")
        schema, rows = _parse_file(content, calculate_type)
        _too_large(len(rows), self.max_batch, "file", 40907)
        file_path = self.state.new_file_path(adv)
        self.state.files[file_path] = UploadedFile(calculate_type, schema, rows)
        return {"file_path": file_path, "size": len(content)}

    def _files(self, body: Mapping[str, Any], calculate_type: str | None) -> list[UploadedFile]:
        paths = body.get("file_paths")
        if not isinstance(paths, list) or not paths:
            raise ApiError(40002, "file_paths: a non-empty list is required")
        files = []
        for path in paths:
            uploaded = self.state.files.get(str(path))
            if uploaded is None:
                raise ApiError(40002, "file_paths: unknown file path")
            # CustomAudienceCreateBody.md: calculate_type must be the same as all the files'.
            if calculate_type is not None and uploaded.calculate_type != calculate_type:
                raise ApiError(40002, "calculate_type differs from the uploaded file's")
            files.append(uploaded)
        return files

    def file_create(self, req: Request) -> dict[str, Any]:
        body = _json(req)
        adv = self.state.check_advertiser(body.get("advertiser_id"))
        name = body.get("custom_audience_name")
        # CustomAudienceCreateBody.md: custom_audience_name, required, at most 128 characters.
        if not isinstance(name, str) or not name or len(name) > FILE_NAME_LIMIT:
            raise ApiError(40002, "custom_audience_name: 1 to 128 characters")
        calculate_type = str(body.get("calculate_type") or "")
        files = self._files(body, calculate_type)
        audience = self.state.new_audience(adv, name, "file", calculate_type)
        audience.id_schema = files[0].schema
        for uploaded in files:
            self.state.add_members(audience, uploaded.rows)
        return {"custom_audience_id": audience.audience_id}

    def file_update(self, req: Request) -> dict[str, Any]:
        body = _json(req)
        adv = self.state.check_advertiser(body.get("advertiser_id"))
        audience = self.state.audience(adv, body.get("custom_audience_id"))
        # CustomAudienceUpdateBody.md: action APPEND | REMOVE | REPLACE, default REPLACE.
        action = body.get("action", "REPLACE")
        if action not in ("APPEND", "REMOVE", "REPLACE"):
            raise ApiError(40002, "action: must be APPEND, REMOVE or REPLACE")
        files = self._files(body, None)
        rows = [row for f in files for row in f.rows]
        if action == "REMOVE":
            after = len(set(audience.members) - set(rows))
        elif action == "REPLACE":
            after = len(set(rows))
        else:
            after = len(set(audience.members) | set(rows))
        # CustomAudienceUpdateBody.md: every action fails when fewer than 1,000 remain afterwards.
        # The code TikTok answers with is not published (A5): 40002 PARAM_ERROR here.
        if after < MIN_FILE_AUDIENCE:
            raise ApiError(40002, f"the audience would fall under {MIN_FILE_AUDIENCE} members")
        if action == "REMOVE":
            self.state.remove_members(audience, rows)
        elif action == "REPLACE":
            audience.members.clear()
            self.state.add_members(audience, rows)
        else:
            self.state.add_members(audience, rows)
        return {}

    def audience_delete(self, req: Request) -> dict[str, Any]:
        body = _json(req)
        adv = self.state.check_advertiser(body.get("advertiser_id"))
        ids = body.get("custom_audience_ids")
        if not isinstance(ids, list) or not ids:
            raise ApiError(40002, "custom_audience_ids: a non-empty list is required")
        for audience_id in ids:
            del self.state.audiences[self.state.audience(adv, audience_id).audience_id]
        return {}


def _json(req: Request) -> dict[str, Any]:
    try:
        body = req.json()
    except ValueError:
        raise ApiError(40002, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(40002, "the body must be a JSON object")
    return body


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(40002, f"{name} must be a number") from None


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def _multipart(req: Request) -> dict[str, bytes]:
    try:
        return parse_multipart(req.body, req.headers.get("Content-Type", ""), with_filenames=True)
    except ValueError as exc:
        raise ApiError(40002, f"the upload must be multipart/form-data: {exc}") from None


def _parse_file(content: bytes, calculate_type: str) -> tuple[list[str], list[Member]]:
    """Single type: one hash per line. MULTIPLE_TYPES: a CSV whose header names the id types."""
    try:
        lines = content.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise ApiError(40002, "the file must be plain text") from None
    lines = [line for line in lines if line.strip()]
    # Single type: one id per line, no header (A4: the API's file layout is not published).
    if calculate_type != MULTIPLE_TYPES:
        return [calculate_type], [(_hashed(line.strip()),) for line in lines]
    if not lines:
        raise ApiError(40002, "the file has no header row")
    reader = csv.reader(io.StringIO("\n".join(lines)))
    schema = next(reader)
    if not schema or any(s not in SCHEMAS for s in schema):
        raise ApiError(40002, "the file header must name supported id types")
    rows: list[Member] = []
    for cells in reader:
        if len(cells) != len(schema):
            raise ApiError(40002, "a file row has the wrong number of columns")
        rows.append(tuple(_hashed(c) if c else None for c in cells))
    return schema, rows


class TikTokEmulator(HttpEmulator):
    """The emulator, running: ``url`` is the endpoint to configure, ``admin_url`` the admin surface
    (the same server)."""

    def __init__(self, port: int = 0, advertisers: Iterable[str] = (DEMO_ADVERTISER,), **faults: Any) -> None:
        unknown = set(faults) - set(DEFAULT_FAULTS)
        if unknown:
            raise TypeError(f"unknown emulator options: {', '.join(sorted(unknown))}")
        self.faults = FaultSwitches({**DEFAULT_FAULTS, **faults})
        self.state = TikTokState(self.faults, advertisers)
        self.api = TikTokApi(self.state)
        self.server = EmulatorServer(self._handle, self.state.snapshot, self.state.reset, self.faults, port)

    def _handle(self, req: Request) -> Response:
        self.faults.maybe_drop()
        request_id = self.state.request_id()
        stall = self.faults.stall_for("timeout_rate", "timeout_seconds")
        response = self._answer(req, request_id)
        # TikTok applies the call, then answers too late: a client that timed out and re-sends must
        # be safe against a change that already landed.
        if stall:
            time.sleep(stall)
        self.faults.maybe_drop("lost_answer_rate")
        return response

    def _answer(self, req: Request, request_id: str) -> Response:
        faults = self.faults

        def error(code: int, message: str) -> Response:
            return Response.of_json({"code": code, "message": message, "request_id": request_id, "data": {}})

        if not req.path.startswith(PREFIX):
            return Response(404, b"Not Found", "text/plain")
        route = req.path[len(PREFIX) :]
        if not route.endswith("/"):
            route += "/"
        # tiktok_code.py: 40104 EMPTY_ACCESS_TOKEN, 40105 INVALID_ACCESS_TOKEN, 40102 ACCESS_TOKEN_EXPIRE,
        # 50000 SYS_ERROR, 40100/40132/61000 rate limits, 40202 WRITE_CONFLICT, 40001 PERMISSION_ERROR.
        if not req.headers.get("Access-Token"):
            return error(40104, "The access token is empty")
        if faults["invalid_token"]:
            return error(40105, "The access token is invalid or has expired")
        if faults["expired_token"]:
            return error(40102, "The access token has expired")
        if faults.roll("http_error_rate"):
            return Response(503, b"<html><body>503 Service Unavailable</body></html>", "text/html")
        if faults.roll("server_error_rate"):
            return error(50000, "Internal service error, please retry")
        if faults.roll("rate_limit_rate"):
            code = int(faults["rate_limit_code"])
            if code not in RATE_LIMIT_CODES:
                code = 40100
            return error(code, "Too many requests: the request frequency limit was exceeded")
        if faults.roll("write_conflict_rate"):
            return error(40202, "Write conflict: another request is changing this object")
        if faults["permission_denied"]:
            return error(40001, "No permission to operate this advertiser's audiences")
        handler = self.api.routes.get((req.method, route))
        if handler is None:
            return Response(404, b"Not Found", "text/plain")
        try:
            with self.state.lock:
                data = handler(req)
        except ApiError as exc:
            return error(exc.code, exc.message)
        if route in _PARTIAL_ROUTES and faults.roll("partial_ok_rate"):
            return Response.of_json(
                {"code": 20001, "message": "Partial success", "request_id": request_id, "data": data}
            )
        return Response.of_json({"code": 0, "message": "OK", "request_id": request_id, "data": data})


_PARTIAL_ROUTES = frozenset({"segment/mapping/", "dmp/custom_audience/update/"})


def start_emulator(port: int = 0, **options: Any) -> TikTokEmulator:
    """Start the emulator in a background thread on 127.0.0.1. ``options``: ``advertisers`` (ids it
    knows) and initial values of the fault switches, such as ``max_batch=5000``."""
    return TikTokEmulator(port, **options).start()


def serve(port: int, admin_port: int | None = None) -> None:
    """Run the emulator in the foreground until interrupted. The admin surface shares ``port``."""
    emulator = TikTokEmulator(port)
    print(
        f"TikTok Business API emulator on {emulator.url}{PREFIX} (admin: {emulator.admin_url}/_emulator/state; "
        f"advertiser {DEMO_ADVERTISER})",
        flush=True,
    )
    emulator.serve_forever()
