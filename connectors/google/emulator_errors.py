"""How the Google emulator fails a call: Data Manager statuses with Google's error details, and
Google Ads failures (GoogleAdsFailure) as the google-ads client reads them."""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.ads.googleads.v24.errors.types import errors as ads_errors
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

# --- errors -----------------------------------------------------------------------------------------


class _Abort(Exception):
    """A plain gRPC status (Data Manager errors, and the transport faults of both APIs)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        """A Data Manager ``ErrorReason`` name; with it the status carries Google's error details."""

    def status(self, request_id: str) -> Any:
        """The ``google.rpc.Status`` to send: Data Manager errors carry an ``ErrorInfo`` (the reason), a
        ``RequestInfo`` (the request id) and, when the message starts with a field path
        (``audience_members[3].user_data: ...``), a ``BadRequest`` field violation naming that field.
        Source: developers.google.com/data-manager/api/devguides/concepts/understand-errors (check
        ErrorInfo, RequestInfo; BadRequest names the field) and AIP-193. Fast-fail: the first error
        found fails the whole request, so one violation is named (which error Google names first
        when several are present is an assumption, docs/setup-google.md)."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.reason:
            request_info = any_pb2.Any()
            request_info.Pack(error_details_pb2.RequestInfo(request_id=request_id))
            status.details.append(request_info)
            info = any_pb2.Any()
            info.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain="datamanager.googleapis.com"))
            status.details.append(info)
            match = re.match(r"([\w\[\].]+): (.+)", self.message)
            if match is not None:
                violation = error_details_pb2.BadRequest.FieldViolation(
                    field=match.group(1), description=match.group(2), reason=self.reason
                )
                bad_request = any_pb2.Any()
                bad_request.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
                status.details.append(bad_request)
        return status


def _invalid(message: str, reason: str) -> _Abort:
    """A Data Manager INVALID_ARGUMENT whose details name ``reason`` (an ``ErrorReason``) and, when
    ``message`` starts with one, the field path."""
    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, message, reason)


class _AdsFailure(Exception):
    """A Google Ads API failure: one or more ``GoogleAdsError`` under one gRPC status."""

    def __init__(self, errors: list[Any], code: grpc.StatusCode | None = None) -> None:
        super().__init__("; ".join(str(e.message) for e in errors))
        self.errors = errors
        self.code = code if code is not None else _status_for(errors[0])


_Path = list[tuple[str, int | None]]

_CODE_STATUS = {
    "authentication_error": grpc.StatusCode.UNAUTHENTICATED,
    "authorization_error": grpc.StatusCode.PERMISSION_DENIED,
    "not_allowlisted_error": grpc.StatusCode.PERMISSION_DENIED,
    "quota_error": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "database_error": grpc.StatusCode.ABORTED,
}


def _status_for(error: Any) -> grpc.StatusCode:
    kind = ads_errors.ErrorCode.pb(error.error_code).WhichOneof("error_code")
    return _CODE_STATUS.get(str(kind), grpc.StatusCode.INVALID_ARGUMENT)


def ads_error(kind: str, name: str, message: str, path: _Path | None = None) -> Any:
    """A ``GoogleAdsError`` with ``error_code.<kind> = <name>`` and an optional field path, e.g.
    ``[("operations", 3), ("create", None), ("user_identifiers", 0), ("hashed_email", None)]``."""
    enum = ads_errors.ErrorCode.meta.fields[kind].enum
    error = ads_errors.GoogleAdsError(
        error_code=ads_errors.ErrorCode(**{kind: enum[name]}),
        message=message,
    )
    if path:
        elements = []
        for field_name, index in path:
            element = ads_errors.ErrorLocation.FieldPathElement(field_name=field_name)
            if index is not None:
                element.index = index
            elements.append(element)
        error.location = ads_errors.ErrorLocation(field_path_elements=elements)
    return error


def _fail(kind: str, name: str, message: str, path: _Path | None = None) -> _AdsFailure:
    return _AdsFailure([ads_error(kind, name, message, path)])


def _concurrent_modification() -> _AdsFailure:
    return _fail(
        "database_error",
        "CONCURRENT_MODIFICATION",
        "Multiple requests were attempting to modify the same resource at once. Retry the request.",
    )


def _partial_failure_status(errors: list[Any], request_id: str) -> Any:
    """The ``google.rpc.Status`` of a partial failure: details hold one Any-packed GoogleAdsFailure."""
    failure = ads_errors.GoogleAdsFailure(errors=errors, request_id=request_id)
    packed = any_pb2.Any()
    packed.Pack(ads_errors.GoogleAdsFailure.pb(failure))
    message = "Multiple errors in 'details'." if len(errors) > 1 else str(errors[0].message)
    return status_pb2.Status(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message, details=[packed]
    )
