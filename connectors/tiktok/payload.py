"""TikTok Business API v1.3 without a network: request bodies, the response envelope, the one error
mapping and the read-back translation. Everything here is a pure function, so the golden tests and
the code-mapping tests need no server.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Any

from audiencesync.connectors.contract import Change, PlatformStatus
from audiencesync.connectors.errors import (
    AudienceGone,
    AuthError,
    ConnectorError,
    FatalError,
    PermissionDenied,
    TransientError,
)
from audiencesync.connectors.tiktok.identity import IDENTITY

API_PREFIX = "/open_api/v1.3/"
DEFAULT_BASE_URL = "https://business-api.tiktok.com"
# Segment's tiktok-audiences/properties.ts: names over 70 characters are stored as 67 + "...".
SEGMENT_NAME_LIMIT = 70
NAME_ELLIPSIS = "..."
# python_sdk/docs/CustomAudienceCreateBody.md: custom_audience_name is at most 128 characters.
FILE_AUDIENCE_NAME_LIMIT = 128
# yml_files/dmp_custom_audience_list.yml: page_size 1-100.
LIST_PAGE_SIZE = 100
# TikTok's help centre (custom audiences): under this many matched members an audience cannot target
# an ad group.
MIN_USABLE_SIZE = 1_000
# python_sdk/docs/CustomAudienceUpdateBody.md: APPEND, REMOVE and REPLACE all fail when the audience
# has fewer than this many members after the operation.
MIN_FILE_AUDIENCE = 1_000
# The upload yml's calculate_type enum holds MULTIPLE_TYPES; the file layout that goes with it is an
# assumption (docs/setup-tiktok.md, "Assumptions", A4).
MULTIPLE_TYPES = "MULTIPLE_TYPES"

SUPPORTED_KINDS = tuple(IDENTITY.rules)
_FIXED_SCHEMAS = {"email": "EMAIL_SHA256", "phone": "PHONE_SHA256"}
# The upload yml's calculate_type enum (yml_files/dmp_custom_audience_file_upload.yml, strict) has no
# AAID_SHA256: an Android advertising id (AAID) is the Google advertising id, sent as GAID_SHA256.
_MAID_SCHEMAS = {"IDFA": "IDFA_SHA256", "GAID": "GAID_SHA256", "AAID": "GAID_SHA256"}
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# --- TikTok's response codes -----------------------------------------------------------------------
class CodeClass(Enum):
    """What the connector does with a TikTok answer (the class is the connector's rule; the codes and
    names are TikTok's, from its SDK's ``business_api_client/tiktok_business/tiktok_code.py``)."""

    OK = "ok"
    PARTIAL = "accepted with failures"
    RATE_LIMITED = "rate limited"
    RATE_LIMITED_LONG = "rate limited, long back-off"
    WRITE_CONFLICT = "write conflict"
    SERVER = "server error"
    TOO_LARGE = "too large"
    AUTH = "token"
    CREDENTIALS = "app credentials"
    PERMISSION = "permission"
    PARAMETER = "parameter"
    NOT_HASHED = "not hashed"
    NOT_EXIST = "not found"
    FATAL = "fatal"


# Every code of TikTok's SDK (tiktok_code.py, NumericErrorCodes), by number, with its SDK name: data,
# kept as it stands in the SDK in tiktok_codes.json beside this module. A code missing there is
# unknown: fatal, shown with TikTok's request id.
TIKTOK_CODES: dict[int, str] = {
    int(code): str(name)
    for code, name in json.loads(
        resources.files("audiencesync.connectors.tiktok").joinpath("tiktok_codes.json").read_text()
    ).items()
}

# The connector's class for each code it acts on (the codes and names are tiktok_code.py's; the table
# with what each class does is in docs/setup-tiktok.md). Every other code of the table above is FATAL;
# the 51xxx block is SERVER (code_class).
_CODE_CLASS: dict[int, CodeClass] = {
    0: CodeClass.OK,
    20001: CodeClass.PARTIAL,
    40100: CodeClass.RATE_LIMITED,
    40132: CodeClass.RATE_LIMITED,
    61000: CodeClass.RATE_LIMITED_LONG,
    40202: CodeClass.WRITE_CONFLICT,
    50000: CodeClass.SERVER,
    50002: CodeClass.SERVER,
    60001: CodeClass.SERVER,
    40061: CodeClass.TOO_LARGE,
    40011: CodeClass.TOO_LARGE,
    40907: CodeClass.TOO_LARGE,
    40102: CodeClass.AUTH,
    40104: CodeClass.AUTH,
    40105: CodeClass.AUTH,
    40101: CodeClass.CREDENTIALS,
    40110: CodeClass.CREDENTIALS,
    40001: CodeClass.PERMISSION,
    40118: CodeClass.PERMISSION,
    40002: CodeClass.PARAMETER,
    40062: CodeClass.NOT_HASHED,
    40007: CodeClass.NOT_EXIST,
}
PARTIAL_OK = 20001


def code_name(code: int) -> str | None:
    """TikTok's SDK name for ``code``, or None when the SDK does not list it."""
    return TIKTOK_CODES.get(code)


