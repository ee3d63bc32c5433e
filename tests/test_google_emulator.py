"""The Google emulator, driven through Google's own clients over a real socket: the google-ads v24
client (through ``GoogleAdsClient.get_service``, so its interceptors turn failures into
``GoogleAdsException``) and the ``google.ads.datamanager_v1`` gRPC clients."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from audiencesync.connectors.google.emulator import (
    FAILURE_METADATA_KEY,
    GoogleEmulator,
    start_emulator,
)
from google.ads import datamanager_v1 as dm
from google.ads.datamanager_v1.services.ingestion_service.transports.grpc import IngestionServiceGrpcTransport
from google.ads.datamanager_v1.services.user_list_service.transports.grpc import UserListServiceGrpcTransport
from google.ads.googleads.client import GoogleAdsClient
from google.ads.googleads.errors import GoogleAdsException
from google.ads.googleads.v24.errors.types.errors import GoogleAdsFailure
from google.api_core import exceptions as core_exceptions
from google.api_core import grpc_helpers
from google.auth.credentials import AnonymousCredentials

CID = "1234567890"
OTHER_CID = "5555555555"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


EMAIL_A, EMAIL_B, EMAIL_C = sha("a@example.com"), sha("b@example.com"), sha("c@example.com")
PHONE_A = sha("+18005550100")


@pytest.fixture
def emu(google_emulator: GoogleEmulator) -> GoogleEmulator:
    """The shared fixture (tests/conftest.py), under the short name these tests use."""
    return google_emulator


@pytest.fixture
def channel(emu: GoogleEmulator) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(emu.endpoint)
    yield ch
    ch.close()


@pytest.fixture
def ads(emu: GoogleEmulator, monkeypatch: pytest.MonkeyPatch) -> GoogleAdsClient:
    """A GoogleAdsClient whose channels are plaintext: its interceptors (metadata, exceptions) stay."""

    def insecure(target: str, **kwargs: Any) -> grpc.Channel:
        return grpc.insecure_channel(target, options=kwargs.get("options"))

    monkeypatch.setattr(grpc_helpers, "create_channel", insecure)
    return GoogleAdsClient(
        credentials=AnonymousCredentials(),
        developer_token="dev-token",
        endpoint=emu.endpoint,
        login_customer_id="9876543210",
        use_proto_plus=True,
        version="v24",
    )


@pytest.fixture
def ingestion(channel: grpc.Channel) -> dm.IngestionServiceClient:
    return dm.IngestionServiceClient(transport=IngestionServiceGrpcTransport(channel=channel))


@pytest.fixture
def dm_lists(channel: grpc.Channel) -> dm.UserListServiceClient:
    return dm.UserListServiceClient(transport=UserListServiceGrpcTransport(channel=channel))


# --- helpers ----------------------------------------------------------------------------------------


def create_ads_list(ads: GoogleAdsClient, name: str = "VIPs", life_span: int = 540) -> str:
    service = ads.get_service("UserListService")
    op = ads.get_type("UserListOperation")
    op.create.name = name
    op.create.membership_life_span = life_span
    op.create.crm_based_user_list.upload_key_type = ads.enums.CustomerMatchUploadKeyTypeEnum.CONTACT_INFO
    response = service.mutate_user_lists(customer_id=CID, operations=[op])
    return str(response.results[0].resource_name)


def create_job(ads: GoogleAdsClient, user_list: str, consent: str = "GRANTED") -> str:
    service = ads.get_service("OfflineUserDataJobService")
    job = ads.get_type("OfflineUserDataJob")
    job.type_ = ads.enums.OfflineUserDataJobTypeEnum.CUSTOMER_MATCH_USER_LIST
    job.customer_match_user_list_metadata.user_list = user_list
    status = getattr(ads.enums.ConsentStatusEnum, consent)
    job.customer_match_user_list_metadata.consent.ad_user_data = status
    job.customer_match_user_list_metadata.consent.ad_personalization = status
    return str(service.create_offline_user_data_job(customer_id=CID, job=job).resource_name)


def user_data(ads: GoogleAdsClient, *emails: str, address: tuple[str, str, str, str] | None = None) -> Any:
    data = ads.get_type("UserData")
    for email in emails:
        ident = ads.get_type("UserIdentifier")
        ident.hashed_email = email
        data.user_identifiers.append(ident)
    if address is not None:
        ident = ads.get_type("UserIdentifier")
        first, last, country, postal = address
        ident.address_info.hashed_first_name = first
        ident.address_info.hashed_last_name = last
        ident.address_info.country_code = country
        ident.address_info.postal_code = postal
        data.user_identifiers.append(ident)
    return data


def op(ads: GoogleAdsClient, kind: str, data: Any) -> Any:
    operation = ads.get_type("OfflineUserDataJobOperation")
    getattr(operation, kind)._pb.CopyFrom(type(data).pb(data))
    return operation


def add_ops(ads: GoogleAdsClient, job: str, operations: list[Any], partial: bool = False) -> Any:
    service = ads.get_service("OfflineUserDataJobService")
    request = ads.get_type("AddOfflineUserDataJobOperationsRequest")
    request.resource_name = job
    request.operations.extend(operations)
    request.enable_partial_failure = partial
    return service.add_offline_user_data_job_operations(request=request)


def run_job(ads: GoogleAdsClient, job: str) -> None:
    ads.get_service("OfflineUserDataJobService").run_offline_user_data_job(resource_name=job)


def job_status(ads: GoogleAdsClient, job: str) -> str:
    query = (
        "SELECT offline_user_data_job.resource_name, offline_user_data_job.status, "
        "offline_user_data_job.failure_reason FROM offline_user_data_job "
        f"WHERE offline_user_data_job.resource_name = '{job}'"
    )
    rows = list(ads.get_service("GoogleAdsService").search(customer_id=CID, query=query))
    assert len(rows) == 1
    return str(rows[0].offline_user_data_job.status.name)


def error_codes(exc: GoogleAdsException) -> list[tuple[str, str]]:
    out = []
    for error in exc.failure.errors:
        kind = type(error.error_code).pb(error.error_code).WhichOneof("error_code")
        out.append((kind, getattr(error.error_code, kind).name))
    return out


def failure_indexes(response: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    for detail in response.partial_failure_error.details:
        failure = GoogleAdsFailure.deserialize(detail.value)
        for error in failure.errors:
            kind = type(error.error_code).pb(error.error_code).WhichOneof("error_code")
            out[error.location.field_path_elements[0].index] = getattr(error.error_code, kind).name
    return out


def list_id(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[1]


def destination(user_list_id: str, customer_id: str = CID) -> dm.Destination:
    return dm.Destination(
        operating_account=dm.ProductAccount(
            account_id=customer_id, account_type=dm.ProductAccount.AccountType.GOOGLE_ADS
        ),
        product_destination_id=user_list_id,
    )


def member(*emails: str, phone: str | None = None, consent: dm.Consent | None = None) -> dm.AudienceMember:
    identifiers = [dm.UserIdentifier(email_address=e) for e in emails]
    if phone is not None:
        identifiers.append(dm.UserIdentifier(phone_number=phone))
    result = dm.AudienceMember(user_data=dm.UserData(user_identifiers=identifiers))
    if consent is not None:
        result.consent = consent
    return result


GRANTED = dm.Consent(
    ad_user_data=dm.ConsentStatus.CONSENT_GRANTED, ad_personalization=dm.ConsentStatus.CONSENT_GRANTED
)
DENIED = dm.Consent(
    ad_user_data=dm.ConsentStatus.CONSENT_DENIED, ad_personalization=dm.ConsentStatus.CONSENT_DENIED
)


def create_dm_list(
    dm_lists: dm.UserListServiceClient, name: str = "Lapsed", timeout: float | None = None
) -> dm.UserList:
    return dm_lists.create_user_list(
        parent=f"accountTypes/GOOGLE_ADS/accounts/{CID}",
        user_list=dm.UserList(
            display_name=name,
            ingested_user_list_info=dm.IngestedUserListInfo(
                upload_key_types=[dm.IngestedUserListInfo.UploadKeyType.CONTACT_ID]
            ),
        ),
        timeout=timeout,
    )


# Google's proto: "must be accepted when ingesting UserData" (datamanager_v1/types/terms_of_service.py).
TERMS_ACCEPTED = dm.TermsOfService(customer_match_terms_of_service_status=dm.TermsOfServiceStatus.ACCEPTED)


def ingest(ingestion: dm.IngestionServiceClient, list_id_: str, members: list[dm.AudienceMember]) -> str:
    response = ingestion.ingest_audience_members(
        request=dm.IngestAudienceMembersRequest(
            destinations=[destination(list_id_)],
            audience_members=members,
            consent=GRANTED,
            terms_of_service=TERMS_ACCEPTED,
        )
    )
    return str(response.request_id)


def request_status(ingestion: dm.IngestionServiceClient, request_id: str) -> Any:
    response = ingestion.retrieve_request_status(
        request=dm.RetrieveRequestStatusRequest(request_id=request_id)
    )
    assert len(response.request_status_per_destination) == 1
    return response.request_status_per_destination[0]


def admin(emu: GoogleEmulator, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{emu.admin_url}{path}", data=data, method="GET" if body is None else "POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


# --- lists ------------------------------------------------------------------------------------------


def test_a_list_created_through_either_api_is_visible_through_both(
    emu: GoogleEmulator, ads: GoogleAdsClient, dm_lists: dm.UserListServiceClient
) -> None:
    ads_name = create_ads_list(ads, "VIPs", life_span=365)
    assert ads_name.startswith(f"customers/{CID}/userLists/")
    dm_name = f"accountTypes/GOOGLE_ADS/accounts/{CID}/userLists/{list_id(ads_name)}"
    read = dm_lists.get_user_list(name=dm_name)
    assert (read.display_name, read.id, read.membership_duration.days) == (
        "VIPs",
        int(list_id(ads_name)),
        365,
    )
    assert read.size_info.search_network_members_count == 0

    made = create_dm_list(dm_lists, "Lapsed")
    assert made.name == f"accountTypes/GOOGLE_ADS/accounts/{CID}/userLists/{made.id}"
    query = (
        "SELECT user_list.id, user_list.name, user_list.size_for_search, user_list.size_for_display, "
        "user_list.match_rate_percentage, user_list.membership_life_span FROM user_list "
        "WHERE user_list.name = 'Lapsed'"
    )
    rows = list(ads.get_service("GoogleAdsService").search(customer_id=CID, query=query))
    assert [(r.user_list.id, r.user_list.name, r.user_list.membership_life_span) for r in rows] == [
        (made.id, "Lapsed", 540)
    ]
    # Only the selected fields come back, as from the real API.
    assert rows[0].user_list.resource_name == ""

    by_name = dm_lists.list_user_lists(
        request={"parent": f"accountTypes/GOOGLE_ADS/accounts/{CID}", "filter": 'display_name = "VIPs"'}
    )
    assert [x.id for x in by_name] == [int(list_id(ads_name))]
    every = dm_lists.list_user_lists(
        request={"parent": f"accountTypes/GOOGLE_ADS/accounts/{CID}", "page_size": 1}
    )
    assert sorted(x.display_name for x in every) == ["Lapsed", "VIPs"]
    assert [a["name"] for a in emu.snapshot()["audiences"]] == ["VIPs", "Lapsed"]


def test_list_validation(ads: GoogleAdsClient, dm_lists: dm.UserListServiceClient) -> None:
    create_ads_list(ads, "VIPs")
    with pytest.raises(GoogleAdsException) as dup:
        create_ads_list(ads, "VIPs")
    assert error_codes(dup.value) == [("user_list_error", "NAME_ALREADY_USED")]
    assert dup.value.request_id
    with pytest.raises(GoogleAdsException) as too_long:
        create_ads_list(ads, "Long", life_span=541)
    assert error_codes(too_long.value) == [("range_error", "TOO_HIGH")]
    with pytest.raises(core_exceptions.AlreadyExists):
        create_dm_list(dm_lists, "VIPs")
    with pytest.raises(core_exceptions.NotFound):
        dm_lists.get_user_list(name=f"accountTypes/GOOGLE_ADS/accounts/{CID}/userLists/1")
    with pytest.raises(core_exceptions.InvalidArgument):
        dm_lists.create_user_list(
            parent=f"accountTypes/GOOGLE_ADS/accounts/{CID}",
            user_list=dm.UserList(display_name="x", membership_duration={"seconds": 541 * 86400}),
        )


def test_mutate_user_lists_partial_failure_and_remove(emu: GoogleEmulator, ads: GoogleAdsClient) -> None:
    create_ads_list(ads, "Taken")
    service = ads.get_service("UserListService")
    operations = []
    for name in ("Fresh", "Taken"):
        operation = ads.get_type("UserListOperation")
        operation.create.name = name
        operation.create.crm_based_user_list.upload_key_type = (
            ads.enums.CustomerMatchUploadKeyTypeEnum.CONTACT_INFO
        )
        operations.append(operation)
    response = service.mutate_user_lists(
        request={"customer_id": CID, "operations": operations, "partial_failure": True}
    )
    assert response.results[0].resource_name.startswith(f"customers/{CID}/userLists/")
    assert response.results[1].resource_name == ""
    assert failure_indexes(response) == {1: "NAME_ALREADY_USED"}
    assert sorted(a["name"] for a in emu.snapshot()["audiences"]) == ["Fresh", "Taken"]

    removal = ads.get_type("UserListOperation")
    removal.remove = response.results[0].resource_name
    service.mutate_user_lists(customer_id=CID, operations=[removal])
    assert [a["name"] for a in emu.snapshot()["audiences"]] == ["Taken"]


def test_update_user_list_through_data_manager(
    ads: GoogleAdsClient, dm_lists: dm.UserListServiceClient
) -> None:
    made = create_dm_list(dm_lists, "Old")
    updated = dm_lists.update_user_list(
        user_list=dm.UserList(
            name=made.name, display_name="New", membership_duration={"seconds": 30 * 86400}
        ),
        update_mask={"paths": ["display_name", "membership_duration"]},
    )
    assert (updated.display_name, updated.membership_duration.days) == ("New", 30)
    query = f"SELECT user_list.name, user_list.membership_life_span FROM user_list WHERE user_list.resource_name = 'customers/{CID}/userLists/{made.id}'"
    rows = list(ads.get_service("GoogleAdsService").search(customer_id=CID, query=query))
    assert [(r.user_list.name, r.user_list.membership_life_span) for r in rows] == [("New", 30)]


# --- Google Ads API jobs ----------------------------------------------------------------------------


def test_job_goes_pending_running_success_and_applies_membership_then(
    emu: GoogleEmulator, ads: GoogleAdsClient
) -> None:
    emu.faults.set({"processing_seconds": 0.6})
    user_list = create_ads_list(ads)
    job = create_job(ads, user_list)
    assert job_status(ads, job) == "PENDING"
    address = (sha("givenname"), sha("familyname"), "US", "94043")
    add_ops(
        ads,
        job,
        [
            op(ads, "create", user_data(ads, EMAIL_A)),
            op(ads, "create", user_data(ads, EMAIL_B, address=address)),
        ],
    )
    run_job(ads, job)
    assert job_status(ads, job) == "PENDING"
    assert emu.members(list_id(user_list)) == set()
    time.sleep(0.35)
    assert job_status(ads, job) == "RUNNING"
    time.sleep(0.35)
    assert job_status(ads, job) == "SUCCESS"
    assert emu.members(list_id(user_list)) == {
        frozenset({f"email:{EMAIL_A}"}),
        frozenset(
            {
                f"email:{EMAIL_B}",
                f"first_name:{sha('givenname')}",
                f"last_name:{sha('familyname')}",
                "country:US",
                "zip:94043",
            }
        ),
    }

    emu.faults.set({"processing_seconds": 0})
    removal = create_job(ads, user_list)
    add_ops(ads, removal, [op(ads, "remove", user_data(ads, EMAIL_A))])
    run_job(ads, removal)
    assert job_status(ads, removal) == "SUCCESS"
    assert emu.members(list_id(user_list)) == {
        frozenset(
            {
                f"email:{EMAIL_B}",
                f"first_name:{sha('givenname')}",
                f"last_name:{sha('familyname')}",
                "country:US",
                "zip:94043",
            }
        )
    }
    query = (
        "SELECT user_list.size_for_search, user_list.size_for_display, user_list.match_rate_percentage "
        f"FROM user_list WHERE user_list.resource_name = '{user_list}'"
    )
    row = next(iter(ads.get_service("GoogleAdsService").search(customer_id=CID, query=query)))
    assert (
        row.user_list.size_for_search,
        row.user_list.size_for_display,
        row.user_list.match_rate_percentage,
    ) == (1, 1, 70)
    state = emu.snapshot()
    assert [(j["status"], j["creates"], j["removes"]) for j in state["jobs"]] == [
        ("SUCCESS", 2, 0),
        ("SUCCESS", 0, 1),
    ]
    assert state["jobs"][0]["consent"] == {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"}


def job_match_range(ads: GoogleAdsClient, job: str) -> str:
    query = (
        "SELECT offline_user_data_job.operation_metadata.match_rate_range FROM offline_user_data_job "
        f"WHERE offline_user_data_job.resource_name = '{job}'"
    )
    (row,) = ads.get_service("GoogleAdsService").search(customer_id=CID, query=query)
    return str(row.offline_user_data_job.operation_metadata.match_rate_range.name)


def test_a_job_match_rate_range_is_the_switch_bucket_once_the_job_succeeds(
    emu: GoogleEmulator, ads: GoogleAdsClient
) -> None:
    user_list = create_ads_list(ads)
    emu.faults.set({"processing_seconds": 5})
    pending = create_job(ads, user_list)
    add_ops(ads, pending, [op(ads, "create", user_data(ads, EMAIL_A))])
    run_job(ads, pending)
    assert job_match_range(ads, pending) == "UNKNOWN"
    emu.faults.set({"processing_seconds": 0})
    for rate, bucket in ((70, "MATCH_RANGE_61_TO_70"), (5, "MATCH_RANGE_LESS_THAN_20")):
        emu.faults.set({"match_rate_percentage": rate})
        job = create_job(ads, user_list)
        add_ops(ads, job, [op(ads, "create", user_data(ads, EMAIL_B))])
        run_job(ads, job)
        assert job_match_range(ads, job) == bucket
    emu.faults.set({"match_rate_percentage": 70})
    removal = create_job(ads, user_list)
    add_ops(ads, removal, [op(ads, "remove", user_data(ads, EMAIL_B))])
    run_job(ads, removal)
    assert job_match_range(ads, removal) == "UNKNOWN"  # removes match nobody
    # Google's "SUCCESS with nothing uploaded": run with every operation refused.
    emu.faults.set({"reject_identifiers": [EMAIL_C]})
    refused = create_job(ads, user_list)
    add_ops(ads, refused, [op(ads, "create", user_data(ads, EMAIL_C))], partial=True)
    run_job(ads, refused)
    assert job_status(ads, refused) == "SUCCESS"
    assert job_match_range(ads, refused) == "MATCH_RANGE_LESS_THAN_20"


def test_remove_all_first_then_creates_replaces_the_list(emu: GoogleEmulator, ads: GoogleAdsClient) -> None:
    user_list = create_ads_list(ads)
    first = create_job(ads, user_list)
    add_ops(ads, first, [op(ads, "create", user_data(ads, EMAIL_A))])
    run_job(ads, first)
    job_status(ads, first)
    replace = create_job(ads, user_list)
    remove_all = ads.get_type("OfflineUserDataJobOperation")
    remove_all.remove_all = True
    add_ops(ads, replace, [remove_all, op(ads, "create", user_data(ads, EMAIL_B))])
    run_job(ads, replace)
    assert job_status(ads, replace) == "SUCCESS"
    assert emu.members(list_id(user_list)) == {frozenset({f"email:{EMAIL_B}"})}


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        ("bad_hash", ("offline_user_data_job_error", "INVALID_SHA256_FORMAT")),
        ("uppercase_hash", ("offline_user_data_job_error", "INVALID_SHA256_FORMAT")),
        ("too_many", ("offline_user_data_job_error", "TOO_MANY_USER_IDENTIFIERS")),
        ("consent_on_operation", ("offline_user_data_job_error", "OPERATION_LEVEL_CONSENT_PROVIDED")),
        ("mixed", ("offline_user_data_job_error", "CONFLICTING_OPERATION")),
        ("remove_all_late", ("offline_user_data_job_error", "INVALID_OPERATION_ORDER")),
        ("hashed_country", ("offline_user_data_job_error", "INVALID_COUNTRY_CODE")),
    ],
)
def test_invalid_operations_fail_the_whole_request(
    emu: GoogleEmulator, ads: GoogleAdsClient, build: str, expected: tuple[str, str]
) -> None:
    user_list = create_ads_list(ads)
    job = create_job(ads, user_list)
    good = op(ads, "create", user_data(ads, EMAIL_A))
    if build == "bad_hash":
        bad = [op(ads, "create", user_data(ads, "not-a-hash"))]
    elif build == "uppercase_hash":
        bad = [op(ads, "create", user_data(ads, EMAIL_B.upper()))]
    elif build == "too_many":
        bad = [op(ads, "create", user_data(ads, *[sha(f"{i}@x.com") for i in range(21)]))]
    elif build == "consent_on_operation":
        data = user_data(ads, EMAIL_B)
        data.consent.ad_user_data = ads.enums.ConsentStatusEnum.GRANTED
        bad = [op(ads, "create", data)]
    elif build == "mixed":
        bad = [op(ads, "remove", user_data(ads, EMAIL_B))]
    elif build == "remove_all_late":
        remove_all = ads.get_type("OfflineUserDataJobOperation")
        remove_all.remove_all = True
        bad = [remove_all]
    else:
        bad = [op(ads, "create", user_data(ads, address=(sha("a"), sha("b"), sha("US"), "94043")))]
    with pytest.raises(GoogleAdsException) as caught:
        add_ops(ads, job, [good, *bad])
    assert error_codes(caught.value) == [expected]
    assert caught.value.failure.errors[0].location.field_path_elements[0].index == 1
    assert caught.value.request_id
    assert caught.value.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing of a failed request was kept: the good operation is not in the job.
    run_job(ads, job)
    job_status(ads, job)
    assert emu.snapshot()["jobs"][0]["operations"] == 0
    assert emu.members(list_id(user_list)) == set()


def test_partial_failure_reports_the_failing_operation_indexes_and_applies_the_rest(
    emu: GoogleEmulator, ads: GoogleAdsClient
) -> None:
    emu.faults.set({"reject_identifiers": [EMAIL_C]})
    user_list = create_ads_list(ads)
    job = create_job(ads, user_list)
    response = add_ops(
        ads,
        job,
        [
            op(ads, "create", user_data(ads, EMAIL_A)),
            op(ads, "create", user_data(ads, "bad")),
            op(ads, "create", user_data(ads, EMAIL_B)),
            op(ads, "create", user_data(ads, EMAIL_C)),
        ],
        partial=True,
    )
    assert failure_indexes(response) == {1: "INVALID_SHA256_FORMAT", 3: "INVALID_SHA256_FORMAT"}
    assert response.partial_failure_error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    run_job(ads, job)
    assert job_status(ads, job) == "SUCCESS"
    assert emu.members(list_id(user_list)) == {
        frozenset({f"email:{EMAIL_A}"}),
        frozenset({f"email:{EMAIL_B}"}),
    }


def test_job_rules(emu: GoogleEmulator, ads: GoogleAdsClient) -> None:
    user_list = create_ads_list(ads)
    with pytest.raises(GoogleAdsException) as denied:
        create_job(ads, user_list, consent="DENIED")
    assert error_codes(denied.value) == [("field_error", "INVALID_VALUE")]
    with pytest.raises(GoogleAdsException) as no_list:
        create_job(ads, f"customers/{CID}/userLists/42")
    assert error_codes(no_list.value) == [("offline_user_data_job_error", "INVALID_USER_LIST_ID")]

    job = create_job(ads, user_list)
    add_ops(ads, job, [op(ads, "create", user_data(ads, EMAIL_A))])
    run_job(ads, job)
    with pytest.raises(GoogleAdsException) as started:
        add_ops(ads, job, [op(ads, "create", user_data(ads, EMAIL_B))])
    assert error_codes(started.value) == [("offline_user_data_job_error", "JOB_ALREADY_STARTED")]
    with pytest.raises(GoogleAdsException) as rerun:
        run_job(ads, job)
    assert error_codes(rerun.value) == [("offline_user_data_job_error", "JOB_ALREADY_STARTED")]


def test_parallel_add_operations_on_one_job_is_a_concurrent_modification(
    emu: GoogleEmulator, ads: GoogleAdsClient, channel: grpc.Channel
) -> None:
    from google.ads.googleads.v24.services.types.offline_user_data_job_service import (
        AddOfflineUserDataJobOperationsRequest,
    )

    user_list = create_ads_list(ads)
    job = create_job(ads, user_list)
    # Built on the raw protobuf (proto-plus is slow at this size): a big request whose validation
    # takes the server a while, and a small one sent while it does.
    big = AddOfflineUserDataJobOperationsRequest.pb()(resource_name=job)
    for i in range(60_000):
        big.operations.add().create.user_identifiers.add().hashed_email = sha(f"{i}@example.com")
    small = AddOfflineUserDataJobOperationsRequest.pb()(resource_name=job)
    small.operations.add().create.user_identifiers.add().hashed_email = EMAIL_A
    add = channel.unary_unary(
        "/google.ads.googleads.v24.services.OfflineUserDataJobService/AddOfflineUserDataJobOperations",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=None,
    )
    outcomes: dict[str, str] = {}

    def send(name: str, request: Any) -> None:
        try:
            add(request, metadata=[("developer-token", "x")], timeout=30)
            outcomes[name] = "ok"
        except grpc.RpcError as exc:
            failure = GoogleAdsFailure.deserialize(dict(exc.trailing_metadata())[FAILURE_METADATA_KEY])
            outcomes[name] = failure.errors[0].error_code.database_error.name

    first = threading.Thread(target=send, args=("big", big))
    first.start()
    deadline = time.monotonic() + 10
    while emu.calls["AddOfflineUserDataJobOperations"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    send("small", small)
    first.join()
    assert outcomes == {"big": "ok", "small": "CONCURRENT_MODIFICATION"}
    assert emu.snapshot()["jobs"][0]["creates"] == 60_000


def test_at_most_100000_operations_per_request(ads: GoogleAdsClient) -> None:
    job = create_job(ads, create_ads_list(ads))
    operation = op(ads, "create", user_data(ads, EMAIL_A))
    with pytest.raises(GoogleAdsException) as caught:
        add_ops(ads, job, [operation] * 100_001)
    assert error_codes(caught.value) == [("request_error", "TOO_MANY_MUTATE_OPERATIONS")]


def test_failure_metadata_decodes_on_a_bare_channel(emu: GoogleEmulator, channel: grpc.Channel) -> None:
    from google.ads.googleads.v24.services.services.offline_user_data_job_service import (
        OfflineUserDataJobServiceClient,
    )
    from google.ads.googleads.v24.services.services.offline_user_data_job_service.transports.grpc import (
        OfflineUserDataJobServiceGrpcTransport,
    )

    client = OfflineUserDataJobServiceClient(
        transport=OfflineUserDataJobServiceGrpcTransport(channel=channel)
    )
    with pytest.raises(core_exceptions.GoogleAPICallError) as caught:
        client.run_offline_user_data_job(
            resource_name=f"customers/{CID}/offlineUserDataJobs/1", metadata=[("developer-token", "x")]
        )
    rpc_error = caught.value.errors[0]
    trailing = dict(rpc_error.trailing_metadata())
    failure = GoogleAdsFailure.deserialize(trailing[FAILURE_METADATA_KEY])
    assert failure.errors[0].error_code.mutate_error.name == "RESOURCE_NOT_FOUND"
    assert failure.request_id == trailing["request-id"]

    # No developer token at all: a request error, as Google answers.
    with pytest.raises(core_exceptions.GoogleAPICallError) as missing:
        client.run_offline_user_data_job(resource_name=f"customers/{CID}/offlineUserDataJobs/1")
    failure = GoogleAdsFailure.deserialize(
        dict(missing.value.errors[0].trailing_metadata())[FAILURE_METADATA_KEY]
    )
    assert failure.errors[0].error_code.request_error.name == "DEVELOPER_TOKEN_PARAMETER_MISSING"


def test_gaql_subset_and_unknown_queries(emu: GoogleEmulator, ads: GoogleAdsClient) -> None:
    first = create_ads_list(ads, "A'list")
    create_ads_list(ads, "Other")
    service = ads.get_service("GoogleAdsService")
    escaped = "SELECT user_list.id FROM user_list WHERE user_list.name = 'A\\'list'"
    assert [r.user_list.id for r in service.search(customer_id=CID, query=escaped)] == [int(list_id(first))]
    ordered = "SELECT user_list.name FROM user_list WHERE user_list.name LIKE '%t%' ORDER BY user_list.name DESC LIMIT 5"
    assert [r.user_list.name for r in service.search(customer_id=CID, query=ordered)] == ["Other", "A'list"]
    listed = f"SELECT user_list.name FROM user_list WHERE user_list.id IN ({list_id(first)}, 1)"
    assert [r.user_list.name for r in service.search(customer_id=CID, query=listed)] == ["A'list"]
    assert list(service.search(customer_id=OTHER_CID, query=listed)) == []
    batches = list(service.search_stream(customer_id=CID, query="SELECT user_list.name FROM user_list"))
    assert [r.user_list.name for b in batches for r in b.results] == ["A'list", "Other"]
    for bad in ("SELECT campaign.id FROM campaign", "SELECT user_list.nope FROM user_list", "DROP TABLE x"):
        with pytest.raises(GoogleAdsException) as caught:
            list(service.search(customer_id=CID, query=bad))
        assert error_codes(caught.value)[0][0] == "query_error"


def test_run_returns_an_operation_that_completes(emu: GoogleEmulator, ads: GoogleAdsClient) -> None:
    user_list = create_ads_list(ads)
    job = create_job(ads, user_list)
    add_ops(ads, job, [op(ads, "create", user_data(ads, EMAIL_A))])
    operation = ads.get_service("OfflineUserDataJobService").run_offline_user_data_job(resource_name=job)
    operation.result(timeout=10)
    assert operation.done()
    assert emu.members(list_id(user_list)) == {frozenset({f"email:{EMAIL_A}"})}


# --- Google Ads API faults --------------------------------------------------------------------------


def test_not_allowlisted_refuses_ads_customer_match_only(
    emu: GoogleEmulator, ads: GoogleAdsClient, dm_lists: dm.UserListServiceClient
) -> None:
    user_list = create_ads_list(ads)
    emu.faults.set({"not_allowlisted": True})
    for attempt in (lambda: create_ads_list(ads, "B"), lambda: create_job(ads, user_list)):
        with pytest.raises(GoogleAdsException) as caught:
            attempt()
        assert error_codes(caught.value) == [
            ("not_allowlisted_error", "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE")
        ]
        assert caught.value.error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert job_status_rows(ads) == []  # search still answers
    assert create_dm_list(dm_lists, "Via Data Manager").display_name == "Via Data Manager"


def job_status_rows(ads: GoogleAdsClient) -> list[Any]:
    query = "SELECT offline_user_data_job.status FROM offline_user_data_job"
    return list(ads.get_service("GoogleAdsService").search(customer_id=CID, query=query))


def test_concurrent_modification_and_temporary_quota_errors(
    emu: GoogleEmulator, ads: GoogleAdsClient
) -> None:
    user_list = create_ads_list(ads)
    job = create_job(ads, user_list)
    emu.faults.set({"concurrent_modification_rate": 1.0})
    with pytest.raises(GoogleAdsException) as concurrent:
        add_ops(ads, job, [op(ads, "create", user_data(ads, EMAIL_A))])
    assert error_codes(concurrent.value) == [("database_error", "CONCURRENT_MODIFICATION")]
    with pytest.raises(GoogleAdsException):
        run_job(ads, job)
    assert job_status(ads, job) == "PENDING"  # search is not affected
    emu.faults.set({"concurrent_modification_rate": 0.0, "resource_temporarily_exhausted_rate": 1.0})
    # The client leaves RESOURCE_EXHAUSTED unwrapped; the failure is still in the trailing metadata.
    with pytest.raises(core_exceptions.ResourceExhausted) as quota:
        job_status(ads, job)
    failure = GoogleAdsFailure.deserialize(
        dict(quota.value.errors[0].trailing_metadata())[FAILURE_METADATA_KEY]
    )
    assert failure.errors[0].error_code.quota_error.name == "RESOURCE_TEMPORARILY_EXHAUSTED"


@pytest.mark.parametrize(
    ("switch", "exception"),
    [
        ("resource_exhausted_rate", core_exceptions.ResourceExhausted),
        ("internal_rate", core_exceptions.InternalServerError),
        ("unavailable_rate", core_exceptions.ServiceUnavailable),
    ],
)
def test_plain_status_faults_hit_both_apis(
    emu: GoogleEmulator,
    ads: GoogleAdsClient,
    dm_lists: dm.UserListServiceClient,
    switch: str,
    exception: type[Exception],
) -> None:
    emu.faults.set({switch: 1.0})
    with pytest.raises(exception) as from_ads:
        create_ads_list(ads)
    assert FAILURE_METADATA_KEY not in dict(from_ads.value.errors[0].trailing_metadata() or ())  # type: ignore[attr-defined]
    with pytest.raises(exception):
        create_dm_list(dm_lists)
    emu.faults.set({switch: 0.0})
    create_dm_list(dm_lists)
    assert emu.calls["CreateUserList"] == 2
    assert emu.calls["MutateUserLists"] == 1


def test_slow_answers_meet_client_deadlines(emu: GoogleEmulator, dm_lists: dm.UserListServiceClient) -> None:
    emu.faults.set({"slow_rate": 1.0, "slow_seconds": 1.0})
    started = time.monotonic()
    with pytest.raises(core_exceptions.DeadlineExceeded):
        dm_lists.get_user_list(name=f"accountTypes/GOOGLE_ADS/accounts/{CID}/userLists/1", timeout=0.2)
    assert time.monotonic() - started < 0.9


def test_a_reset_cancels_rpcs_still_sleeping_for_an_earlier_client(
    emu: GoogleEmulator, dm_lists: dm.UserListServiceClient
) -> None:
    """The fixture shares one emulator per module: a slow answer a client gave up on must not land
    in the next test's store once the sleep ends."""
    emu.faults.set({"slow_rate": 1.0, "slow_seconds": 0.4})
    with pytest.raises(core_exceptions.DeadlineExceeded):
        create_dm_list(dm_lists, timeout=0.1)
    emu.reset()
    time.sleep(0.6)  # past the sleep: an uncancelled handler would have created the list by now
    assert emu.snapshot()["audiences"] == []


