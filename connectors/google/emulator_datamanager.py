"""The Google emulator's Data Manager API v1 handlers: ``IngestionService`` (ingest, remove, request
status) and ``UserListService`` (create, get, list, update), over the store both APIs share.

Errors are gRPC statuses whose message starts with the field path (never the values), e.g.
``audience_members[3].user_data.user_identifiers[0].email_address: ...``; their details hold an
``ErrorInfo`` (reason: a Data Manager ``ErrorReason`` such as INVALID_SHA256_FORMAT or
TOO_MANY_USER_IDENTIFIERS) and a ``BadRequest`` field violation with that path. Requests fail whole:
at most 10 destinations, 10,000 members, 10 identifiers per member. Consent is per request and per
member (the member's wins); a member whose effective consent denies either purpose is not applied and
is counted as PROCESSING_ERROR_REASON_DENIED_CONSENT in the request status.

Sources: limits and ErrorReason names from developers.google.com/data-manager/api/devguides/limits and
.../reference/rest/v1/ErrorReason (the same enum in google-ads-datamanager,
google/ads/datamanager_v1/types/error.py); terms of service ACCEPTED on ingest from
datamanager_v1/types/terms_of_service.py; the error shape (fast-fail, ErrorInfo, RequestInfo,
BadRequest paths) from .../devguides/concepts/understand-errors; consent, member wins, from
.../reference/rest/v1/audienceMembers/ingest; hash format from .../devguides/concepts/formatting.
"""

from __future__ import annotations

import base64 as b64
import binascii
import re
import time
import uuid
from datetime import timedelta
from typing import Any

import grpc
from audiencesync.connectors.emulation.http import FaultSwitches
from audiencesync.connectors.google.emulator_errors import _Abort, _invalid
from audiencesync.connectors.google.emulator_gaql import _literal, _match_bucket
from audiencesync.connectors.google.emulator_rpc import Api, Call, Service
from audiencesync.connectors.google.emulator_store import (
    CUSTOMER_ID,
    HEX64,
    MAX_LIFE_SPAN_DAYS,
    _Delivery,
    _DmRequest,
    _Store,
    _UserList,
    is_rejected,
    rejected_values,
)
from google.ads.datamanager_v1.types import consent as dm_consent
from google.ads.datamanager_v1.types import ingestion_service as dm_ingestion
from google.ads.datamanager_v1.types import match_rate as dm_match_rate
from google.ads.datamanager_v1.types import processing_errors as dm_errors
from google.ads.datamanager_v1.types import request_status_per_destination as dm_status
from google.ads.datamanager_v1.types import user_list as dm_user_list
from google.ads.datamanager_v1.types import user_list_service as dm_user_list_service

MAX_DM_MEMBERS = 10_000
MAX_DM_IDENTIFIERS = 10
MAX_DM_DESTINATIONS = 10

_DM_ACCOUNT = re.compile(r"accountTypes/([A-Z_]+)/accounts/(\d+)")
_DM_LIST_NAME = re.compile(r"accountTypes/([A-Z_]+)/accounts/(\d+)/userLists/(\d+)")


_INGESTION = Service(Api.DATA_MANAGER, "IngestionService", dm_ingestion)
_USER_LISTS = Service(Api.DATA_MANAGER, "UserListService", dm_user_list_service)