def code_class(http_status: int, code: int) -> CodeClass:
    """The one classification of a TikTok answer: its ``code`` first, then the HTTP status for an
    answer without the envelope (code -1)."""
    known = _CODE_CLASS.get(code)
    if known is not None and not (known is CodeClass.OK and http_status >= 400):
        return known
    if 51000 <= code <= 51999:  # tiktok_code.py: the 51xxx block is TikTok's internal services
        return CodeClass.SERVER
    if code in (0, -1):
        if http_status == 429:
            return CodeClass.RATE_LIMITED
        if http_status == 413:
            return CodeClass.TOO_LARGE
        if http_status >= 500:
            return CodeClass.SERVER
        if http_status == 401:
            return CodeClass.AUTH
        if http_status == 403:
            return CodeClass.PERMISSION
    return CodeClass.FATAL


# --- identifiers -----------------------------------------------------------------------------------
def schema_for(kind: str, maid_type: str) -> str:
    """TikTok's id type for one canonical identifier kind."""
    if kind == "maid":
        return _MAID_SCHEMAS[maid_type]
    return _FIXED_SCHEMAS[kind]


def schema_kinds(identifier_kinds: Sequence[str]) -> tuple[str, ...]:
    """The kinds of ``identifier_kinds`` TikTok takes, in the spec's order: the id_schema order."""
    return tuple(k for k in identifier_kinds if k in SUPPORTED_KINDS)


def id_schema(kinds: Sequence[str], maid_type: str) -> list[str]:
    return [schema_for(k, maid_type) for k in kinds]


def valid_hash(value: str | None) -> str | None:
    """``value`` as lowercase SHA-256 hex, or None when it is not one (TikTok refuses the request)."""
    if not value:
        return None
    lowered = value.strip().lower()
    return lowered if _SHA256_HEX.fullmatch(lowered) else None


@dataclass
class PersonRows:
    """A batch split into what can be sent and who cannot be: ``rows[i]`` belongs to ``keys[i]``."""

    keys: list[bytes] = field(default_factory=list)
    rows: list[tuple[str | None, ...]] = field(default_factory=list)
    rejected: dict[bytes, str] = field(default_factory=dict)


NO_VALID_ID = "no valid SHA-256 email, phone or mobile ad id for TikTok"


def person_rows(kinds: Sequence[str], batch: Sequence[Change]) -> PersonRows:
    """One row per person, values in ``kinds`` order (None where missing). A value that is not SHA-256
    hex is left out rather than sent, since TikTok fails the whole request for one bad id; a person
    left with no value at all is rejected with a reason instead."""
    out = PersonRows()
    if not kinds:
        out.rejected = {c.member_key: NO_VALID_ID for c in batch}
        return out
    # Column by column: a column of values already in TikTok's form (what the hasher produces) is
    # checked in one C-speed pass instead of a strip, lower and regex per value.
    columns = [_column([c.identifiers.get(kind) for c in batch]) for kind in kinds]
    rows = list(zip(*columns, strict=True))
    for change, row in zip(batch, rows, strict=True):
        if any(row):
            out.keys.append(change.member_key)
            out.rows.append(row)
        else:
            out.rejected[change.member_key] = NO_VALID_ID
    return out


_HEX_DIGITS = b"0123456789abcdef"


def _column(values: list[str | None]) -> list[str | None]:
    """``valid_hash`` of each value."""
    if _all_hex64(list(filter(None, values))):
        return [v or None for v in values]
    return [valid_hash(v) for v in values]


def _all_hex64(values: list[str]) -> bool:
    """Every value is 64 lowercase hex digits, checked in a few C-speed passes: joined with commas,
    the commas sit at every 65th byte and deleting hex digits leaves only them."""
    if not values:
        return True
    try:
        joined = ",".join(values).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return False
    commas = b"," * (len(values) - 1)
    return (
        len(joined) == 65 * len(values) - 1
        and joined[64::65] == commas
        and joined.translate(None, _HEX_DIGITS) == commas
    )


