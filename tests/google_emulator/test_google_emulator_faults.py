"""The Google emulator's fault switches, its admin surface and its entry points."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from audiencesync.connectors.google.emulator import (
    FAILURE_METADATA_KEY,
    GoogleEmulator,
    start_emulator,
)
from google.ads import datamanager_v1 as dm
from google.ads.datamanager_v1.services.user_list_service.transports.grpc import UserListServiceGrpcTransport
from google.ads.googleads.client import GoogleAdsClient
from google.ads.googleads.errors import GoogleAdsException
from google.ads.googleads.v24.errors.types.errors import GoogleAdsFailure
from google.api_core import exceptions as core_exceptions
from google_emulator_calls import (
    CID,
    EMAIL_A,
    EMAIL_B,
    PHONE_A,
    add_ops,
    admin,
    create_ads_list,
    create_dm_list,
    create_job,
    error_codes,
    ingest,
    job_status,
    list_id,
    member,
    op,
    run_job,
    user_data,
)

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
