"""Pure pieces of the Meta connector: schema, payload and session bodies, the schema marker kept in
an audience's description, per-row outcomes and the one error-mapping function. No network here, so
all of it is tested without a socket.

Sources, cited as short names in the comments below:
    users-ref   developers.facebook.com/docs/marketing-api/reference/custom-audience/users
    ca-api      developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences
    sdk-ca      facebook-business SDK, facebook_business/adobjects/customaudience.py and
                adobjects/helpers/customaudiencemixin.py (Schema, format_params)
    rate-limit  developers.facebook.com/docs/marketing-api/overview/rate-limiting
    errors      developers.facebook.com/docs/graph-api/guides/error-handling and
                developers.facebook.com/docs/marketing-api/error-reference
    versioning  developers.facebook.com/docs/marketing-api/overview/versioning and
                developers.facebook.com/blog/post/2024/04/16/upcoming-change-in-marketing-api-version-deprecation
Rules no primary source settles are listed once, under "Assumptions" in docs/setup-meta.md, and
marked "assumption" where they are used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audiencesync.connectors import errors
from audiencesync.connectors.contract import Change, SessionInfo
from audiencesync.connectors.meta.settings import API_VERSIONS

MAX_ROWS = 10_000
"""Meta takes at most 10,000 rows in one /users request (users-ref)."""

# Canonical identifier key -> Meta multi-key schema field (sdk-ca ``CustomAudienceMixin.Schema``).
SCHEMA_FIELDS: dict[str, str] = {
    "email": "EMAIL",
    "phone": "PHONE",
    "first_name": "FN",
    "last_name": "LN",
    "zip": "ZIP",
    "city": "CT",
    "state": "ST",
    "country": "COUNTRY",
    "doby": "DOBY",
    "dobm": "DOBM",
    "dobd": "DOBD",
    "gender": "GEN",
    "maid": "MADID",
    "external_id": "EXTERN_ID",
}
RAW_FIELDS = frozenset({"MADID", "EXTERN_ID"})
"""Fields Meta takes unhashed; every other field is lowercase SHA-256 hex (users-ref; sdk-ca
``format_params`` leaves EXTERN_ID raw; MADID raw is the assumption listed in docs/setup-meta.md)."""

# Retried with backoff. errors: 1 (unknown), 2 (service), 4 (app limit), 17 (user limit), 341 (app
# limit), 368 (temporarily blocked); rate-limit: 613, 80000, 80004 (ad account), 80014. 80003 is an
# assumption (no Meta page names it; peers retry it).
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 341, 368, 613, 80000, 80003, 80004, 80014})
THROTTLE_CODES = frozenset({4, 17, 613, 80000, 80003, 80004, 80014})
# users-ref: a single-key upload to a multi-key audience fails with 2650 (FILE_IMPORTED.MULTI_HASHES;
# facebook/facebook-python-business-sdk#433).
SCHEMA_MISMATCH_CODE = 2650
# ca-api, "Replace users": 2650 subcodes of /usersreplace sessions. 1870145 (replace in progress) is
# retried; the others end a replace session, which this connector never opens, so they are fatal and
# are not a schema mismatch.
REPLACE_IN_PROGRESS_SUBCODE = 1870145
REPLACE_SESSION_SUBCODES = frozenset({1870144, 1870147, 1870148, 1870158, 1870159})
# Assumption: 200/1870090 (Custom Audience terms not accepted) is named only by third-party notes;
# 200/1870050 (ad account outside a Business Manager) likewise; 2655 and 2663 as terms codes too.
TERMS_SUBCODE = 1870090
NO_BUSINESS_SUBCODE = 1870050
TERMS_CODES = frozenset({2655, 2663})
# errors: 100/33 "Object does not exist, cannot be loaded due to missing permissions"; ca-api: a
# flagged audience answers 100/1713230 and reads operation_status 471.
FLAGGED_SUBCODE = 1713230
NO_ACCESS_SUBCODE = 33
# versioning: "(#2635) You are calling a deprecated version of the Ads API".
VERSION_DEPRECATED_CODE = 2635
# versioning: an expired version's call to an unchanged endpoint is auto-upgraded and says so here.
VERSION_WARNING_HEADER = "X-Ad-Api-Version-Warning"
# A remove that would leave the audience too small is refused with a message starting "Audience Size
# too low" (grouparoo/grouparoo#1108); Meta publishes neither code nor subcode, so the text decides.
# Assumption: code 100 with subcode 1870094 is matched as well.
TOO_SMALL_CODE = 100
TOO_SMALL_SUBCODE = 1870094
TOO_SMALL_REASON = "audience_too_small"
FLAGGED_OPERATION_STATUS = 471

_MARKER = re.compile(r"\[audience-sync schema: ([A-Z_,]*)\]\s*$")


def schema_for(identifier_kinds: Sequence[str]) -> list[str]:
    """The audience's multi-key schema, in the spec's fixed key order."""
    unknown = [k for k in identifier_kinds if k not in SCHEMA_FIELDS]
    if unknown:
        raise errors.SchemaMismatch(f"Meta has no schema field for identifier kind(s) {', '.join(unknown)}")
    return [SCHEMA_FIELDS[k] for k in identifier_kinds]


def row_for(change: Change, identifier_kinds: Sequence[str]) -> list[str]:
    """One payload row; a key the member lacks is sent as the empty string, as Meta asks (users-ref)."""
    return [change.identifiers.get(kind, "") or "" for kind in identifier_kinds]


def rows_for(batch: Sequence[Change], identifier_kinds: Sequence[str]) -> list[tuple[str, ...]]:
    """``row_for`` of each change, built a column at a time: one comprehension per identifier kind
    rather than one per member."""
    if not identifier_kinds:
        return [() for _ in batch]
    columns = [[c.identifiers.get(kind, "") or "" for c in batch] for kind in identifier_kinds]
    return list(zip(*columns, strict=True))


def build_session(session: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "batch_seq": session.batch_seq,
        "last_batch_flag": session.last_batch,
        "estimated_num_total": session.estimated_total,
    }


def users_request(
    identifier_kinds: Sequence[str],
    rows: Sequence[Sequence[str]],
    session: SessionInfo | None,
) -> tuple[dict[str, str], bytes]:
    """The form fields of a /{audience_id}/users request, as (small fields, the ``payload`` field's
    bytes); ``rows`` come from ``row_for``. Adds are POST and removes DELETE on that path (users-ref).
    Every field goes as its own multipart/form-data part, the way Meta's docs post them
    (``curl -F payload=...``): the SDK's ``remove_users`` would put DELETE parameters (10,000 hashed
    rows) in the URL, and URL-encoding rows of JSON percent-escapes every quote and comma in pure
    Python, on both sides of the wire."""
    # is_raw: the SDK sends it true with every multi-key schema (sdk-ca format_params, which refuses
    # a multi-key schema without it), and Meta's users/usersreplace parameter tables list it.
    payload = json.dumps(
        {"schema": schema_for(identifier_kinds), "is_raw": True, "data": rows}, separators=(",", ":")
    )
    fields: dict[str, str] = {}
    if session is not None:
        fields["session"] = json.dumps(build_session(session), separators=(",", ":"))
    return fields, payload.encode()


def with_schema_marker(description: str, schema: Sequence[str]) -> str:
    """Meta does not return an audience's schema on read, so we keep it at the end of the description."""
    base = _MARKER.sub("", description).rstrip()
    marker = f"[audience-sync schema: {','.join(schema)}]"
    return f"{base} {marker}" if base else marker