def test_job_fail_rate_ends_failed_and_applies_nothing(emu: GoogleEmulator, ads: GoogleAdsClient) -> None:
    emu.faults.set({"job_fail_rate": 1.0})
    user_list = create_ads_list(ads)
    job = create_job(ads, user_list)
    add_ops(ads, job, [op(ads, "create", user_data(ads, EMAIL_A))])
    run_job(ads, job)
    assert job_status(ads, job) == "FAILED"
    assert emu.members(list_id(user_list)) == set()


def test_expected_developer_token(emu: GoogleEmulator, ads: GoogleAdsClient) -> None:
    emu.faults.set({"expected_developer_token": "the-real-one"})
    with pytest.raises(GoogleAdsException) as caught:
        create_ads_list(ads)
    assert error_codes(caught.value) == [("authentication_error", "DEVELOPER_TOKEN_INVALID")]
    emu.faults.set({"expected_developer_token": "dev-token"})
    assert create_ads_list(ads)


# --- Data Manager ingestion -------------------------------------------------------------------------


def test_ingest_is_processing_then_success_and_remove_takes_the_exact_person(
    emu: GoogleEmulator, ingestion: dm.IngestionServiceClient, dm_lists: dm.UserListServiceClient
) -> None:
    emu.faults.set({"processing_seconds": 0.3})
    made = create_dm_list(dm_lists)
    request_id = ingest(ingestion, str(made.id), [member(EMAIL_A), member(EMAIL_B, phone=PHONE_A)])
    assert request_id
    status = request_status(ingestion, request_id)
    assert status.request_status == dm.RequestStatusPerDestination.RequestStatus.PROCESSING
    assert emu.members(str(made.id)) == set()
    time.sleep(0.35)
    status = request_status(ingestion, request_id)
    assert status.request_status == dm.RequestStatusPerDestination.RequestStatus.SUCCESS
    counts = status.audience_members_ingestion_status.user_data_ingestion_status
    assert (counts.record_count, counts.user_identifier_count) == (2, 3)
    assert status.destination.product_destination_id == str(made.id)
    assert emu.members(str(made.id)) == {
        frozenset({f"email:{EMAIL_A}"}),
        frozenset({f"email:{EMAIL_B}", f"phone:{PHONE_A}"}),
    }
    read = dm_lists.get_user_list(name=made.name)
    assert read.size_info.display_network_members_count == 2
    assert read.ingested_user_list_info.contact_id_info.match_rate_percentage == 70

    emu.faults.set({"processing_seconds": 0})
    removed = ingestion.remove_audience_members(
        request=dm.RemoveAudienceMembersRequest(
            destinations=[destination(str(made.id))], audience_members=[member(EMAIL_B), member(EMAIL_A)]
        )
    )
    status = request_status(ingestion, removed.request_id)
    assert status.request_status == dm.RequestStatusPerDestination.RequestStatus.SUCCESS
    assert status.audience_members_removal_status.user_data_removal_status.record_count == 2
    # {EMAIL_B} alone is not the person {EMAIL_B, PHONE_A}: only the exact set is removed.
    assert emu.members(str(made.id)) == {frozenset({f"email:{EMAIL_B}", f"phone:{PHONE_A}"})}
    assert [r["status"] for r in emu.snapshot()["requests"]] == ["SUCCESS", "SUCCESS"]


