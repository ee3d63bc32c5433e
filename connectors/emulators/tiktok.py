"""A local emulator of the TikTok Business API v1.3 audience endpoints, on 127.0.0.1.

Routes, under ``/open_api/v1.3/``: ``user/info/``, ``segment/audience/``, ``segment/mapping/``,
``dmp/custom_audience/list/``, ``get/``, ``file/upload/``, ``create/``, ``update/`` and ``delete/`` (the
last so tests can make an audience disappear). Errors come as TikTok sends them: HTTP 200 with a
non-zero ``code``, a ``message`` and a ``request_id``.

It validates what TikTok validates: the ``Access-Token`` header, the advertiser id (unknown -> 40007),
audience ids (unknown -> 40007), ids as 64 lowercase hex characters (else 40002), the persons per
mapping request or rows per file (more than ``max_batch`` -> 40002 "too large"), the file's MD5
signature, and a file update that would leave fewer than 1,000 members. A member is the tuple of ids of
one person in ``id_schema`` order (``null`` for a missing one); delete removes exactly that tuple.
``dmp/custom_audience/update/`` without ``action`` replaces the audience, as TikTok's default does.

Fault switches (``POST /_emulator/faults`` with a JSON object; ``seed`` reseeds the dice):
    invalid_token         bool   every call answers 40105
    permission_denied     bool   every call answers 40001
    rate_limit_rate       0..1   share of calls answered 40100
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
    max_batch             int    most persons per mapping request or rows per file (default 10,000)

Known advertiser: ``7000000000000000000`` (the demo config's), or those passed to ``start_emulator``.
"""

from __future__ import annotations

import csv
import email.parser
import email.policy
import hashlib
import io
import itertools
import json
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from audiencesync.connectors.emulators.http import (
    EmulatorServer,
    FaultSwitches,
    HttpEmulator,
    Request,
    Response,
    all_hex64,
)

PREFIX = "/open_api/v1.3/"
DEMO_ADVERTISER = "7000000000000000000"
SCHEMAS = ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "GAID_SHA256", "AAID_SHA256")
MULTIPLE_TYPES = "MULTIPLE_TYPES"
MIN_FILE_AUDIENCE = 1_000
_HEX64 = re.compile(r"[0-9a-f]{64}")

