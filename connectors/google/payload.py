"""Pure pieces of the Google Customer Match connector, for both backends: the protobuf requests built
from ``Change``s, consent splits, partial-failure decoding, job and request status, and the error
mapping onto ``audiencesync.connectors.errors`` (``failures``). No network here, so all of it is
tested without a socket.

Both backends take the same identifiers (``sync.identity`` makes them): SHA-256 hex of the
normalized email, E.164 phone, first and last name; the country code and postcode raw.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audiencesync.connectors.contract import Change, HandleStatus

# The failure readers (failures.__all__) are reached through this module too, as the backends always have.
from audiencesync.connectors.google.failures import *  # noqa: F403
from audiencesync.connectors.google.failures import enum_name
from audiencesync.connectors.google.identity import IDENTITY
from google.ads import datamanager_v1 as dm
from google.ads.googleads.v24.common.types import consent as ads_consent_types
from google.ads.googleads.v24.common.types import offline_user_data as oud
from google.ads.googleads.v24.common.types import user_lists as ads_user_lists
from google.ads.googleads.v24.enums.types import consent_status as ads_consent_status
from google.ads.googleads.v24.enums.types import customer_match_upload_key_type as upload_key
from google.ads.googleads.v24.enums.types import offline_user_data_job_type as job_type
from google.ads.googleads.v24.enums.types import user_list_crm_data_source_type as crm_source
from google.ads.googleads.v24.resources.types import offline_user_data_job as job_resource
from google.ads.googleads.v24.resources.types import user_list as ads_user_list
from google.ads.googleads.v24.services.types import offline_user_data_job_service as job_service
from google.ads.googleads.v24.services.types import user_list_service as list_service

API_VERSION = "v24"
"""The version whose generated types the pure builders below use. The Ads backend sends the configured
``api_version`` and carries these messages over by their wire bytes (google_ads._AdsApi.convert)."""
MAX_BATCH = 10_000
"""Data Manager's hard limit per request (developers.google.com/data-manager/api/devguides/limits;
ErrorReason TOO_MANY_AUDIENCE_MEMBERS), and the Ads AddOperations size Google recommends (Google Ads
Customer Match upload guide; page not pinned: an assumption, docs/setup-google.md)."""
MAX_IDENTIFIERS = 20
"""At most 20 UserIdentifiers per person on Ads (same guide, an assumption); Data Manager takes 10
(ErrorReason TOO_MANY_USER_IDENTIFIERS, reference/rest/v1/ErrorReason). We send at most 3."""
IDENTIFIER_KINDS: frozenset[str] = IDENTITY.kinds
HASHED_KINDS = ("email", "phone", "first_name", "last_name")
ADDRESS_KINDS = ("first_name", "last_name", "country", "zip")

CONSENT_DENIED_REASON = "ads consent denied"
NO_IDENTIFIER_REASON = "no usable identifier"
# OAuth scopes: Data Manager get-started guide (developers.google.com/data-manager/api/get-started);
# google-ads client (google/ads/googleads/oauth2.py, _SERVICE_ACCOUNT_SCOPES).
DM_SCOPE = "https://www.googleapis.com/auth/datamanager"
ADS_SCOPE = "https://www.googleapis.com/auth/adwords"

# Hex-encoded SHA-256, lowercase: Data Manager formatting guide
# (developers.google.com/data-manager/api/devguides/concepts/formatting; encoding HEX).
_HEX64 = re.compile(r"[0-9a-f]{64}")
_JOB_NAME = re.compile(r"customers/\d+/offlineUserDataJobs/\d+")


# --- consent ----------------------------------------------------------------------------------------


@dataclass
class ConsentSplit:
    """An add batch split by consent: one Ads job per non-empty group, and the members never sent."""

    granted: list[Change] = field(default_factory=list)
    unknown: list[Change] = field(default_factory=list)
    denied: list[Change] = field(default_factory=list)

    def groups(self) -> list[tuple[bool | None, list[Change]]]:
        """(consent, members) for each group that is sent, granted first."""
        return [(c, g) for c, g in ((True, self.granted), (None, self.unknown)) if g]


def split_by_consent(batch: Sequence[Change]) -> ConsentSplit:
    """Group an add batch by ads consent. Consent False is never uploaded on the Ads path: a job with
    DENIED consent is an error, and a member who denied must not be targeted anyway."""
    split = ConsentSplit()
    for change in batch:
        if change.consent is True:
            split.granted.append(change)
        elif change.consent is False:
            split.denied.append(change)
        else:
            split.unknown.append(change)
    return split


# --- identifiers ------------------------------------------------------------------------------------


def invalid_reason(change: Change) -> str | None:
    """Why ``change`` cannot be sent at all, checked before any request (Data Manager fails whole
    requests, so one bad member must not reach it). None when it can be sent."""
    ids = change.identifiers
    for kind in HASHED_KINDS:
        value = ids.get(kind)
        if value and _HEX64.fullmatch(value) is None:
            return f"{kind} is not a lowercase SHA-256 hex digest"
    if not (ids.get("email") or ids.get("phone") or has_address(change)):
        return NO_IDENTIFIER_REASON
    return None


def screen(batch: Sequence[Change]) -> tuple[list[Change], dict[bytes, str]]:
    """``batch`` split into the members that can be sent and those that cannot (with the reason)."""
    if _all_sendable(batch):
        return list(batch), {}
    sendable: list[Change] = []
    refused: dict[bytes, str] = {}
    for change in batch:
        reason = invalid_reason(change)
        if reason is None:
            sendable.append(change)
        else:
            refused[change.member_key] = reason
    return sendable, refused


_HEX_DIGITS = b"0123456789abcdef"


def _all_sendable(batch: Sequence[Change]) -> bool:
    """True when ``invalid_reason`` is None for every member, checked column by column: an email or a
    phone for each member, and every hashed value 64 characters of lowercase hex (the lengths with
    one ``map``, the characters with one ``translate`` over all values joined). False says only that
    some member needs the per-member check."""
    all_ids = [change.identifiers for change in batch]
    columns = [[ids.get(kind) for ids in all_ids] for kind in HASHED_KINDS]
    emails, phones = columns[0], columns[1]
    if not all(emails) and not all(email or phone for email, phone in zip(emails, phones, strict=True)):
        return False
    hashed: list[str] = list(filter(None, itertools.chain.from_iterable(columns)))
    if not hashed:
        return True
    return set(map(len, hashed)) == {64} and not "".join(hashed).encode().translate(None, _HEX_DIGITS)


def has_address(change: Change) -> bool:
    """Address info goes only when first name, last name, country and postcode are all present."""
    return all(change.identifiers.get(k) for k in ADDRESS_KINDS)


# --- Data Manager requests --------------------------------------------------------------------------


def dm_account(customer_id: str) -> dm.ProductAccount:
    return dm.ProductAccount(account_type=dm.ProductAccount.AccountType.GOOGLE_ADS, account_id=customer_id)


def dm_destination(customer_id: str, login_customer_id: str | None, list_id: str) -> dm.Destination:
    """Operating account, optional login (manager) account, and the user list as product destination."""
    destination = dm.Destination(operating_account=dm_account(customer_id), product_destination_id=list_id)
    if login_customer_id:
        destination.login_account = dm_account(login_customer_id)
    return destination


# Raw protobuf classes of the member-carrying requests. A batch is built on these and the request
# wrapped once: proto-plus would add a wrapper and a marshal per message (benchmarks/push.py measures
# the push). The messages are those proto-plus would build (the golden tests and the tests'
# member-by-member reference builders pin them).
_DM_INGEST_PB: Any = dm.IngestAudienceMembersRequest.pb()
_DM_REMOVE_PB: Any = dm.RemoveAudienceMembersRequest.pb()
_DM_ADDRESS_PB: Any = dm.AddressInfo.pb()
_DM_GRANTED = int(dm.ConsentStatus.CONSENT_GRANTED)
_DM_DENIED = int(dm.ConsentStatus.CONSENT_DENIED)
_DM_HEX = int(dm.Encoding.HEX)
_DM_TERMS_ACCEPTED = int(dm.TermsOfServiceStatus.ACCEPTED)


@dataclass(frozen=True)
class _IdentifierFields:
    """What one backend's raw ``UserIdentifier`` calls the identifiers both take."""

    email: str
    phone: str
    address: str
    address_pb: Any
    address_parts: tuple[str, str, str, str]
    """The address message's fields for ``ADDRESS_KINDS``, in that order."""