def test_address_identifiers_map_to_project_kinds(
    emu: GoogleEmulator, ingestion: dm.IngestionServiceClient, dm_lists: dm.UserListServiceClient
) -> None:
    made = create_dm_list(dm_lists)
    person = dm.AudienceMember(
        user_data=dm.UserData(
            user_identifiers=[
                dm.UserIdentifier(
                    address=dm.AddressInfo(
                        given_name=sha("g"), family_name=sha("f"), region_code="gb", postal_code="SW1A 1AA"
                    )
                )
            ]
        )
    )
    ingest(ingestion, str(made.id), [person])
    assert emu.members(str(made.id)) == {
        frozenset({f"first_name:{sha('g')}", f"last_name:{sha('f')}", "country:GB", "zip:SW1A 1AA"})
    }


@pytest.mark.parametrize(
    "case", ["bad_hash", "too_many_identifiers", "too_many_members", "rejected", "no_list", "terms_rejected"]
)
def test_data_manager_requests_fail_whole(
    emu: GoogleEmulator, ingestion: dm.IngestionServiceClient, dm_lists: dm.UserListServiceClient, case: str
) -> None:
    made = create_dm_list(dm_lists)
    target = str(made.id)
    members = [member(EMAIL_A), member(EMAIL_B), member(EMAIL_C)]
    if case == "bad_hash":
        members[2] = member("secret@example.com")
    elif case == "too_many_identifiers":
        members[2] = member(*[sha(str(i)) for i in range(11)])
    elif case == "too_many_members":
        members = [member(EMAIL_A)] * 10_001
    elif case == "rejected":
        emu.faults.set({"reject_identifiers": [EMAIL_C]})
    elif case == "no_list":
        target = "42"
    with pytest.raises(core_exceptions.InvalidArgument) as caught:
        if case == "terms_rejected":
            ingestion.ingest_audience_members(
                request=dm.IngestAudienceMembersRequest(
                    destinations=[destination(target)],
                    audience_members=members,
                    terms_of_service=dm.TermsOfService(
                        customer_match_terms_of_service_status=dm.TermsOfServiceStatus.REJECTED
                    ),
                )
            )
        else:
            ingest(ingestion, target, members)
    message = str(caught.value)
    if case in ("bad_hash", "too_many_identifiers", "rejected"):
        assert "audience_members[2]" in message
        # Google's error details: the field path and the Data Manager ErrorReason.
        violations = [
            v for d in caught.value.details if hasattr(d, "field_violations") for v in d.field_violations
        ]
        assert violations[0].field.startswith("audience_members[2].user_data")
        assert (
            violations[0].reason
            == {
                "bad_hash": "INVALID_SHA256_FORMAT",
                "too_many_identifiers": "TOO_MANY_USER_IDENTIFIERS",
                "rejected": "INVALID_FORMAT",
            }[case]
        )
    assert "secret@example.com" not in message and EMAIL_C not in message
    assert emu.members(str(made.id)) == set()
    assert emu.snapshot()["requests"] == []