def schema_in_description(description: str | None) -> list[str] | None:
    """The schema recorded by ``with_schema_marker``; None when the audience was not made by us."""
    match = _MARKER.search(description or "")
    if match is None:
        return None
    return [f for f in match.group(1).split(",") if f]


@dataclass(frozen=True)
class RowOutcomes:
    confirmed: list[bytes]
    rejected: dict[bytes, str]
    detail: dict[str, object]
    unverified: list[bytes] = field(default_factory=list)
    """Rows of a batch with more invalid entries than samples: which of them failed is unknown."""
    unnamed_failures: int = 0


def is_users_answer(body: object) -> bool:
    """True for the success body Meta documents for ``/users``: ``num_received`` a whole number, and
    ``num_invalid_entries``, when present, one too (users-ref, "Return type")."""
    if not isinstance(body, Mapping):
        return False
    received, invalid = body.get("num_received"), body.get("num_invalid_entries")
    return _whole(received) and (invalid is None or _whole(invalid))


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def row_outcomes(
    body: Mapping[str, Any], batch: Sequence[Change], identifier_kinds: Sequence[str]
) -> RowOutcomes:
    """Split a successful /users answer into confirmed and rejected members. A row is rejected when
    one of its values appears in ``invalid_entry_samples``; Meta samples at most 100 (users-ref), so
    beyond that an invalid row cannot be told apart and is confirmed."""
    samples = body.get("invalid_entry_samples") or {}
    reasons: dict[str, str] = {}
    if isinstance(samples, Mapping):
        reasons = {str(k): str(v) for k, v in samples.items()}
    elif isinstance(samples, list):
        for item in samples:
            for value in item if isinstance(item, list) else [item]:
                reasons[str(value)] = "invalid"
    confirmed: list[bytes] = []
    rejected: dict[bytes, str] = {}
    if not reasons:
        confirmed = [c.member_key for c in batch]
    for change in batch if reasons else ():
        hit = next((v for v in row_for(change, identifier_kinds) if v and v in reasons), None)
        if hit is None:
            confirmed.append(change.member_key)
        else:
            rejected[change.member_key] = f"invalid_entry: {_safe_reason(reasons[hit])}"
    # Meta counts invalid rows in num_invalid_entries but samples at most 100 of them (meta.md,
    # Payload: success body): failures beyond the samples cannot be mapped to rows, so no row left
    # unnamed may be called confirmed.
    unverified: list[bytes] = []
    unnamed = max(0, (_int(body.get("num_invalid_entries")) or 0) - len(rejected))
    if unnamed:
        unverified, confirmed = confirmed, []
    detail: dict[str, object] = {
        "num_received": body.get("num_received"),
        "num_invalid_entries": body.get("num_invalid_entries"),
        "invalid_entry_samples": len(reasons),
        "session_id": body.get("session_id"),
    }
    return RowOutcomes(confirmed, rejected, detail, unverified, unnamed)