# datamanager_v1 types/user_data.py (UserIdentifier, AddressInfo) and googleads v24
# common/types/offline_user_data.py (UserIdentifier, OfflineUserAddressInfo).
_DM_FIELDS = _IdentifierFields(
    "email_address", "phone_number", "address", _DM_ADDRESS_PB,
    ("given_name", "family_name", "region_code", "postal_code"),
)  # fmt: skip
_ADS_FIELDS = _IdentifierFields(
    "hashed_email", "hashed_phone_number", "address_info", oud.OfflineUserAddressInfo.pb(),
    ("hashed_first_name", "hashed_last_name", "country_code", "postal_code"),
)  # fmt: skip


def _add_identifiers(user_data: Any, ids: Mapping[str, str], fields: _IdentifierFields) -> None:
    """One raw ``UserIdentifier`` per identifier of one person in ``user_data``: email, phone, and the
    address only when all four parts are there. ``user_data`` is sent even when it carries none."""
    identifiers = user_data.user_identifiers
    email = ids.get("email")
    if email:
        identifiers.add(**{fields.email: email})
    phone = ids.get("phone")
    if phone:
        identifiers.add(**{fields.phone: phone})
    parts = [ids.get(kind) for kind in ADDRESS_KINDS]
    if all(parts):
        identifiers.add(
            **{fields.address: fields.address_pb(**dict(zip(fields.address_parts, parts, strict=True)))}
        )
    elif not identifiers:
        user_data.SetInParent()


