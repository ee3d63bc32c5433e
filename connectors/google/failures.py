"""How Google's failures read, for both backends: partial failures decoded back onto members, Google
Ads failures and gRPC errors mapped onto ``audiencesync.connectors.errors``, Data Manager's error
details, and the request id. Pure functions, tested without a socket."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audiencesync.connectors import errors
from audiencesync.connectors.contract import Change
from google.ads.googleads.v24.errors.types.errors import GoogleAdsFailure
from google.api_core import exceptions as core
from google.rpc import error_details_pb2

__all__ = [
    "ADS_RETRYABLE",
    "NOT_ALLOWLISTED",
    "NOT_ALLOWLISTED_MESSAGE",
    "TRANSIENT_EXCEPTIONS",
    "DmError",
    "ads_error_code",
    "ads_error_reason",
    "classify_ads_failure",
    "classify_api_error",
    "classify_dm_request_error",
    "dm_error",
    "enum_name",
    "grpc_request_id",
    "partial_failure_reasons",
]

# developers.google.com/ads/blog/posts/2026/03/changes-to-customer-match-support-in
NOT_ALLOWLISTED = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"
NOT_ALLOWLISTED_MESSAGE = (
    "Google Ads refused Customer Match uploads for this developer token "
    "(CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE: since April 2026 only tokens that already uploaded may "
    'use the Google Ads API path): set backend = "data_manager" in this destination'
)
# Error codes (oneof field of GoogleAdsError.error_code, enum name) the Ads backend retries: the enum
# docs in google-ads google/ads/googleads/v26/errors/types/database_error.py (CONCURRENT_MODIFICATION:
# "retry the request") and quota_error.py (RESOURCE_TEMPORARILY_EXHAUSTED).
ADS_RETRYABLE = frozenset(
    {("database_error", "CONCURRENT_MODIFICATION"), ("quota_error", "RESOURCE_TEMPORARILY_EXHAUSTED")}
)
# The list is missing or unusable: enums in google/ads/googleads/v26/errors/types/
# {mutate,offline_user_data_job}_error.py.
_GONE_CODES = frozenset(
    {
        ("mutate_error", "RESOURCE_NOT_FOUND"),
        ("offline_user_data_job_error", "INVALID_USER_LIST_ID"),
        ("offline_user_data_job_error", "INVALID_USER_LIST_TYPE"),
    }
)
# gRPC answers (api_core classes) both backends retry: quota (Data Manager limits page: over quota is
# RESOURCE_EXHAUSTED, back off), UNAVAILABLE (AIP-194: retryable), server faults and deadlines (INTERNAL,
# DEADLINE_EXCEEDED: an assumption, docs/setup-google.md; the requests are idempotent adds/removes).
TRANSIENT_EXCEPTIONS: tuple[type[Exception], ...] = (
    core.ResourceExhausted,
    core.ServiceUnavailable,
    core.InternalServerError,
    core.DeadlineExceeded,
)


# --- partial failures -------------------------------------------------------------------------------


def partial_failure_reasons(status: Any, batch: Sequence[Change]) -> dict[bytes, str]:
    """Map ``AddOfflineUserDataJobOperationsResponse.partial_failure_error`` back onto members: each
    detail is a serialized GoogleAdsFailure whose errors name the failing operation's index."""
    reasons: dict[bytes, str] = {}
    if status is None or not getattr(status, "code", 0):
        return reasons
    unplaced: list[str] = []
    for detail in getattr(status, "details", ()):
        failure = GoogleAdsFailure.deserialize(detail.value)
        for error in failure.errors:
            reason = ads_error_reason(error)
            index = _operation_index(error)
            if index is not None and 0 <= index < len(batch):
                key = batch[index].member_key
                reasons.setdefault(key, reason)
            else:
                unplaced.append(reason)
    if unplaced and not reasons:
        # A partial failure that names no operation cannot be pinned on anyone: rather than guess who
        # was refused, the push stops here and its members stay queued.
        raise errors.FatalError(f"Google Ads reported a failure without an operation index: {unplaced[0]}")
    return reasons


def _operation_index(error: Any) -> int | None:
    for element in error.location.field_path_elements:
        if element.field_name == "operations" and "index" in element:
            return int(element.index)
    elements = list(error.location.field_path_elements)
    if elements and "index" in elements[0]:
        return int(elements[0].index)
    return None


