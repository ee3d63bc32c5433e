"""The Google emulator's Data Manager ingestion, through the ``google.ads.datamanager_v1`` gRPC clients."""

from __future__ import annotations

import time

import pytest
from audiencesync.connectors.google.emulator import (
    GoogleEmulator,
)
from google.ads import datamanager_v1 as dm
from google.api_core import exceptions as core_exceptions
from google_emulator_calls import (
    DENIED,
    EMAIL_A,
    EMAIL_B,
    EMAIL_C,
    GRANTED,
    PHONE_A,
    TERMS_ACCEPTED,
    create_dm_list,
    destination,
    ingest,
    member,
    request_status,
    sha,
)

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