def test_consent_per_request_and_per_member(
    emu: GoogleEmulator, ingestion: dm.IngestionServiceClient, dm_lists: dm.UserListServiceClient
) -> None:
    made = create_dm_list(dm_lists)
    response = ingestion.ingest_audience_members(
        request=dm.IngestAudienceMembersRequest(
            destinations=[destination(str(made.id))],
            audience_members=[
                member(EMAIL_A),
                member(EMAIL_B, consent=GRANTED),
                member(EMAIL_C, consent=DENIED),
            ],
            consent=DENIED,
            terms_of_service=TERMS_ACCEPTED,
        )
    )
    status = request_status(ingestion, response.request_id)
    assert status.request_status == dm.RequestStatusPerDestination.RequestStatus.PARTIAL_SUCCESS
    assert [(c.reason.name, c.record_count) for c in status.error_info.error_counts] == [
        ("PROCESSING_ERROR_REASON_DENIED_CONSENT", 2)
    ]
    assert emu.members(str(made.id)) == {frozenset({f"email:{EMAIL_B}"})}


def test_partial_success_rate(
    emu: GoogleEmulator, ingestion: dm.IngestionServiceClient, dm_lists: dm.UserListServiceClient
) -> None:
    emu.faults.set({"partial_success_rate": 1.0})
    made = create_dm_list(dm_lists)
    emails = [sha(f"{i}@example.com") for i in range(20)]
    status = request_status(ingestion, ingest(ingestion, str(made.id), [member(e) for e in emails]))
    assert status.request_status == dm.RequestStatusPerDestination.RequestStatus.PARTIAL_SUCCESS
    assert [(c.reason.name, c.record_count) for c in status.error_info.error_counts] == [
        ("PROCESSING_ERROR_REASON_INVALID_FORMAT", 2)
    ]
    assert emu.members(str(made.id)) == {frozenset({f"email:{e}"}) for e in emails[:18]}