def _dm_fill(members: Any, batch: Sequence[Change], *, with_consent: bool) -> None:
    """Append one raw ``AudienceMember`` per change to the repeated field ``members``: its user data
    and, with ``with_consent``, both consent signals when the member's consent is known."""
    add = members.add
    for change in batch:
        member = add()
        _add_identifiers(member.user_data, change.identifiers, _DM_FIELDS)
        if with_consent and change.consent is not None:
            status = _DM_GRANTED if change.consent else _DM_DENIED
            consent = member.consent
            consent.ad_user_data = status
            consent.ad_personalization = status


def _dm_members_request(
    request_pb: Any, destination: dm.Destination, batch: Sequence[Change], *, with_consent: bool
) -> Any:
    request = request_pb(destinations=[dm.Destination.pb(destination)], encoding=_DM_HEX)
    _dm_fill(request.audience_members, batch, with_consent=with_consent)
    return request


def dm_ingest_request(
    destination: dm.Destination, batch: Sequence[Change]
) -> dm.IngestAudienceMembersRequest:
    """Consent per member (both signals from the source's one consent column); none when unknown.

    Terms of service ACCEPTED on every ingest: Data Manager requires it for UserData (proto
    google/ads/datamanager_v1/types/terms_of_service.py; Google's sample
    samples/audiences/ingest_audience_members.py sets it on every call). Callers build an ingest only
    when the destination declared accept_customer_match_terms (the advertiser's attestation)."""
    raw = _dm_members_request(_DM_INGEST_PB, destination, batch, with_consent=True)
    raw.terms_of_service.customer_match_terms_of_service_status = _DM_TERMS_ACCEPTED
    request: dm.IngestAudienceMembersRequest = dm.IngestAudienceMembersRequest.wrap(raw)
    return request