def ads_error_code(error: Any) -> tuple[str, str]:
    """(oneof field, enum name) of a GoogleAdsError's code, e.g. ("database_error", "CONCURRENT_MODIFICATION")."""
    code = error.error_code
    which = type(code).pb(code).WhichOneof("error_code")
    if not which:
        return ("unknown", "UNKNOWN")
    return (which, enum_name(getattr(code, which)))


def ads_error_reason(error: Any) -> str:
    """A rejection reason with no PII: the error code, never the message (it can quote the value)."""
    which, name = ads_error_code(error)
    return f"{which}.{name}"


# --- errors -----------------------------------------------------------------------------------------


def classify_ads_failure(failure: Any, request_id: str | None) -> errors.ConnectorError:
    """Map a GoogleAdsException's failure onto the taxonomy. Retryable codes become TransientError."""
    codes = [ads_error_code(e) for e in failure.errors] or [("unknown", "UNKNOWN")]
    names = {n for _, n in codes}
    kinds = {w for w, _ in codes}
    mapped: tuple[type[errors.ConnectorError], str] = (errors.FatalError, "Google Ads refused the request")
    if NOT_ALLOWLISTED in names:
        mapped = (errors.ConfigurationRejected, NOT_ALLOWLISTED_MESSAGE)
    elif all(c in ADS_RETRYABLE for c in codes):
        mapped = (
            errors.TransientError,
            "Google Ads asked to retry (concurrent modification or temporary quota)",
        )
    elif "authentication_error" in kinds:
        mapped = (
            errors.AuthError,
            "Google Ads rejected the credentials: check the OAuth or service-account file named by "
            "credentials_env and its access to the account",
        )
    elif "authorization_error" in kinds:
        mapped = (
            errors.PermissionDenied,
            "Google Ads refused access: check the developer token, customer_id and login_customer_id, "
            "and that the credentials' user can manage the account",
        )
    elif set(codes) & _GONE_CODES:
        mapped = (
            errors.AudienceGone,
            "the Google Ads user list does not exist or cannot be used: remove its id from audience_ids "
            "(or state) so a new one is created",
        )
    elif "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS" in names:
        mapped = (
            errors.PermissionDenied,
            "the Customer Match terms are not accepted for this Google Ads account: accept them in Google "
            "Ads (Tools > Audience manager) and run again",
        )
    elif "header_error" in kinds:
        mapped = (
            errors.ConfigurationRejected,
            "Google Ads refused the request headers: check customer_id and login_customer_id (10 digits)",
        )
    error, message = mapped
    return error(message, request_id=request_id, code=",".join(f"{w}.{n}" for w, n in codes))


def classify_api_error(exc: core.GoogleAPICallError, *, service: str) -> errors.ConnectorError:
    """Map a gRPC error (as api_core raises it) onto the taxonomy, for either backend."""
    mapped: tuple[type[errors.ConnectorError], str] = (errors.FatalError, f"{service} refused the request")
    if isinstance(exc, TRANSIENT_EXCEPTIONS):
        mapped = (errors.TransientError, f"{service} is throttling or temporarily failing")
    elif isinstance(exc, core.Unauthenticated):
        mapped = (
            errors.AuthError,
            f"{service} rejected the credentials: check the file named by credentials_env (or the "
            "application-default credentials) and its OAuth scope",
        )
    elif isinstance(exc, core.PermissionDenied):
        mapped = (
            errors.PermissionDenied,
            f"{service} refused access: give the credentials' user or service account access to the "
            "Google Ads account (and login_customer_id's manager account), and enable the API in the "
            "Cloud project",
        )
    elif isinstance(exc, core.NotFound):
        mapped = (errors.AudienceGone, f"{service} {_UNKNOWN_LIST}")
    elif isinstance(exc, core.FailedPrecondition):
        mapped = (
            errors.ConfigurationRejected,
            f"{service} refused the setup (for example Customer Match terms not accepted in the Google "
            "Ads account): fix it in the account and run again",
        )
    error, message = mapped
    code = exc.grpc_status_code.name if exc.grpc_status_code is not None else type(exc).__name__
    return error(message, request_id=grpc_request_id(exc), code=code)