class DataManagerApi:
    """The Data Manager API methods. Each takes the request message and the ``Call``; it answers the
    response message or raises ``_Abort``."""

    def __init__(self, store: _Store, faults: FaultSwitches) -> None:
        self.store = store
        self.faults = faults

    # --- Data Manager API: ingestion ---

    @_INGESTION.rpc("IngestAudienceMembers")
    def ingest(self, request: Any, call: Call) -> Any:
        # The Customer Match terms "must be accepted when ingesting UserData" (proto
        # google/ads/datamanager_v1/types/terms_of_service.py): missing or REJECTED fails the request
        # with ErrorReason TERMS_AND_CONDITIONS_NOT_SIGNED (reference/rest/v1/ErrorReason). The gRPC code
        # for it is an assumption (docs/setup-google.md, "Assumptions").
        terms = request.terms_of_service.customer_match_terms_of_service_status
        if getattr(terms, "name", "") != "ACCEPTED":
            raise _invalid(
                "terms_of_service.customer_match_terms_of_service_status: the Customer Match terms must be "
                "ACCEPTED to ingest user data.",
                "TERMS_AND_CONDITIONS_NOT_SIGNED",
            )
        request_id = self._accept_members("ingest", request)
        return dm_ingestion.IngestAudienceMembersResponse(request_id=request_id)

    @_INGESTION.rpc("RemoveAudienceMembers")
    def remove(self, request: Any, call: Call) -> Any:
        request_id = self._accept_members("remove", request)
        return dm_ingestion.RemoveAudienceMembersResponse(request_id=request_id)

    def _accept_members(self, kind: str, request: Any) -> str:
        destinations = list(request.destinations)
        # The members are read from the raw protobuf, as the Ads handler reads its operations: proto-plus
        # wraps every message it hands out, and at a full request's members that wrapping, not the
        # connector, would be what a push benchmark against the emulator measures.
        raw = type(request).pb(request)
        # One list of the members, kept alive while it is read: upb makes a new Python object for a
        # message on each access unless one is alive already.
        members = list(raw.audience_members)
        _dm_check_request_size(len(destinations), len(members))
        base64 = raw.encoding == dm_ingestion.Encoding.BASE64
        rejected = rejected_values(self.faults["reject_identifiers"])
        # Validate every member before touching the store: Data Manager requests fail whole, on the
        # first error (fast-fail, devguides/concepts/understand-errors).
        persons = [_dm_person(i, m, base64, rejected) for i, m in enumerate(members)]
        request_consent = raw.consent if kind == "ingest" and raw.HasField("consent") else None
        denied = [kind == "ingest" and _denied(request_consent, m) for m in members]
        with self.store.lock:
            deliveries = [self._delivery(i, d) for i, d in enumerate(destinations)]
            _distribute(members, persons, denied, deliveries)
            if request.validate_only:
                return ""
            if self.faults.roll("partial_success_rate"):
                for delivery in deliveries:
                    _drop_tenth(delivery)
            request_id = str(uuid.UUID(int=next(self.store.request_ids)))
            self.store.requests[request_id] = _DmRequest(
                request_id,
                kind,
                deliveries,
                time.monotonic(),
                float(self.faults["processing_seconds"]),
                len(members),
            )
            self.store.settle(time.monotonic())
        return request_id

    def _delivery(self, i: int, destination: Any) -> _Delivery:
        at = f"destinations[{i}]"
        account = destination.operating_account
        account_type = getattr(account.account_type, "name", "ACCOUNT_TYPE_UNSPECIFIED")
        if account_type not in ("GOOGLE_ADS", "ACCOUNT_TYPE_UNSPECIFIED"):
            raise _invalid(
                f"{at}.operating_account.account_type: the emulator serves GOOGLE_ADS accounts only.",
                "INVALID_DESTINATION",
            )
        if not CUSTOMER_ID.fullmatch(str(account.account_id)):
            raise _invalid(
                f"{at}.operating_account.account_id: must be 10 digits, no dashes.", "INVALID_DESTINATION"
            )
        list_id = str(destination.product_destination_id)
        target = self.store.lists.get(int(list_id)) if list_id.isdigit() else None
        if target is None or target.customer_id != account.account_id:
            raise _invalid(
                f"{at}.product_destination_id: no such user list in the operating account.",
                "INVALID_USER_LIST_ID",
            )
        return _Delivery(destination, target.id)

    @_INGESTION.rpc("RetrieveRequestStatus")
    def request_status(self, request: Any, call: Call) -> Any:
        with self.store.lock:
            self.store.settle(time.monotonic())
            found = self.store.requests.get(str(request.request_id))
            if found is None:
                raise _Abort(
                    grpc.StatusCode.NOT_FOUND, "request_id: no such request.", reason="INVALID_REQUEST_ID"
                )
            rate = int(self.faults["match_rate_percentage"])
            statuses = [_dm_status_for(found, d, rate) for d in found.deliveries]
        return dm_ingestion.RetrieveRequestStatusResponse(request_status_per_destination=statuses)

    # --- Data Manager API: user lists ---

    @_USER_LISTS.rpc("CreateUserList", response=dm_user_list.UserList)
    def create_list(self, request: Any, call: Call) -> Any:
        customer_id = _dm_account(str(request.parent), "parent")
        spec = request.user_list
        name = _dm_display_name(spec)
        if "ingested_user_list_info" in spec:
            types = {getattr(t, "name", str(t)) for t in spec.ingested_user_list_info.upload_key_types}
            if types - {"CONTACT_ID"}:
                raise _invalid(
                    "user_list.ingested_user_list_info.upload_key_types: the emulator supports CONTACT_ID only.",
                    "UNSUPPORTED_USER_LIST_UPLOAD_KEY_TYPES",
                )
        life_span = _dm_life_span(spec)
        rate = int(self.faults["match_rate_percentage"])
        with self.store.lock:
            self._dm_check_name_free(customer_id, name)
            new = _UserList(0, customer_id, name, str(spec.description), life_span)
            if not request.validate_only:
                new.id = next(self.store.list_ids)
                self.store.lists[new.id] = new
            return _dm_user_list_message(new, rate)

    def _dm_check_name_free(self, customer_id: str, name: str, renamed: _UserList | None = None) -> None:
        """Display names are unique per account; a list may keep its own (``renamed``)."""
        other = self.store.list_named(customer_id, name)
        if other is not None and other is not renamed:
            raise _Abort(
                grpc.StatusCode.ALREADY_EXISTS,
                "user_list.display_name: a user list with this name exists.",
                reason="DISPLAY_NAME_ALREADY_USED",
            )

    def _dm_list_by_name(self, name: str) -> _UserList:
        match = _DM_LIST_NAME.fullmatch(name)
        if match is None or match.group(1) != "GOOGLE_ADS":
            raise _invalid(
                "name: expected accountTypes/GOOGLE_ADS/accounts/{account}/userLists/{user_list}.",
                "INVALID_RESOURCE_NAME",
            )
        found = self.store.lists.get(int(match.group(3)))
        if found is None or found.customer_id != match.group(2):
            raise _Abort(grpc.StatusCode.NOT_FOUND, "User list not found.")
        return found

    @_USER_LISTS.rpc("GetUserList", response=dm_user_list.UserList)
    def get_list(self, request: Any, call: Call) -> Any:
        with self.store.lock:
            self.store.settle(time.monotonic())
            return _dm_user_list_message(
                self._dm_list_by_name(str(request.name)), int(self.faults["match_rate_percentage"])
            )

    @_USER_LISTS.rpc("ListUserLists")
    def list_lists(self, request: Any, call: Call) -> Any:
        customer_id = _dm_account(str(request.parent), "parent")
        wanted = _dm_filter(str(request.filter))
        size = int(request.page_size) or 50
        if size < 0:
            raise _invalid("page_size: must not be negative.", "INVALID_ARGUMENT")
        size = min(size, 1000)
        token = str(request.page_token)
        if token and not token.isdigit():
            raise _invalid("page_token: invalid.", "INVALID_PAGE_TOKEN")
        start = int(token or 0)
        with self.store.lock:
            self.store.settle(time.monotonic())
            rate = int(self.faults["match_rate_percentage"])
            mine = [
                x
                for x in self.store.lists.values()
                if x.customer_id == customer_id and wanted in (None, x.name)
            ]
            page = [_dm_user_list_message(x, rate) for x in mine[start : start + size]]
        response = dm_user_list_service.ListUserListsResponse(user_lists=page)
        if start + size < len(mine):
            response.next_page_token = str(start + size)
        return response

    @_USER_LISTS.rpc("UpdateUserList", response=dm_user_list.UserList)
    def update_list(self, request: Any, call: Call) -> Any:
        spec = request.user_list
        paths = list(dm_user_list_service.UpdateUserListRequest.pb(request).update_mask.paths)
        unknown = set(paths) - {"display_name", "description", "membership_duration"}
        if unknown or not paths:
            raise _invalid(
                "update_mask: the emulator updates display_name, description and membership_duration.",
                "INVALID_UPDATE_MASK",
            )
        with self.store.lock:
            target = self._dm_list_by_name(str(spec.name))
            name = _dm_display_name(spec) if "display_name" in paths else target.name
            self._dm_check_name_free(target.customer_id, name, renamed=target)
            life_span = _dm_life_span(spec) if "membership_duration" in paths else target.life_span_days
            if not request.validate_only:
                target.name = name
                target.life_span_days = life_span
                if "description" in paths:
                    target.description = str(spec.description)
            return _dm_user_list_message(target, int(self.faults["match_rate_percentage"]))