def dm_remove_request(
    destination: dm.Destination, batch: Sequence[Change]
) -> dm.RemoveAudienceMembersRequest:
    """Removes carry no consent."""
    request: dm.RemoveAudienceMembersRequest = dm.RemoveAudienceMembersRequest.wrap(
        _dm_members_request(_DM_REMOVE_PB, destination, batch, with_consent=False)
    )
    return request


def dm_parent(customer_id: str) -> str:
    return f"accountTypes/GOOGLE_ADS/accounts/{customer_id}"


def dm_list_name(customer_id: str, list_id: str) -> str:
    return f"{dm_parent(customer_id)}/userLists/{list_id}"


def dm_user_list(name: str, description: str, life_span_days: int) -> dm.UserList:
    """A Customer Match (contact id) list whose members stay ``life_span_days`` after their upload."""
    return dm.UserList(
        display_name=name,
        description=description,
        membership_status=dm.UserList.MembershipStatus.OPEN,
        membership_duration={"seconds": life_span_days * 86_400},
        ingested_user_list_info=dm.IngestedUserListInfo(
            upload_key_types=[dm.IngestedUserListInfo.UploadKeyType.CONTACT_ID],
            contact_id_info=dm.ContactIdInfo(data_source_type=dm.DataSourceType.DATA_SOURCE_TYPE_FIRST_PARTY),
        ),
    )