_UNKNOWN_LIST = (
    "does not know the user list: remove its id from audience_ids (or state) so a new one is created"
)


# Where a Data Manager field violation names a member: audience_members[i] (Google's error model,
# developers.google.com/data-manager/api/devguides/concepts/understand-errors, BadRequest details).
_DM_MEMBER_FIELD = re.compile(r"audience_members\[(\d+)\]")


@dataclass(frozen=True)
class DmError:
    """What a failed Data Manager call said: the ErrorInfo ``reason`` (an ErrorReason name,
    developers.google.com/data-manager/api/reference/rest/v1/ErrorReason) and, per member index named by
    a ``BadRequest.field_violations`` path inside ``audience_members[i]``, that field and reason."""

    reason: str
    members: Mapping[int, str]


def dm_error(exc: core.GoogleAPICallError) -> DmError:
    """Read Google's error details. Data Manager fails fast: a request fails whole, and only a violation
    inside audience_members[i] is a member's fault; anything else concerns the request (understand-errors
    page above), so callers split out named members only and never bisect."""
    reason = ""
    members: dict[int, str] = {}
    for detail in exc.details or ():
        if isinstance(detail, error_details_pb2.ErrorInfo):
            reason = reason or detail.reason
        elif isinstance(detail, error_details_pb2.BadRequest):
            for violation in detail.field_violations:
                match = _DM_MEMBER_FIELD.match(violation.field)
                if match is not None:
                    # The path and reason only: the description may quote the value.
                    why = violation.reason or reason or "INVALID_ARGUMENT"
                    members.setdefault(int(match.group(1)), f"{why} at {violation.field}")
    return DmError(reason or (exc.grpc_status_code.name if exc.grpc_status_code else ""), members)


def classify_dm_request_error(exc: core.GoogleAPICallError, *, service: str) -> errors.ConnectorError:
    """A Data Manager error that concerns the whole request (no member path), with Google's reason as
    its code and the request id: the destination stops, and no member is rejected for it."""
    found = dm_error(exc)
    request_id = grpc_request_id(exc)
    reason = found.reason
    if reason == "TERMS_AND_CONDITIONS_NOT_SIGNED":
        return errors.ConfigurationRejected(
            f"{service} refused the upload: the Customer Match terms are not accepted (set "
            "accept_customer_match_terms = true only if the advertiser accepts them, and accept them in "
            "the Google Ads account)",
            request_id=request_id,
            code=reason,
        )
    if reason == "INVALID_USER_LIST_ID":
        return errors.AudienceGone(f"{service} {_UNKNOWN_LIST}", request_id=request_id, code=reason)
    if reason in ("INVALID_DESTINATION", "INVALID_USER_LIST_TYPE", "TOO_MANY_DESTINATIONS"):
        return errors.ConfigurationRejected(
            f"{service} refused the destination: check customer_id and login_customer_id",
            request_id=request_id,
            code=reason,
        )
    mapped = classify_api_error(exc, service=service)
    if reason and not isinstance(mapped, errors.TransientError):
        mapped.code = reason
    return mapped


def grpc_request_id(exc: core.GoogleAPICallError) -> str | None:
    """The platform's request id, from trailing metadata or an ErrorInfo detail, when it gave one."""
    response = getattr(exc, "response", None)
    trailing = getattr(response, "trailing_metadata", None)
    if callable(trailing):
        try:
            for key, value in trailing() or ():
                if key in ("request-id", "x-request-id", "requestid"):
                    return str(value)
        except Exception:  # the call object of a failed RPC may refuse; the id is only a nicety
            pass
    for detail in exc.details or ():
        # RequestInfo carries it in Google's error model (Data Manager understand-errors page).
        if isinstance(detail, error_details_pb2.RequestInfo) and detail.request_id:
            return str(detail.request_id)
        metadata = getattr(detail, "metadata", None)
        if isinstance(metadata, Mapping):
            for key in ("requestId", "request_id"):
                if metadata.get(key):
                    return str(metadata[key])
    return None


def enum_name(value: Any) -> str:
    """A proto enum value's name (``SUCCESS``), or its text when it has none."""
    name = getattr(value, "name", None)
    return str(name) if name else str(value)