DEFAULT_FAULTS: dict[str, Any] = {
    "invalid_token": False,
    "permission_denied": False,
    "rate_limit_rate": 0.0,
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

Member = tuple[str | None, ...]


class ApiError(Exception):
    """An answer with a non-zero code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Audience:
    audience_id: str
    advertiser_id: str
    name: str
    kind: str
    """``segment`` (streamed ids) or ``file``."""
    calculate_type: str
    created: float
    members: dict[Member, bool] = field(default_factory=dict)
    """Member -> whether it matches a TikTok user."""
    id_schema: list[str] = field(default_factory=list)
    cover_num: int = 0
    changed_at: float | None = None
    """When the last change that cover_num does not reflect yet happened."""


@dataclass
class UploadedFile:
    calculate_type: str
    schema: list[str]
    rows: list[Member]


def is_unmatched(member: Member, rate: float) -> bool:
    """Whether ``member`` matches no TikTok user at ``rate``: a pure function of its ids."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(json.dumps(member).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < rate


class TikTokState:
    """Audiences, uploaded files and the request-id counter, behind one lock."""

    def __init__(self, faults: FaultSwitches, advertisers: Iterable[str]) -> None:
        self.faults = faults
        self.advertisers = frozenset(advertisers)
        self.lock = threading.Lock()
        self.audiences: dict[str, Audience] = {}
        self.files: dict[str, UploadedFile] = {}
        self._ids = itertools.count(7_100_000_000_000_000_001)
        self._files = itertools.count(1)
        self._requests = itertools.count(1)

    def reset(self) -> None:
        with self.lock:
            self.audiences.clear()
            self.files.clear()

    def request_id(self) -> str:
        return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}EMU{next(self._requests):08d}"

    # --- helpers -------------------------------------------------------------------------------
    def check_advertiser(self, advertiser_id: Any) -> str:
        if str(advertiser_id) not in self.advertisers:
            raise ApiError(40007, "Advertiser does not exist or you have no access to it")
        return str(advertiser_id)

    def audience(self, advertiser_id: str, audience_id: Any) -> Audience:
        found = self.audiences.get(str(audience_id))
        if found is None or found.advertiser_id != advertiser_id:
            raise ApiError(40007, "Custom audience does not exist or was deleted")
        return found

    def new_audience(self, advertiser_id: str, name: str, kind: str, calculate_type: str) -> Audience:
        audience = Audience(str(next(self._ids)), advertiser_id, name, kind, calculate_type, time.time())
        self.audiences[audience.audience_id] = audience
        return audience

    def changed(self, audience: Audience) -> None:
        audience.changed_at = time.monotonic()

    def settle(self, audience: Audience) -> None:
        """Recalculate cover_num once the recalculation delay has passed since the last change."""
        if audience.changed_at is None:
            return
        if time.monotonic() - audience.changed_at >= float(self.faults["recalc_delay_seconds"]):
            audience.cover_num = sum(1 for matched in audience.members.values() if matched)
            audience.changed_at = None

    def describe(self, audience: Audience) -> dict[str, Any]:
        self.settle(audience)
        return {
            "audience_id": audience.audience_id,
            "name": audience.name,
            "cover_num": audience.cover_num,
            "is_valid": audience.changed_at is None,
            "is_expiring": False,
            "expired_time": None,
            "calculate_type": audience.calculate_type,
            "audience_type": "Customer File" if audience.kind == "file" else "Segment",
            "create_time": int(audience.created),
            "is_creator": True,
        }

    def add_members(self, audience: Audience, members: Iterable[Member]) -> None:
        rate = float(self.faults["reject_id_rate"] or 0.0)
        if rate <= 0:
            audience.members.update(dict.fromkeys(members, True))
        for member in members if rate > 0 else ():
            audience.members[member] = not is_unmatched(member, rate)
        self.changed(audience)

    def remove_members(self, audience: Audience, members: Iterable[Member]) -> None:
        for member in members:
            audience.members.pop(member, None)
        self.changed(audience)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "audiences": [
                    {
                        "id": a.audience_id,
                        "name": a.name,
                        "advertiser_id": a.advertiser_id,
                        "kind": a.kind,
                        "id_schema": a.id_schema,
                        "members": [list(m) for m in a.members],
                        "unmatched": sum(1 for matched in a.members.values() if not matched),
                        "cover_num": self.describe(a)["cover_num"],
                    }
                    for a in self.audiences.values()
                ],
                "files": len(self.files),
            }


def _hashed(value: Any) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ApiError(40002, "Invalid id: expected a SHA256 hash as 64 lowercase hexadecimal characters")
    return value


_ID = operator.itemgetter("id")
_AUDIENCE_IDS = operator.itemgetter("audience_ids")


def _same_targets(batch: list[Any], width: int) -> dict[str, list[Member]] | None:
    """``batch_data`` as members per audience when it is well formed and every id names the same
    audiences (what a connector sends), checked a column at a time; None sends the request through
    the per-entry loop, which also finds what is wrong."""
    if set(map(type, batch)) - {list} or set(map(len, batch)) - {width}:
        return None
    entries = list(itertools.chain.from_iterable(batch))
    if set(map(type, entries)) - {dict}:
        return None
    filled = list(filter(None, entries))
    if not filled:
        return {}
    try:
        ids = list(map(_ID, filled))
        targets = list(map(_AUDIENCE_IDS, filled))
    except KeyError:  # an entry without one of them: the loop says which
        return None
    audience_ids = targets[0]
    # list.count compares in C: every entry names the same audiences.
    if type(audience_ids) is not list or not audience_ids or targets.count(audience_ids) != len(targets):
        return None
    if not all_hex64(ids) or set(map(type, audience_ids)) - {str, int}:
        return None
    members: list[Member]
    if len(filled) == len(entries):
        # No missing ids: the ids, in order, regrouped per person.
        members = list(zip(*[iter(ids)] * width, strict=True))
    else:
        get_id = operator.methodcaller("get", "id")
        # A person whose entries are all empty names no audience, as in the loop.
        members = [tuple(map(get_id, person)) for person in batch if any(person)]
    return {str(audience_id): members for audience_id in dict.fromkeys(audience_ids)}