def dm_name_filter(name: str) -> str:
    """AIP-160 filter on the display name (quotes and backslashes escaped)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'display_name = "{escaped}"'


def dm_is_contact_list(user_list: dm.UserList) -> bool:
    keys = list(user_list.ingested_user_list_info.upload_key_types)
    return not keys or dm.IngestedUserListInfo.UploadKeyType.CONTACT_ID in keys


def dm_handle_status(response: dm.RetrieveRequestStatusResponse) -> HandleStatus:
    """SUCCESS and PARTIAL_SUCCESS confirm (errors counted), FAILED fails, anything else is pending. A
    confirmed ingest names its match-rate range, and says so when every member was refused: Google's
    SUCCESS alone tells neither."""
    statuses = list(response.request_status_per_destination)
    if not statuses:
        return HandleStatus("pending", detail="no status yet")
    rs = dm.RequestStatusPerDestination.RequestStatus
    states = [s.request_status for s in statuses]
    errors = sum(int(c.record_count) for s in statuses for c in s.error_info.error_counts)
    reasons = ", ".join(sorted({enum_name(c.reason) for s in statuses for c in s.error_info.error_counts}))
    if any(s == rs.FAILED for s in states):
        return HandleStatus("failed", rejected_count=errors, detail=f"FAILED {reasons}".strip())
    if not all(s in (rs.SUCCESS, rs.PARTIAL_SUCCESS) for s in states):
        return HandleStatus("pending", detail="PROCESSING")
    parts = ["PARTIAL_SUCCESS" if any(s == rs.PARTIAL_SUCCESS for s in states) else "SUCCESS"]
    parts[0] += _dm_match_text(statuses)
    records = sum(_dm_record_count(s) for s in statuses)
    if records and errors >= records:
        parts.append(f"all {records} members refused")
    if reasons:
        parts.append(reasons)
    return HandleStatus("confirmed", rejected_count=errors, detail="; ".join(parts))


def _dm_record_count(status: dm.RequestStatusPerDestination) -> int:
    if "audience_members_ingestion_status" in status:
        return int(status.audience_members_ingestion_status.user_data_ingestion_status.record_count)
    return int(status.audience_members_removal_status.user_data_removal_status.record_count)


def _dm_match_text(statuses: Sequence[dm.RequestStatusPerDestination]) -> str:
    """`` match rate <lowest bucket>`` of an ingest, with a warning under 20 %; empty for removes and
    when Google gives no bucket (UNKNOWN, NOT_ELIGIBLE)."""
    known = [
        s.audience_members_ingestion_status.user_data_ingestion_status.upload_match_rate_range
        for s in statuses
        if "audience_members_ingestion_status" in s
    ]
    known = [r for r in known if r > dm.MatchRateRange.MATCH_RATE_RANGE_NOT_ELIGIBLE]
    if not known:
        return ""
    lowest = min(known)
    text = f" match rate {enum_name(lowest)}"
    if lowest == dm.MatchRateRange.MATCH_RATE_RANGE_LESS_THAN_20:
        text += " (few or none of the uploaded people matched)"
    return text


# --- Google Ads requests ----------------------------------------------------------------------------


def ads_list_resource(customer_id: str, list_id: str) -> str:
    return f"customers/{customer_id}/userLists/{list_id}"


def is_job_handle(handle: str) -> bool:
    """True for an Ads job resource name; a Data Manager handle is a request id."""
    return _JOB_NAME.fullmatch(handle) is not None


def ads_user_list_operation(
    name: str, description: str, life_span_days: int
) -> list_service.UserListOperation:
    """Create a CRM-based (CONTACT_INFO, first party) user list."""
    return list_service.UserListOperation(
        create=ads_user_list.UserList(
            name=name,
            description=description,
            membership_life_span=life_span_days,
            crm_based_user_list=ads_user_lists.CrmBasedUserListInfo(
                upload_key_type=upload_key.CustomerMatchUploadKeyTypeEnum.CustomerMatchUploadKeyType.CONTACT_INFO,
                data_source_type=crm_source.UserListCrmDataSourceTypeEnum.UserListCrmDataSourceType.FIRST_PARTY,
            ),
        )
    )


def ads_consent(consent: bool | None) -> ads_consent_types.Consent | None:
    """Job-level consent: granted sets both signals; unknown sends none. DENIED is never sent."""
    if consent is None:
        return None
    if consent is False:
        raise ValueError("DENIED consent is never sent to the Google Ads API")
    granted = ads_consent_status.ConsentStatusEnum.ConsentStatus.GRANTED
    return ads_consent_types.Consent(ad_user_data=granted, ad_personalization=granted)


def ads_job(user_list_resource: str, consent: bool | None) -> job_resource.OfflineUserDataJob:
    """A Customer Match job for one list and one consent state."""
    metadata = oud.CustomerMatchUserListMetadata(user_list=user_list_resource)
    job_consent = ads_consent(consent)
    if job_consent is not None:
        metadata.consent = job_consent
    return job_resource.OfflineUserDataJob(
        type_=job_type.OfflineUserDataJobTypeEnum.OfflineUserDataJobType.CUSTOMER_MATCH_USER_LIST,
        customer_match_user_list_metadata=metadata,
    )


_ADS_OPERATIONS_PB: Any = job_service.AddOfflineUserDataJobOperationsRequest.pb()


def ads_operations_request(
    job_name: str, batch: Sequence[Change], *, remove: bool
) -> job_service.AddOfflineUserDataJobOperationsRequest:
    """All creates or all removes (never mixed in one job), with partial failure on. Built on the raw
    protobuf in bulk and wrapped once; each operation is one UserData per person, one
    UserIdentifier per identifier (at most 3 a person, well under MAX_IDENTIFIERS)."""
    request = _ADS_OPERATIONS_PB(resource_name=job_name, enable_partial_failure=True)
    add = request.operations.add
    for change in batch:
        _add_identifiers(add().remove if remove else add().create, change.identifiers, _ADS_FIELDS)
    wrapped: job_service.AddOfflineUserDataJobOperationsRequest = (
        job_service.AddOfflineUserDataJobOperationsRequest.wrap(request)
    )
    return wrapped


def gaql_string(value: str) -> str:
    """A GAQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def gaql_user_list_by_name(name: str) -> str:
    return (
        "SELECT user_list.id, user_list.name, user_list.crm_based_user_list.upload_key_type, "
        f"user_list.membership_life_span FROM user_list WHERE user_list.name = {gaql_string(name)}"
    )