# --- request bodies --------------------------------------------------------------------------------
def mapping_body(
    advertiser_id: str,
    audience_id: str,
    action: str,
    schema: Sequence[str],
    rows: Sequence[Sequence[str | None]],
) -> dict[str, Any]:
    """Body of ``POST segment/mapping/``: one inner array per person in ``schema`` order, ``{}`` for a
    missing identifier so the positions hold. ``action`` is ``add`` or ``delete`` (never ``remove``).
    The shape is the peers' (Segment, Rudder), not TikTok's SDK: assumption A1."""
    if action not in ("add", "delete"):
        raise ValueError(f"mapping action must be add or delete, not {action!r}")
    audience_ids = [audience_id]
    return {
        "advertiser_ids": [advertiser_id],
        "action": action,
        "id_schema": list(schema),
        "batch_data": [
            [{"id": value, "audience_ids": audience_ids} if value else {} for value in row] for row in rows
        ],
    }


def mapping_json(
    advertiser_id: str,
    audience_id: str,
    action: str,
    schema: Sequence[str],
    rows: Sequence[Sequence[str | None]],
) -> bytes:
    """``mapping_body`` as compact JSON bytes, built from strings when every id is lowercase hex (as
    ``person_rows`` makes them), so nothing inside needs escaping: ``json.dumps`` of one small dict per
    id dominates the client side of a push (benchmarks/push.py). Anything else goes through
    ``json.dumps``."""
    values = [value for row in rows for value in row if value]
    try:
        plain = not "".join(values).encode("ascii").translate(None, _HEX_DIGITS)
    except UnicodeEncodeError:
        plain = False
    if not plain:
        return json.dumps(
            mapping_body(advertiser_id, audience_id, action, schema, rows), separators=(",", ":")
        ).encode()
    head = json.dumps(mapping_body(advertiser_id, audience_id, action, schema, []), separators=(",", ":"))
    before, after = '{"id":"', '","audience_ids":' + json.dumps([audience_id], separators=(",", ":")) + "}"
    # A person with every id present is one %-format of a fixed template: a C call instead of a join
    # per person (a '%' in the audience id is doubled so it stays literal; the ids are hex).
    full = "[" + ",".join([before.replace("%", "%%") + "%s" + after.replace("%", "%%")] * len(schema)) + "]"

    def person(row: Sequence[str | None]) -> str:
        if None not in row and "" not in row and len(row) == len(schema):
            return full % tuple(row)
        return "[" + ",".join([before + v + after if v else "{}" for v in row]) + "]"

    persons = ",".join([person(row) for row in rows])
    # head ends with "batch_data":[]} (the key is last, as mapping_body builds it).
    return (head[: -len("]}")] + persons + "]}").encode()


def create_segment_body(advertiser_id: str, name: str, id_type: str) -> dict[str, Any]:
    """Body of ``POST segment/audience/`` that creates an audience for streamed ids (assumption A1)."""
    return {
        "advertiser_id": advertiser_id,
        "custom_audience_name": cut_name(name, SEGMENT_NAME_LIMIT),
        "id_type": id_type,
        "action": "create",
    }


def cut_name(name: str, limit: int) -> str:
    """``name`` as TikTok stores it: over ``limit`` characters it keeps the first ``limit - 3`` and
    ends in "..." (Segment, tiktok-audiences/properties.ts, for the 70-character segment limit)."""
    if len(name) <= limit:
        return name
    return name[: limit - len(NAME_ELLIPSIS)] + NAME_ELLIPSIS


def file_calculate_type(schema: Sequence[str]) -> str:
    return schema[0] if len(schema) == 1 else MULTIPLE_TYPES


def customer_file(schema: Sequence[str], rows: Sequence[Sequence[str | None]]) -> bytes:
    """The uploaded file: one hashed id per line for a single id type; for several, a CSV whose header
    names the id types and whose empty cells are missing identifiers (the API's layout is not
    published: assumption A4)."""
    lines: list[str] = []
    if len(schema) > 1:
        lines.append(",".join(schema))
    lines.extend(",".join(value or "" for value in row) for row in rows)
    return ("\n".join(lines) + "\n").encode("ascii")


def file_signature(content: bytes) -> str:
    """TikTok checks the upload against the MD5 of the file, hex."""
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