def _dm_account(parent: str, field_name: str) -> str:
    match = _DM_ACCOUNT.fullmatch(parent)
    if match is None or match.group(1) != "GOOGLE_ADS":
        raise _invalid(
            f"{field_name}: expected accountTypes/GOOGLE_ADS/accounts/{{account}}.", "INVALID_RESOURCE_NAME"
        )
    if not CUSTOMER_ID.fullmatch(match.group(2)):
        raise _invalid(f"{field_name}: the account id must be 10 digits, no dashes.", "INVALID_RESOURCE_NAME")
    return match.group(2)


def _dm_filter(text: str) -> str | None:
    if not text.strip():
        return None
    match = re.fullmatch(r"\s*display_name\s*=\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')\s*", text)
    if match is None:
        raise _invalid('filter: the emulator supports display_name = "..." only.', "INVALID_FILTER")
    return _literal(match.group(1))


def _dm_display_name(spec: Any) -> str:
    name = str(spec.display_name).strip()
    if not name:
        raise _invalid("user_list.display_name: required.", "INVALID_DISPLAY_NAME")
    return name


def _dm_life_span(spec: Any) -> int:
    if "membership_duration" not in spec:
        return MAX_LIFE_SPAN_DAYS
    duration = spec.membership_duration
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration.seconds)
    days = int(seconds // 86400)
    if seconds % 86400 or not 1 <= days <= MAX_LIFE_SPAN_DAYS:
        raise _invalid(
            f"user_list.membership_duration: whole days from 1 to {MAX_LIFE_SPAN_DAYS}.",
            "MEMBERSHIP_DURATION_TOO_LONG",
        )
    return days


def _dm_user_list_message(x: _UserList, rate: int) -> Any:
    size = len(x.members)
    info = dm_user_list.IngestedUserListInfo(
        upload_key_types=[dm_user_list.IngestedUserListInfo.UploadKeyType.CONTACT_ID],
        contact_id_info=dm_user_list.ContactIdInfo(
            data_source_type=dm_user_list.DataSourceType.DATA_SOURCE_TYPE_FIRST_PARTY,
            match_rate_percentage=rate if size else 0,
        ),
    )
    return dm_user_list.UserList(
        name=x.dm_name,
        id=x.id,
        read_only=False,
        display_name=x.name,
        description=x.description,
        membership_status=dm_user_list.UserList.MembershipStatus.OPEN,
        membership_duration=timedelta(days=x.life_span_days),
        access_reason=dm_user_list.UserList.AccessReason.OWNED,
        account_access_status=dm_user_list.UserList.AccessStatus.ENABLED,
        size_info=dm_user_list.SizeInfo(
            display_network_members_count=size, search_network_members_count=size
        ),
        target_network_info=dm_user_list.TargetNetworkInfo(
            eligible_for_display=size >= 100, eligible_for_search=size >= 1000
        ),
        ingested_user_list_info=info,
    )


_CONSENT_DENIED = int(dm_consent.ConsentStatus.CONSENT_DENIED)


def _denied(request_consent: Any, member: Any) -> bool:
    """True when the effective consent of ``member`` (its own over the request's; raw protobufs)
    denies either purpose. Statuses compare as ints: an unset one (0, unspecified) defers."""
    member_consent = member.consent if member.HasField("consent") else None
    for purpose in ("ad_user_data", "ad_personalization"):
        status = 0
        for source in (request_consent, member_consent):
            if source is not None and getattr(source, purpose):
                status = getattr(source, purpose)
        if status == _CONSENT_DENIED:
            return True
    return False


def _dm_hash(value: str, base64: bool, at: str) -> str:
    if base64:
        try:
            raw = b64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise _invalid(f"{at}: must be a base64-encoded SHA-256 hash.", "INVALID_SHA256_FORMAT")
        return raw.hex()
    if not HEX64.fullmatch(value):
        raise _invalid(
            f"{at}: must be a hex-encoded SHA-256 hash (64 lowercase hex characters).",
            "INVALID_SHA256_FORMAT",
        )
    return value


def _dm_person(i: int, member: Any, base64: bool, rejected: frozenset[str]) -> frozenset[str]:
    """Validate one ``AudienceMember`` (raw protobuf); its person as a frozenset of "kind:value"."""
    at = f"audience_members[{i}]"
    if member.WhichOneof("data") != "user_data":
        raise _invalid(f"{at}: the emulator takes user_data members only.", "INVALID_AUDIENCE_MEMBER")
    identifiers = member.user_data.user_identifiers
    if not identifiers:
        raise _invalid(
            f"{at}.user_data.user_identifiers: at least one is required.", "NO_IDENTIFIERS_PROVIDED"
        )
    if len(identifiers) > MAX_DM_IDENTIFIERS:
        raise _invalid(
            f"{at}.user_data.user_identifiers: at most {MAX_DM_IDENTIFIERS} per member, got {len(identifiers)}.",
            "TOO_MANY_USER_IDENTIFIERS",
        )
    entries: list[str] = []
    for j, ident in enumerate(identifiers):
        where = f"{at}.user_data.user_identifiers[{j}]"
        which = ident.WhichOneof("identifier")
        if which == "email_address":
            entries.append(f"email:{_dm_hash(str(ident.email_address), base64, where + '.email_address')}")
        elif which == "phone_number":
            entries.append(f"phone:{_dm_hash(str(ident.phone_number), base64, where + '.phone_number')}")
        elif which == "address":
            address = ident.address
            first = _dm_hash(str(address.given_name), base64, where + ".address.given_name")
            last = _dm_hash(str(address.family_name), base64, where + ".address.family_name")
            region, postal = str(address.region_code), str(address.postal_code)
            if not re.fullmatch(r"[A-Za-z]{2}", region):
                raise _invalid(
                    f"{where}.address.region_code: a two-letter ISO 3166-1 code.", "INVALID_COUNTRY_CODE"
                )
            if not postal.strip():
                raise _invalid(f"{where}.address.postal_code: required.", "INVALID_POSTAL_CODE")
            entries += [
                f"first_name:{first}",
                f"last_name:{last}",
                f"country:{region.upper()}",
                f"zip:{postal}",
            ]
        else:
            raise _invalid(f"{where}: an identifier is required.", "NO_IDENTIFIERS_PROVIDED")
    for entry in entries:
        if is_rejected(entry, rejected):
            raise _invalid(f"{at}.user_data: an identifier was rejected as invalid.", "INVALID_FORMAT")
    return frozenset(entries)


def _dm_check_request_size(destinations: int, members: int) -> None:
    """Data Manager's per-request limits: 1 to 10 destinations, 1 to 10,000 members."""
    if not destinations:
        raise _invalid("destinations: at least one destination is required.", "REQUIRED_FIELD_MISSING")
    if destinations > MAX_DM_DESTINATIONS:
        raise _invalid(f"destinations: at most {MAX_DM_DESTINATIONS} per request.", "TOO_MANY_DESTINATIONS")
    if not members:
        raise _invalid("audience_members: at least one member is required.", "REQUIRED_FIELD_MISSING")
    if members > MAX_DM_MEMBERS:
        raise _invalid(
            f"audience_members: at most {MAX_DM_MEMBERS} members per request, got {members}.",
            "TOO_MANY_AUDIENCE_MEMBERS",
        )


def _distribute(
    members: Any, persons: list[frozenset[str]], denied: list[bool], deliveries: list[_Delivery]
) -> None:
    """Give each member (raw protobufs) to the deliveries its ``destination_references`` name (all of
    them when it names none): counted there, and applied later unless its consent is ``denied``."""
    references = {d.destination.reference: d for d in deliveries if d.destination.reference}
    for i, member in enumerate(members):
        refs = list(member.destination_references)
        if any(r not in references for r in refs):
            raise _invalid(
                f"audience_members[{i}].destination_references: no destination has this reference.",
                "INVALID_DESTINATION",
            )
        for delivery in [references[r] for r in refs] if refs else deliveries:
            delivery.records += 1
            delivery.identifiers += len(member.user_data.user_identifiers)
            if denied[i]:
                delivery.errors["PROCESSING_ERROR_REASON_DENIED_CONSENT"] += 1
            else:
                delivery.persons.append(persons[i])


def _drop_tenth(delivery: _Delivery) -> None:
    """The partial_success_rate switch: the last tenth of the persons (at least one) is not applied
    and is counted as an invalid-format processing error, as a PARTIAL_SUCCESS request reports."""
    dropped = max(1, len(delivery.persons) // 10) if delivery.persons else 0
    if dropped:
        del delivery.persons[-dropped:]
        delivery.errors["PROCESSING_ERROR_REASON_INVALID_FORMAT"] += dropped


def _dm_request_status(req: _DmRequest, delivery: _Delivery) -> str:
    if not req.settled:
        return "PROCESSING"
    failed = sum(delivery.errors.values())
    if failed and failed >= delivery.records:
        return "FAILED"
    return "PARTIAL_SUCCESS" if failed else "SUCCESS"


def _match_range(rate: int) -> Any:
    """The Data Manager match-rate bucket for a percentage."""
    return getattr(dm_match_rate.MatchRateRange, f"MATCH_RATE_RANGE_{_match_bucket(rate)}")


def _dm_status_for(req: _DmRequest, delivery: _Delivery, rate: int) -> Any:
    rsd = dm_status.RequestStatusPerDestination
    status = rsd(
        destination=delivery.destination,
        request_status=getattr(rsd.RequestStatus, _dm_request_status(req, delivery)),
    )
    if req.settled and delivery.errors:
        status.error_info = dm_errors.ErrorInfo(
            error_counts=[
                dm_errors.ErrorCount(record_count=n, reason=getattr(dm_errors.ProcessingErrorReason, reason))
                for reason, n in sorted(delivery.errors.items())
            ]
        )
    if req.kind == "ingest":
        status.audience_members_ingestion_status = rsd.IngestAudienceMembersStatus(
            user_data_ingestion_status=rsd.IngestUserDataStatus(
                record_count=delivery.records,
                user_identifier_count=delivery.identifiers,
                upload_match_rate_range=_match_range(rate)
                if req.settled
                else dm_match_rate.MatchRateRange.MATCH_RATE_RANGE_UNKNOWN,
            )
        )
    else:
        status.audience_members_removal_status = rsd.RemoveAudienceMembersStatus(
            user_data_removal_status=rsd.RemoveUserDataStatus(
                record_count=delivery.records, user_identifier_count=delivery.identifiers
            )
        )
    return status