def gaql_user_list_by_id(list_id: str) -> str:
    digits = re.sub(r"\D", "", list_id)
    return (
        "SELECT user_list.id, user_list.name, user_list.crm_based_user_list.upload_key_type, "
        "user_list.membership_status, user_list.size_for_display, user_list.size_for_search, "
        "user_list.match_rate_percentage, user_list.eligible_for_search, user_list.eligible_for_display "
        f"FROM user_list WHERE user_list.id = {digits}"
    )


def gaql_job(job_name: str, *, match_rate: bool = False) -> str:
    """The job's status and failure reason; ``match_rate`` adds ``operation_metadata.match_rate_range``,
    the only sign Google gives of how many uploaded people a successful job matched."""
    extra = ", offline_user_data_job.operation_metadata.match_rate_range" if match_rate else ""
    return (
        "SELECT offline_user_data_job.resource_name, offline_user_data_job.status, "
        f"offline_user_data_job.failure_reason{extra} "
        f"FROM offline_user_data_job WHERE offline_user_data_job.resource_name = {gaql_string(job_name)}"
    )


def ads_job_status(
    job: job_resource.OfflineUserDataJob | None, *, refused: int = 0, sent: int = 0
) -> HandleStatus:
    """SUCCESS confirms, FAILED fails (detail: failure_reason), PENDING/RUNNING stay pending. SUCCESS
    says nothing about how many people matched, so the match-rate range goes into the detail, and so
    do the ``refused`` of ``sent`` operations partial failure took out at upload, when known (only the
    connector that uploaded the job knows). A job the API no longer knows fails, so its members are
    sent again (adds and removes are idempotent)."""
    if job is None:
        return HandleStatus("failed", detail="job not found")
    status = enum_name(job.status)
    refusals = f"; {refused} of {sent} operations refused at upload" if refused else ""
    if status == "SUCCESS":
        match = enum_name(job.operation_metadata.match_rate_range)
        detail = "SUCCESS" if match in ("UNSPECIFIED", "UNKNOWN") else f"SUCCESS match rate {match}"
        if match == "MATCH_RANGE_LESS_THAN_20":
            detail += " (few or none of the uploaded people matched)"
        return HandleStatus("confirmed", rejected_count=refused, detail=detail + refusals)
    if status == "FAILED":
        return HandleStatus(
            "failed", rejected_count=refused, detail=f"FAILED {enum_name(job.failure_reason)}{refusals}"
        )
    return HandleStatus("pending", rejected_count=refused, detail=status + refusals)


def ads_unrun_job_status(sent: int) -> HandleStatus:
    """A job whose every operation partial failure refused is never run (Google would run it and
    answer SUCCESS for an upload of nothing): it reads as failed, with all ``sent`` refused."""
    return HandleStatus(
        "failed", rejected_count=sent, detail=f"not run: all {sent} operations refused at upload"
    )


def job_number(job_name: str) -> int:
    """The numeric id at the end of a job resource name (ids grow, so newer jobs have larger ones)."""
    return int(job_name.rsplit("/", 1)[-1])


def list_state(membership: str, last: HandleStatus | None, size: int, what: str) -> str:
    """The read-back state line: the list's membership status and the last ``what`` (job or request).
    A success that left the list empty is said outright: Google answers SUCCESS even when nothing
    uploaded matched anyone (or every member was refused), and the size is the only sign of it."""
    if last is None:
        return membership
    text = f"{membership}; last {what} {last.detail or last.state}"
    if last.state == "confirmed" and size == 0:
        text += "; the list is empty after a successful upload: nothing uploaded matched or was kept"
    return text