def upload_fields(advertiser_id: str, calculate_type: str, content: bytes, file_name: str) -> dict[str, str]:
    """The multipart text fields of ``dmp/custom_audience/file/upload/`` (the file goes alongside)."""
    return {
        "advertiser_id": advertiser_id,
        "calculate_type": calculate_type,
        "file_name": file_name,
        "file_signature": file_signature(content),
    }


def file_create_body(advertiser_id: str, name: str, calculate_type: str, file_path: str) -> dict[str, Any]:
    """Body of ``dmp/custom_audience/create/`` (CustomAudienceCreateBody.md). No ``retention_in_days``:
    with it the expiry is fixed from creation and syncing would never extend it. The name is cut
    like a segment name, at 128 (assumption A9)."""
    return {
        "advertiser_id": advertiser_id,
        "custom_audience_name": cut_name(name, FILE_AUDIENCE_NAME_LIMIT),
        "calculate_type": calculate_type,
        "file_paths": [file_path],
    }


def file_update_body(advertiser_id: str, audience_id: str, action: str, file_path: str) -> dict[str, Any]:
    """Body of ``dmp/custom_audience/update/`` (CustomAudienceUpdateBody.md). Always names the action:
    TikTok's default is REPLACE, which would drop everyone else."""
    if action not in ("APPEND", "REMOVE"):
        raise ValueError(f"file update action must be APPEND or REMOVE, not {action!r}")
    return {
        "advertiser_id": advertiser_id,
        "custom_audience_id": audience_id,
        "action": action,
        "file_paths": [file_path],
    }


def get_params(advertiser_id: str, audience_id: str) -> dict[str, str]:
    return {"advertiser_id": advertiser_id, "custom_audience_ids": json.dumps([audience_id])}


# --- the envelope and the one error mapping --------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    """TikTok's answer: ``{code, message, request_id, data}`` plus the HTTP status it came with."""

    http_status: int
    code: int
    message: str
    request_id: str | None
    data: Mapping[str, Any]


def parse_envelope(http_status: int, body: bytes) -> Envelope:
    """Read an answer; a body that is not the envelope (a proxy's HTML error page) becomes code -1
    with the HTTP status kept, so the mapping can still tell a 503 from a 404."""
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict) or "code" not in payload:
        return Envelope(http_status, -1, "", None, {})
    try:
        code = int(payload["code"])
    except (TypeError, ValueError):
        code = -1
    data = payload.get("data")
    request_id = payload.get("request_id")
    return Envelope(
        http_status,
        code,
        str(payload.get("message") or ""),
        str(request_id) if request_id else None,
        data if isinstance(data, dict) else {},
    )


def is_too_large(env: Envelope) -> bool:
    """True when TikTok refused the request for its size (40061, 40011, 40907 or HTTP 413): the
    connector splits it in half."""
    return code_class(env.http_status, env.code) is CodeClass.TOO_LARGE


def partial_detail(env: Envelope) -> dict[str, object]:
    """What a 20001 PARTIAL_OK answer said, for the push result: TikTok does not document which items
    failed, so its message and the keys of ``data`` are kept (never the values: they can hold ids)."""
    return {
        "tiktok_partial": True,
        "tiktok_message": _safe_message(env.message),
        "tiktok_data_keys": sorted(str(k) for k in env.data),
        "request_id": env.request_id,
    }


def _safe_message(message: str) -> str:
    """TikTok's own message, trimmed, with anything that looks like a hashed id or token cut out."""
    cleaned = re.sub(r"[0-9a-fA-F]{32,}", "<redacted>", message)
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    return cleaned[:200]