def _safe_reason(reason: str) -> str:
    # A reason must never carry the hashed value back into logs or the rejection table.
    cleaned = re.sub(r"[0-9a-fA-F]{16,}", "<value>", reason)
    return cleaned[:80] or "invalid"


def regain_access_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Largest ``estimated_time_to_regain_access`` (minutes) in the usage headers, as seconds
    (rate-limit: ``X-Business-Use-Case-Usage`` and ``X-Ad-Account-Usage``)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    minutes: list[float] = []
    for name in ("x-business-use-case-usage", "x-ad-account-usage"):
        raw = lowered.get(name)
        if not raw:
            continue
        try:
            minutes.extend(_regain_values(json.loads(raw)))
        except ValueError:
            continue
    return max(minutes) * 60.0 if minutes else None


def _regain_values(node: Any) -> list[float]:
    found: list[float] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "estimated_time_to_regain_access" and isinstance(value, int | float):
                found.append(float(value))
            else:
                found.extend(_regain_values(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_regain_values(item))
    return found


# Session rules (meta.md, Payload and Endpoints): session_id is an int64 unique per ad account;
# batch_seq counts 1.. within a session; last_batch_flag closes it; without it a session ends 90
# minutes after its first batch and later batches are dropped. Session errors documented for
# /usersreplace are 2650 with subcodes 1870158 (timed out), 1870147 (first batch_seq missing), 1870159
# (session finished) and 1870148 (generic).
# Assumptions, no primary source: (1) /users answers a session it will not take with those same
# subcodes or with a bare code 100 "Invalid parameter"; (2) a refused session can simply be abandoned
# and its batches resent in a new session, because adds and removes of the same rows are idempotent;
# (3) a new session per push (never resuming one from an earlier run) costs nothing but the new id.
SESSION_REFUSED_SUBCODES = frozenset({1870158, 1870147, 1870159, 1870148})


def is_session_refusal(code: str | None) -> bool:
    """True when an error ``code`` ("code" or "code/subcode") on a request carrying a session may be
    Meta refusing the session rather than the batch (see the assumptions above)."""
    if code is None:
        return False
    main, _, sub = code.partition("/")
    if main == str(SCHEMA_MISMATCH_CODE) and sub.isdigit() and int(sub) in SESSION_REFUSED_SUBCODES:
        return True
    return main == "100" and not sub


def is_too_small_refusal(error: Mapping[str, Any]) -> bool:
    """Meta's refusal to remove members because the audience would become too small."""
    if error.get("code") == TOO_SMALL_CODE and error.get("error_subcode") == TOO_SMALL_SUBCODE:
        return True
    words = f"{error.get('error_user_title', '')} {error.get('message', '')}".lower()
    return "low audience size" in words or "audience size too low" in words


def version_warning(headers: Mapping[str, str] | None) -> str | None:
    """Meta's note that it auto-upgraded a call made with an expired version (versioning), trimmed to
    one short line; None when the answer carried none."""
    if not headers:
        return None
    wanted = VERSION_WARNING_HEADER.lower()
    value = next((str(v) for k, v in headers.items() if k.lower() == wanted), "")
    text = " ".join(value.split())[:200]
    return text or None


def terms_url(ad_account_id: str) -> str:
    digits = ad_account_id.removeprefix("act_")
    return f"https://business.facebook.com/ads/manage/customaudiences/tos/?act={digits}"


def classify_error(
    http_status: int | None,
    body: Any,
    headers: Mapping[str, str] | None,
    ad_account_id: str,
) -> errors.ConnectorError:
    """Map one failed Graph API answer onto the error taxonomy. ``body`` is the decoded JSON body, or
    the raw text when Meta answered with an HTML page. Messages never quote the body or the request."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        status = f"HTTP {http_status}" if http_status else "no status"
        return errors.TransientError(f"Meta answered with a page that is not a Graph API answer ({status})")
    code = _int(error.get("code"))
    subcode = _int(error.get("error_subcode"))
    trace = str(error["fbtrace_id"]) if error.get("fbtrace_id") else None
    code_text = f"{code}/{subcode}" if subcode else str(code)

    def make(cls: type[errors.ConnectorError], message: str) -> errors.ConnectorError:
        return cls(message, request_id=trace, code=code_text)

    if code == 190:
        return make(
            errors.AuthError,
            "Meta rejected the access token (expired or invalid): create a new system-user token with "
            "ads_management and put it in the environment variable named by access_token_env",
        )
    if (code == 200 and subcode == TERMS_SUBCODE) or code in TERMS_CODES:
        return make(
            errors.PermissionDenied,
            "the Custom Audience terms are not accepted for this ad account: accept them at "
            f"{terms_url(ad_account_id)} and run again",
        )
    if code == 200 and subcode == NO_BUSINESS_SUBCODE:
        return make(
            errors.PermissionDenied,
            "the ad account is not part of a Business Manager: add it to one, then run again",
        )
    if code == 100 and subcode == FLAGGED_SUBCODE:
        return make(
            errors.AudienceGone,
            "the custom audience was deleted or flagged by Meta: remove its id from audience_ids (or "
            "state) so a new one is created",
        )
    if code == 100 and subcode == NO_ACCESS_SUBCODE:
        return make(
            errors.PermissionDenied,
            "the object does not exist or the token's user has no access to it: add the system user "
            "to the ad account (Business Settings > Ad accounts > Add people) with Manage campaigns",
        )
    if code == SCHEMA_MISMATCH_CODE and subcode == REPLACE_IN_PROGRESS_SUBCODE:
        return make(errors.TransientError, "Meta is still processing an earlier update of this audience")
    if code == SCHEMA_MISMATCH_CODE and subcode in REPLACE_SESSION_SUBCODES:
        return make(
            errors.FatalError,
            "Meta ended a replace session on this audience: wait until its operation_status is normal, "
            "then run again",
        )
    if code == SCHEMA_MISMATCH_CODE:
        return make(
            errors.SchemaMismatch,
            "the audience was created with other identifier keys than this sync sends "
            "(FILE_IMPORTED.MULTI_HASHES): use a new audience name or align source.identifiers",
        )
    if code == VERSION_DEPRECATED_CODE:
        return make(
            errors.ConfigurationRejected,
            f"Meta no longer serves this Marketing API version (error 2635): set api_version in the "
            f"destination to a current one, such as {API_VERSIONS.default}",
        )
    if code == 10 or (code is not None and 200 <= code <= 299):
        return make(
            errors.PermissionDenied,
            "the token lacks a permission: give the system user ads_management and access to the ad "
            "account, then create a new token",
        )
    # errors: Meta marks an answer worth retrying with is_transient; an HTTP 5xx is a server fault.
    if code in TRANSIENT_CODES or error.get("is_transient") is True:
        return errors.TransientError(
            "Meta is throttling or temporarily failing requests",
            request_id=trace,
            code=code_text,
            retry_after=regain_access_seconds(headers),
        )
    if http_status is not None and http_status >= 500:
        return make(errors.TransientError, f"Meta answered HTTP {http_status}")
    return make(
        errors.FatalError, f"Meta refused the request (HTTP {http_status}): check the destination settings"
    )


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