def test_quota_per_minute(emu: GoogleEmulator, dm_lists: dm.UserListServiceClient) -> None:
    emu.faults.set({"quota_per_minute": 2})
    create_dm_list(dm_lists, "a")
    create_dm_list(dm_lists, "b")
    with pytest.raises(core_exceptions.ResourceExhausted):
        create_dm_list(dm_lists, "c")
    assert [a["name"] for a in emu.snapshot()["audiences"]] == ["a", "b"]


def test_unknown_request_id(ingestion: dm.IngestionServiceClient) -> None:
    with pytest.raises(core_exceptions.NotFound):
        request_status(ingestion, "no-such-request")


# --- admin surface and entry points ----------------------------------------------------------------


def test_admin_state_faults_and_reset(
    emu: GoogleEmulator, ingestion: dm.IngestionServiceClient, dm_lists: dm.UserListServiceClient
) -> None:
    made = create_dm_list(dm_lists, "Lapsed")
    ingest(ingestion, str(made.id), [member(EMAIL_B, phone=PHONE_A)])
    status, state = admin(emu, "/_emulator/state")
    assert status == 200
    assert state["audiences"] == [
        {
            "id": str(made.id),
            "name": "Lapsed",
            "description": "",
            "customer_id": CID,
            "resource_name": f"customers/{CID}/userLists/{made.id}",
            "data_manager_name": made.name,
            "membership_life_span": 540,
            "size": 1,
            "members": [sorted([f"email:{EMAIL_B}", f"phone:{PHONE_A}"])],
        }
    ]
    assert [r["status"] for r in state["requests"]] == ["SUCCESS"]
    assert state["calls"] == {"CreateUserList": 1, "IngestAudienceMembers": 1}

    assert admin(emu, "/_emulator/faults", {"processing_seconds": 5, "seed": 3})[0] == 200
    assert emu.faults["processing_seconds"] == 5
    status, body = admin(emu, "/_emulator/faults", {"no_such_switch": 1})
    assert status == 400 and "no_such_switch" in body["error"]
    assert admin(emu, "/_emulator/nothing")[0] == 404
    assert admin(emu, "/v1/anything")[0] == 404

    assert admin(emu, "/_emulator/reset", {})[0] == 200
    assert emu.snapshot()["audiences"] == []
    assert emu.faults["processing_seconds"] == 0.0
    assert emu.calls == {}


def test_start_emulator_takes_switches_and_stops_cleanly() -> None:
    with start_emulator(not_allowlisted=True, quota_per_minute=5) as emulator:
        assert emulator.faults["not_allowlisted"] is True
        assert emulator.endpoint == f"127.0.0.1:{emulator.port}"
        assert emulator.admin_url == f"http://127.0.0.1:{emulator.admin_port}"
        with pytest.raises(KeyError):
            start_emulator(no_such_switch=1)
    # Stopped: nothing listens on either port any more.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", emulator.admin_port)) != 0
    with grpc.insecure_channel(emulator.endpoint) as ch, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(ch).result(timeout=0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_listens_until_interrupted() -> None:
    port, admin_port = free_port(), free_port()
    code = f"from audiencesync.connectors.google.emulator import serve; serve({port}, {admin_port})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line and f"127.0.0.1:{admin_port}" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/_emulator/state", timeout=5) as resp:
            assert json.loads(resp.read())["audiences"] == []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            lists = dm.UserListServiceClient(transport=UserListServiceGrpcTransport(channel=ch))
            made = create_dm_list(lists, "served")
            assert made.display_name == "served"
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            assert proc.stdout is not None
            proc.stdout.close()