def _too_large(count: int, limit: int, what: str) -> None:
    if count > limit:
        raise ApiError(40002, f"{what} too large: at most {limit} per request")


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
        if body.get("action") != "create":
            raise ApiError(40002, "action: only create is supported here")
        id_type = body.get("id_type")
        if id_type not in SCHEMAS:
            raise ApiError(40002, "id_type: not a supported id type")
        name = body.get("custom_audience_name")
        if not isinstance(name, str) or not name:
            raise ApiError(40002, "custom_audience_name is required")
        audience = self.state.new_audience(adv, name[:70], "segment", str(id_type))
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
        _too_large(len(batch), self.max_batch, "batch_data")
        same = _same_targets(batch, len(schema))
        per_audience: dict[str, list[Member]] = {} if same is None else same
        for person in batch if same is None else ():
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
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise ApiError(40002, "custom_audience_ids must hold 1 to 100 ids")
        found = [self.state.audience(adv, i) for i in ids]
        return {"list": [{"audience_details": self.state.describe(a), "audience_history": []} for a in found]}

    def file_upload(self, req: Request) -> dict[str, Any]:
        fields = _multipart(req)
        adv = self.state.check_advertiser(_text(fields.get("advertiser_id")))
        calculate_type = _text(fields.get("calculate_type"))
        if calculate_type not in (*SCHEMAS, MULTIPLE_TYPES):
            raise ApiError(40002, "calculate_type: not a supported encryption type")
        content = fields.get("file")
        if not content:
            raise ApiError(40002, "file is required")
        if _text(fields.get("file_signature")) != hashlib.md5(content, usedforsecurity=False).hexdigest():
            raise ApiError(40002, "file_signature does not match the file's MD5")
        schema, rows = _parse_file(content, calculate_type)
        _too_large(len(rows), self.max_batch, "file")
        file_path = f"{adv}/emulator/{next(self.state._files)}.csv"
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
            if calculate_type is not None and uploaded.calculate_type != calculate_type:
                raise ApiError(40002, "calculate_type differs from the uploaded file's")
            files.append(uploaded)
        return files

    def file_create(self, req: Request) -> dict[str, Any]:
        body = _json(req)
        adv = self.state.check_advertiser(body.get("advertiser_id"))
        name = body.get("custom_audience_name")
        if not isinstance(name, str) or not name or len(name) > 128:
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
        action = body.get("action", "REPLACE")
        if action not in ("APPEND", "REMOVE", "REPLACE"):
            raise ApiError(40002, "action: must be APPEND, REMOVE or REPLACE")
        files = self._files(body, None)
        rows = [row for f in files for row in f.rows]
        if action == "REMOVE":
            remaining = len(set(audience.members) - set(rows))
            if remaining < MIN_FILE_AUDIENCE:
                raise ApiError(40002, f"the audience would fall under {MIN_FILE_AUDIENCE} members")
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
    ctype = req.headers.get("Content-Type", "")
    if "multipart/form-data" not in ctype:
        raise ApiError(40002, "the upload must be multipart/form-data")
    raw = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode() + req.body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            fields[str(name)] = payload if isinstance(payload, bytes) else b""
    return fields


def _parse_file(content: bytes, calculate_type: str) -> tuple[list[str], list[Member]]:
    """Single type: one hash per line. MULTIPLE_TYPES: a CSV whose header names the id types."""
    try:
        lines = content.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise ApiError(40002, "the file must be plain text") from None
    lines = [line for line in lines if line.strip()]
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
        if faults["invalid_token"] or not req.headers.get("Access-Token"):
            return error(40105, "The access token is invalid or has expired")
        if faults.roll("http_error_rate"):
            return Response(503, b"<html><body>503 Service Unavailable</body></html>", "text/html")
        if faults.roll("server_error_rate"):
            return error(50000, "Internal service error, please retry")
        if faults.roll("rate_limit_rate"):
            return error(40100, "Too many requests: the request frequency limit was exceeded")
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
        return Response.of_json({"code": 0, "message": "OK", "request_id": request_id, "data": data})


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