def classify(env: Envelope, *, operation: str, audience_id: str | None = None) -> ConnectorError | None:
    """The one mapping from a TikTok answer to the error taxonomy; None means success (code 0, or
    20001 PARTIAL_OK: accepted with failures, see ``partial_detail``).

    ``operation`` names the call for the message (never its URL). ``audience_id`` is set when the call
    named an audience, so "object not found" (40007) means that audience is gone rather than that the
    advertiser id is wrong. Too-large answers come back as a ``FatalError`` here; the connector splits
    the request before it gets this far (``is_too_large``)."""
    code, rid = env.code, env.request_id
    kind = code_class(env.http_status, code)
    if kind in (CodeClass.OK, CodeClass.PARTIAL):
        return None
    tiktok_says = _safe_message(env.message)
    said = f": TikTok says {tiktok_says!r}" if tiktok_says else ""
    name = code_name(code)
    code_text = str(code) if code != -1 else None
    if code != -1:
        said = f" ({name or 'a code not in TikTok SDK table'}){said}"
    if kind in (CodeClass.RATE_LIMITED, CodeClass.RATE_LIMITED_LONG):
        return TransientError(f"TikTok rate limit hit during {operation}", request_id=rid, code=code_text)
    if kind is CodeClass.WRITE_CONFLICT:
        return TransientError(
            f"TikTok reports a concurrent write to the audience during {operation}; retrying after a "
            "pause (never sync one audience from two places at once)",
            request_id=rid,
            code=code_text,
        )
    if kind is CodeClass.SERVER:
        return TransientError(
            f"TikTok server error during {operation} (HTTP {env.http_status})", request_id=rid, code=code_text
        )
    if kind is CodeClass.AUTH:
        return AuthError(
            f"TikTok refused the access token during {operation}{said}; it is expired, missing or "
            "invalid: create a new long-lived token for the app and put it in the environment variable "
            "named by access_token_env",
            request_id=rid,
            code=code_text,
        )
    if kind is CodeClass.CREDENTIALS:
        return FatalError(
            f"TikTok refused the app's credentials during {operation}{said}; check the app id, secret "
            "and auth code the token was created with",
            request_id=rid,
            code=code_text,
        )
    if kind is CodeClass.PERMISSION:
        return PermissionDenied(
            f"TikTok denied {operation}{said}; grant the app the Audience Management scope, authorize it "
            "for this advertiser, and ask TikTok to allowlist it where the API requires that",
            request_id=rid,
            code=code_text,
        )
    if kind is CodeClass.NOT_EXIST:
        if audience_id is not None:
            return AudienceGone(
                f"TikTok no longer has audience {audience_id} ({operation}){said}; remove its pinned id "
                "(or the state entry) to let audience-sync create a new one",
                request_id=rid,
                code=code_text,
            )
        return FatalError(
            f"TikTok does not know this advertiser ({operation}){said}; check advertiser_id and that "
            "the token was authorized for it",
            request_id=rid,
            code=code_text,
        )
    if kind is CodeClass.NOT_HASHED:
        return FatalError(
            f"TikTok says the {operation} request carries ids that are not hashed{said}; this is a bug in "
            "audience-sync's hashing, please report it",
            request_id=rid,
            code=code_text,
        )
    if kind is CodeClass.PARAMETER:
        return FatalError(f"TikTok rejected the {operation} request{said}", request_id=rid, code=code_text)
    if kind is CodeClass.TOO_LARGE:
        return FatalError(
            f"TikTok refuses the {operation} request as too large even at one person{said}",
            request_id=rid,
            code=code_text,
        )
    return FatalError(
        f"TikTok answered {operation} with an unexpected error (HTTP {env.http_status}){said}",
        request_id=rid,
        code=code_text,
    )


# --- read-back -------------------------------------------------------------------------------------
def audience_details(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """``get`` nests the fields under ``audience_details`` while ``list`` does not; accept both."""
    nested = entry.get("audience_details")
    return nested if isinstance(nested, Mapping) else entry


def platform_status(entry: Mapping[str, Any]) -> PlatformStatus:
    """PlatformStatus from one audience of ``dmp/custom_audience/get/``."""
    details = audience_details(entry)
    raw_size = details.get("cover_num")
    size = int(raw_size) if isinstance(raw_size, int | float | str) and str(raw_size).isdigit() else None
    # TikTok reports an audience as not valid while it recalculates after a change; there is no
    # separate status field in the public docs, so not valid is read as "not ready yet" (A10).
    is_valid = bool(details.get("is_valid"))
    is_expiring = bool(details.get("is_expiring"))
    calculating = not is_valid
    if calculating:
        state = "calculating"
    elif is_expiring:
        state = "expiring"
    else:
        state = "valid"
    too_small = size is not None and size < MIN_USABLE_SIZE
    if state == "valid" and too_small:
        state = "valid, too small to target"
    detail: dict[str, object] = {
        "is_valid": is_valid,
        "is_expiring": is_expiring,
        "usable": state == "valid",
    }
    if too_small:
        detail["note"] = (
            f"TikTok matched fewer than {MIN_USABLE_SIZE:,} members; an ad group cannot target it yet"
        )
    if calculating:
        detail["note"] = "TikTok is recalculating the audience; cover_num is from the last calculation"
    for key in ("expired_time", "calculate_type", "audience_type"):
        if details.get(key) is not None:
            detail[key] = details[key]
    updated = details.get("update_time")
    return PlatformStatus(
        size_lower=size,
        size_upper=size,
        state=state,
        ready=not calculating,
        updated_at=float(updated) if isinstance(updated, int | float) else None,
        detail=detail,
    )
