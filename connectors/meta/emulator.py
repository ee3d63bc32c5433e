"""A local stand-in for the Graph API's Custom Audience endpoints, on ``emulators.http``.

Routes (any ``/vNN.N`` prefix):
    POST   /act_{id}/customaudiences            create (name, subtype=CUSTOM, description, customer_file_source)
    GET    /act_{id}/customaudiences            list, paged with ``limit`` and ``after``
    GET    /{audience_id}                        read (fields as Meta names them)
    POST   /{audience_id}/users                  add (users-ref)
    DELETE /{audience_id}/users                  remove, fields in the form body (users-ref); a POST
                                                 with ``method=DELETE`` is taken as one (assumption)

Membership is a set of rows (the tuple of values in schema order); a remove takes out that exact row.
Tokens come from the ``access_token`` parameter or a Bearer header.

Each rule names its source, with the short names ``connectors/meta/payload.py`` defines (users-ref,
ca-api, sdk-ca, rate-limit, errors, versioning). What no primary source settles (error codes for
malformed payloads and out-of-order sessions, the too-small subcode, ``method=DELETE``) is listed
under "Assumptions" in docs/setup-meta.md.

Fault switches (``POST /_emulator/faults`` with a JSON object; rates are per request):
    expected_token       token to accept (None: any non-empty token)
    force_error          every API request fails with one preset: "token" (190/460), "terms"
                         (200/1870090), "no_access" (100/33), "flagged" (100/1713230), "permission" (10),
                         "deprecated" (2635), "schema" (2650)
    throttle_rate        answer 400 with code ``throttle_code`` (80003, 17 or 613) and usage headers
    throttle_code        the throttling code sent (default 80003)
    regain_minutes       estimated_time_to_regain_access in those headers (default 0)
    server_error_rate    answer HTTP 500 with a transient Graph error
    html_rate            answer HTTP 502 with an HTML page
    slow_rate            sleep ``slow_seconds`` before answering (past the client timeout: a timeout)
    slow_seconds         default 2.0
    drop_rate            close the connection without an answer
    lost_answer_rate     apply a /users add or remove, then close the connection without an answer
    reject_row_rate      share of rows counted invalid and sampled in invalid_entry_samples
    too_small            refuse every remove with "Audience Size too low" (code 100, subcode 1870094,
                         an assumption: Meta does not document the code)
    processing_seconds   a change shows in approximate_count_* only this long after it was made;
                         operation_status says "Processing" meanwhile (default 0)
    deprecated_versions  versions (``["v24.0"]``) answered 2635, as Meta answers an expired version
                         on a changed endpoint (versioning)
    version_warning      text sent in ``X-Ad-Api-Version-Warning`` on every answer, as Meta does when
                         it auto-upgrades a call made with an expired version (versioning)
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from audiencesync.connectors.emulation.http import (
    EmulatorServer,
    FaultSwitches,
    HttpEmulator,
    Request,
    Response,
)
from audiencesync.connectors.meta.emulator_store import MetaStore, _Audience, _Session

VERSION_WARNING_HEADER = "X-Ad-Api-Version-Warning"  # versioning
MAX_ROWS = 10_000  # users-ref
RAW_FIELDS = frozenset(
    {"MADID", "EXTERN_ID", "MOBILE_ADVERTISER_ID"}
)  # sdk-ca format_params (EXTERN_ID); MADID: assumption
KNOWN_FIELDS = frozenset(  # sdk-ca CustomAudienceMixin.Schema.MultiKeySchema
    [
        "EXTERN_ID",
        "EMAIL",
        "PHONE",
        "GEN",
        "DOBY",
        "DOBM",
        "DOBD",
        "LN",
        "FN",
        "FI",
        "CT",
        "ST",
        "ZIP",
        "MADID",
        "COUNTRY",
    ]
)
# users-ref: a single key (a string schema, one value per row) or a list of multi-key fields.
SINGLE_KEYS = frozenset({"EMAIL_SHA256", "PHONE_SHA256", "MOBILE_ADVERTISER_ID"})
# sdk-ca CustomAudience.CustomerFileSource.
FILE_SOURCES = frozenset({"USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PATH = re.compile(r"^/(v\d+\.\d+)(/.*)$")

DEFAULT_FAULTS: dict[str, Any] = {
    "expected_token": None,
    "force_error": None,
    "throttle_rate": 0.0,
    "throttle_code": 80003,
    "regain_minutes": 0,
    "server_error_rate": 0.0,
    "html_rate": 0.0,
    "slow_rate": 0.0,
    "slow_seconds": 2.0,
    "drop_rate": 0.0,
    "lost_answer_rate": 0.0,
    "reject_row_rate": 0.0,
    "too_small": False,
    "processing_seconds": 0.0,
    "deprecated_versions": [],
    "version_warning": None,
}

# Codes and subcodes as meta_payload cites them (errors, ca-api, versioning, users-ref); the terms
# subcode is an assumption.
_PRESETS: dict[str, tuple[int, int | None, str, str]] = {
    "token": (190, 460, "OAuthException", "Error validating access token: Session has expired."),
    "terms": (200, 1870090, "OAuthException", "Custom Audience Terms Not Accepted"),
    "no_access": (
        100,
        33,
        "GraphMethodException",
        "Unsupported request. Object does not exist or no access.",
    ),
    "flagged": (100, 1713230, "OAuthException", "This audience was flagged and cannot be used."),
    "permission": (10, None, "OAuthException", "Application does not have permission for this action"),
    "deprecated": (
        2635,
        None,
        "OAuthException",
        "You are calling a deprecated version of the Ads API. Please update to the latest version.",
    ),
    "schema": (2650, None, "OAuthException", "FILE_IMPORTED.MULTI_HASHES: schema does not match"),
}


def graph_error(
    status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    kind: str = "OAuthException",
    transient: bool = False,
    headers: dict[str, str] | None = None,
    title: str | None = None,
) -> Response:
    error: dict[str, Any] = {
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": f"Emu{int(time.time() * 1000) % 10**9}",
        "is_transient": transient,
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if title:
        error["error_user_title"] = title
    return Response.of_json({"error": error}, status, headers)


class MetaEmulator(HttpEmulator):
    """Graph API state plus an ``EmulatorServer``. ``url`` is what ``session.GRAPH`` should be."""

    def __init__(self, port: int = 0, **options: Any) -> None:
        self.faults = FaultSwitches(DEFAULT_FAULTS)
        if options:
            self.faults.set(options)
        self.store = MetaStore()
        self.server = EmulatorServer(self.handle, self.store.snapshot, self.store.reset, self.faults, port)

    def members(self, audience_id: str) -> set[tuple[str, ...]]:
        """The rows audience ``audience_id`` holds."""
        return self.store.members(audience_id)

    # --- request handling --------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        response = self._answer(req)
        if warning := self.faults["version_warning"]:
            response.headers[VERSION_WARNING_HEADER] = str(warning)
        return response

    def _answer(self, req: Request) -> Response:
        match = _PATH.match(req.path)
        if match is None:
            return graph_error(400, 2500, "Unknown path components", kind="OAuthException")
        if match.group(1) in (self.faults["deprecated_versions"] or ()):
            return graph_error(
                400,
                2635,
                "You are calling a deprecated version of the Ads API. Please update to the latest version.",
            )
        try:
            form = req.form()
        except ValueError:
            return graph_error(400, 100, "Invalid parameter: the multipart body could not be read")
        token = form.get("access_token") or _bearer(req.headers)
        if not token or (self.faults["expected_token"] not in (None, token)):
            return graph_error(400, 190, "Invalid OAuth access token - Cannot parse access token")
        if (preset := self.faults["force_error"]) is not None:
            code, subcode, kind, message = _PRESETS[str(preset)]
            return graph_error(400, code, message, subcode=subcode, kind=kind)
        if (fault := self._transport_fault()) is not None:
            return fault
        parts = [p for p in match.group(2).split("/") if p]
        method = req.method
        if method == "POST" and form.get("method", "").upper() == "DELETE":
            method = "DELETE"
        if len(parts) == 2 and parts[0].startswith("act_") and parts[1] == "customaudiences":
            if method == "POST":
                return self._create(parts[0], form)
            if method == "GET":
                return self._list(parts[0], form)
        if len(parts) == 1 and method == "GET":
            return self._read(parts[0])
        if len(parts) == 2 and parts[1] == "users" and method in ("POST", "DELETE"):
            return self._users(parts[0], form, remove=method == "DELETE")
        return graph_error(400, 100, "Unsupported request", kind="GraphMethodException")

    def _transport_fault(self) -> Response | None:
        self.faults.maybe_drop()
        # Meta stalls before doing the work: a timed-out call changed nothing.
        if stall := self.faults.stall_for("slow_rate", "slow_seconds"):
            time.sleep(stall)
        if self.faults.roll("throttle_rate"):
            code = int(self.faults["throttle_code"])
            usage = (
                '{"act": [{"type": "custom_audience", "call_count": 100, "total_cputime": 40, '
                f'"total_time": 40, "estimated_time_to_regain_access": {int(self.faults["regain_minutes"])}}}]}}'
            )
            return graph_error(
                400,
                code,
                "User request limit reached",
                transient=True,
                headers={"X-Business-Use-Case-Usage": usage},
            )
        if self.faults.roll("server_error_rate"):
            return graph_error(500, 2, "An unexpected error has occurred. Please retry.", transient=True)
        if self.faults.roll("html_rate"):
            page = b"<!DOCTYPE html><html><head><title>Facebook | Error</title></head><body>Sorry, something went wrong.</body></html>"
            return Response(502, page, "text/html")
        return None

    def _create(self, account: str, form: dict[str, str]) -> Response:
        name = form.get("name", "")
        if not name or form.get("subtype", "CUSTOM") != "CUSTOM":
            return graph_error(400, 100, "Invalid parameter: name and subtype=CUSTOM are required")
        if form.get("customer_file_source", "USER_PROVIDED_ONLY") not in FILE_SOURCES:
            return graph_error(400, 100, "Invalid parameter: customer_file_source")
        with self.store.lock:
            audience_id = self.store.new_audience(
                account,
                name,
                form.get("description", ""),
                form.get("customer_file_source", "USER_PROVIDED_ONLY"),
            )
        return Response.of_json({"id": audience_id})

    def _list(self, account: str, form: dict[str, str]) -> Response:
        limit = int(form.get("limit") or 25)
        start = int(form.get("after") or 0)
        with self.store.lock:
            mine = [a for a in self.store.audiences.values() if a.account == account]
            page = mine[start : start + limit]
            data = [{"id": a.id, "name": a.name, "description": a.description} for a in page]
        body: dict[str, Any] = {"data": data}
        end = start + len(page)
        body["paging"] = {"cursors": {"before": str(start), "after": str(end)}}
        if end < len(mine):
            body["paging"]["next"] = f"{self.url}/{account}/customaudiences?after={end}"
        return Response.of_json(body)

    def _read(self, audience_id: str) -> Response:
        now = time.time()
        delay = float(self.faults["processing_seconds"])
        with self.store.lock:
            audience = self.store.audiences.get(audience_id)
            if audience is None:
                return graph_error(
                    400, 100, "Object does not exist or no access", subcode=33, kind="GraphMethodException"
                )
            visible = [h for h in audience.history if h[0] <= now - delay]
            pending = len(visible) < len(audience.history)
            size = visible[-1][1] if visible else 0
            updated = int(visible[-1][0]) if visible else None
            body = {
                "id": audience.id,
                "name": audience.name,
                "description": audience.description,
                "approximate_count_lower_bound": size,
                "approximate_count_upper_bound": size,
                "operation_status": (
                    {"code": 300, "description": "Processing"}
                    if pending
                    else {"code": 200, "description": "Normal"}
                ),
                "delivery_status": {"code": 200, "description": "This audience is ready for use."},
                "time_content_updated": updated,
            }
        return Response.of_json(body)

    def _users(self, audience_id: str, form: dict[str, str], *, remove: bool) -> Response:
        try:
            payload = json.loads(form.get("payload") or "")
            session = json.loads(form["session"]) if form.get("session") else None
        except ValueError:
            return graph_error(400, 100, "Invalid parameter: payload must be JSON")
        schema = payload.get("schema") if isinstance(payload, dict) else None
        data = payload.get("data") if isinstance(payload, dict) else None
        if isinstance(schema, str) and schema in SINGLE_KEYS and isinstance(data, list):
            # One value per row; the audience then holds that single key, so a multi-key upload to
            # it (or this one to a multi-key audience) is the 2650 schema mismatch below.
            schema, data = [schema], [[value] for value in data]
        if not isinstance(schema, list) or not schema or not isinstance(data, list):
            return graph_error(400, 100, "Invalid parameter: payload needs schema and data")
        if len(schema) > 1 and any(f in SINGLE_KEYS for f in schema):
            return graph_error(
                400, 100, "Invalid parameter: a single key cannot be part of a multi-key schema"
            )
        if any(f not in KNOWN_FIELDS | SINGLE_KEYS for f in schema):
            return graph_error(400, 100, "Invalid parameter: unknown schema field")
        if len(data) > MAX_ROWS:
            return graph_error(400, 100, f"Too many rows: at most {MAX_ROWS} per request")
        if any(not isinstance(r, list) or len(r) != len(schema) for r in data):
            return graph_error(400, 100, "Data is missing or does not match schema")
        if remove and self.faults["too_small"]:
            # The refusal's text as users report it (grouparoo/grouparoo#1108); code and subcode are
            # assumptions (docs/setup-meta.md).
            return graph_error(
                400,
                100,
                "Audience Size too low: You cannot remove users from this audience because it will "
                "result in a low audience size.",
                subcode=1870094,
                title="Audience Size too low",
            )
        with self.store.lock:
            audience = self.store.audiences.get(audience_id)
            if audience is None:
                return graph_error(
                    400, 100, "Object does not exist or no access", subcode=33, kind="GraphMethodException"
                )
            if audience.schema is not None and audience.schema != schema:
                return graph_error(
                    400, 2650, "FILE_IMPORTED.MULTI_HASHES: schema does not match the audience"
                )
            if session is not None and (refusal := _advance_session(audience, session)) is not None:
                return refusal
            audience.schema = list(schema)
            invalid: dict[str, str] = {}
            accepted: list[tuple[str, ...]] = []
            for row in data:
                bad = _invalid_value(schema, row)
                if bad is None and self.faults.roll("reject_row_rate"):
                    bad = next((v for v in row if v), None)
                if bad is not None:
                    # users-ref: invalid_entry_samples holds at most 100 of the invalid values.
                    if len(invalid) < 100:
                        invalid[bad] = "INVALID_HASH_FORMAT"
                    continue
                accepted.append(tuple(str(v) for v in row))
            if remove:
                audience.members.difference_update(accepted)
            else:
                audience.members.update(accepted)
            audience.history.append((time.time(), len(audience.members)))
            body = {
                "audience_id": audience_id,
                "session_id": session.get("session_id") if session else 0,
                "num_received": len(data),
                "num_invalid_entries": len(data) - len(accepted),
                "invalid_entry_samples": invalid,
            }
        # The change landed; the answer is lost on the way back (a proxy or network fault).
        self.faults.maybe_drop("lost_answer_rate")
        return Response.of_json(body)


def _advance_session(audience: _Audience, session: dict[str, Any]) -> Response | None:
    try:
        session_id, seq = int(session["session_id"]), int(session["batch_seq"])
    except (KeyError, TypeError, ValueError):
        return graph_error(400, 100, "Invalid parameter: session needs session_id and batch_seq")
    state = audience.sessions.setdefault(session_id, _Session())
    # A resend of the last batch (the client retried after losing our answer) is taken again.
    if seq == state.last_seq and seq > 0:
        return None
    if state.finished:
        return graph_error(400, 100, "Invalid parameter: this session already received its last batch")
    if seq != state.last_seq + 1:
        return graph_error(400, 100, "Invalid parameter: batch_seq out of order for this session")
    state.last_seq = seq
    state.finished = bool(session.get("last_batch_flag"))
    return None


def _invalid_value(schema: list[str], row: list[Any]) -> str | None:
    for name, value in zip(schema, row, strict=True):
        if not isinstance(value, str):
            return str(value)
        if value and name not in RAW_FIELDS and not _HEX64.fullmatch(value):
            return value
    return None


def _bearer(headers: Any) -> str | None:
    value = str(headers.get("Authorization") or headers.get("authorization") or "")
    return value[7:].strip() or None if value.lower().startswith("bearer ") else None


def start_emulator(port: int = 0, **options: Any) -> MetaEmulator:
    """A Meta emulator serving on 127.0.0.1 in a background thread; ``options`` are fault switches."""
    return MetaEmulator(port, **options).start()


def serve(port: int, admin_port: int | None = None) -> None:
    """Serve until interrupted. The admin surface shares the API port (``admin_port`` is accepted for
    the CLI's uniform signature and ignored)."""
    emulator = MetaEmulator(port)
    print(f"Meta Graph API emulator on {emulator.url} (admin: {emulator.url}/_emulator/state)", flush=True)
    emulator.serve_forever()
