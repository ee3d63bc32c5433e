"""The Google emulator through the google-ads v24 client and the Data Manager clients: user lists seen by
both APIs, and the Google Ads API jobs, operations and GAQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from audiencesync.connectors.google.emulator import (
    FAILURE_METADATA_KEY,
    GoogleEmulator,
)
from google.ads import datamanager_v1 as dm
from google.ads.googleads.client import GoogleAdsClient
from google.ads.googleads.errors import GoogleAdsException
from google.ads.googleads.v24.errors.types.errors import GoogleAdsFailure
from google.api_core import exceptions as core_exceptions
from google_emulator_calls import (
    CID,
    EMAIL_A,
    EMAIL_B,
    EMAIL_C,
    OTHER_CID,
    add_ops,
    create_ads_list,
    create_dm_list,
    create_job,
    error_codes,
    failure_indexes,
    job_status,
    list_id,
    op,
    run_job,
    sha,
    user_data,
)

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
    with_address = frozenset(
        {f"email:{EMAIL_B}", f"first_name:{address[0]}", f"last_name:{address[1]}", "country:US", "zip:94043"}
    )
    assert emu.members(list_id(user_list)) == {frozenset({f"email:{EMAIL_A}"}), with_address}

    emu.faults.set({"processing_seconds": 0})
    removal = create_job(ads, user_list)
    add_ops(ads, removal, [op(ads, "remove", user_data(ads, EMAIL_A))])
    run_job(ads, removal)
    assert job_status(ads, removal) == "SUCCESS"
    assert emu.members(list_id(user_list)) == {with_address}
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
