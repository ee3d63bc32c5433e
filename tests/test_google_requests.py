"""The exact protobuf requests each Google backend builds (adds, removes, consent splits, lists),
and the bulk builders and column-wise screening against member-by-member references."""

from __future__ import annotations

from typing import Any

import pytest
from audiencesync.connectors.contract import Change, HandleStatus
from audiencesync.connectors.google import payload as gp
from google.ads import datamanager_v1 as dm
from google.ads.googleads.v24.common.types import offline_user_data as oud
from google_samples import CUSTOMER, JOB, LOGIN, as_dict, change, dm_status, h

# --- Data Manager: golden requests ------------------------------------------------------------------


def _dm_ids(i: int) -> list[dict[str, Any]]:
    return [
        {"email_address": h(f"user{i}@example.com")},
        {"phone_number": h(f"+1555{i:07d}")},
        {
            "address": {
                "given_name": h(f"first{i}"),
                "family_name": h(f"last{i}"),
                "region_code": "US",
                "postal_code": f"{10000 + i}",
            }
        },
    ]


DM_DESTINATION = {
    "operating_account": {"account_type": "GOOGLE_ADS", "account_id": CUSTOMER},
    "login_account": {"account_type": "GOOGLE_ADS", "account_id": LOGIN},
    "product_destination_id": "555",
}


def test_dm_ingest_request_sets_consent_per_member_and_hex_encoding() -> None:
    dest = gp.dm_destination(CUSTOMER, LOGIN, "555")
    request = gp.dm_ingest_request(dest, [change(1, True), change(2, False), change(3, None, address=False)])
    assert as_dict(request) == {
        "destinations": [DM_DESTINATION],
        "audience_members": [
            {
                "user_data": {"user_identifiers": _dm_ids(1)},
                "consent": {"ad_user_data": "CONSENT_GRANTED", "ad_personalization": "CONSENT_GRANTED"},
            },
            {
                "user_data": {"user_identifiers": _dm_ids(2)},
                "consent": {"ad_user_data": "CONSENT_DENIED", "ad_personalization": "CONSENT_DENIED"},
            },
            {"user_data": {"user_identifiers": _dm_ids(3)[:2]}},
        ],
        "encoding": "HEX",
        # Google's proto: must be ACCEPTED when ingesting UserData (terms_of_service.py).
        "terms_of_service": {"customer_match_terms_of_service_status": "ACCEPTED"},
    }


def test_dm_remove_request_carries_no_consent_and_no_login_account_when_unset() -> None:
    dest = gp.dm_destination(CUSTOMER, None, "555")
    request = gp.dm_remove_request(dest, [change(1, True)])
    assert as_dict(request) == {
        "destinations": [{k: v for k, v in DM_DESTINATION.items() if k != "login_account"}],
        "audience_members": [{"user_data": {"user_identifiers": _dm_ids(1)}}],
        "encoding": "HEX",
    }


def test_dm_user_list_is_a_first_party_contact_list_with_the_lifespan() -> None:
    assert as_dict(gp.dm_user_list("audience-sync: vip", "VIPs", 540)) == {
        "display_name": "audience-sync: vip",
        "description": "VIPs",
        "membership_status": "OPEN",
        "membership_duration": f"{540 * 86400}s",
        "ingested_user_list_info": {
            "upload_key_types": ["CONTACT_ID"],
            "contact_id_info": {"data_source_type": "DATA_SOURCE_TYPE_FIRST_PARTY"},
        },
    }
    assert gp.dm_name_filter('a "b"') == 'display_name = "a \\"b\\""'


def test_dm_request_status_maps_onto_handle_states() -> None:
    assert gp.dm_handle_status(dm_status("SUCCESS")).state == "confirmed"
    partial = gp.dm_handle_status(dm_status("PARTIAL_SUCCESS", errors=3))
    assert partial.state == "confirmed" and partial.rejected_count == 3
    assert partial.detail.startswith("PARTIAL_SUCCESS")
    assert gp.dm_handle_status(dm_status("FAILED", errors=5)).state == "failed"
    assert gp.dm_handle_status(dm_status("PROCESSING")) == HandleStatus("pending", detail="PROCESSING")
    assert gp.dm_handle_status(dm_status()).state == "pending"


def test_dm_request_status_names_a_low_match_rate_and_a_success_that_refused_everyone() -> None:
    rs = dm.RequestStatusPerDestination

    def ingested(records: int, match: str, errors: int = 0) -> dm.RetrieveRequestStatusResponse:
        status = dm_status("SUCCESS", errors=errors).request_status_per_destination[0]
        status.audience_members_ingestion_status = rs.IngestAudienceMembersStatus(
            user_data_ingestion_status=rs.IngestUserDataStatus(
                record_count=records, upload_match_rate_range=getattr(dm.MatchRateRange, match)
            )
        )
        return dm.RetrieveRequestStatusResponse(request_status_per_destination=[status])

    assert gp.dm_handle_status(ingested(10, "MATCH_RATE_RANGE_61_TO_70")) == HandleStatus(
        "confirmed", detail="SUCCESS match rate MATCH_RATE_RANGE_61_TO_70"
    )
    assert gp.dm_handle_status(ingested(10, "MATCH_RATE_RANGE_LESS_THAN_20")).detail == (
        "SUCCESS match rate MATCH_RATE_RANGE_LESS_THAN_20 (few or none of the uploaded people matched)"
    )
    assert gp.dm_handle_status(ingested(10, "MATCH_RATE_RANGE_UNKNOWN")).detail == "SUCCESS"
    refused = gp.dm_handle_status(ingested(4, "MATCH_RATE_RANGE_UNKNOWN", errors=4))
    assert refused.state == "confirmed" and refused.rejected_count == 4
    assert refused.detail.startswith("SUCCESS; all 4 members refused; ")


# --- Google Ads: golden requests --------------------------------------------------------------------


def _ads_ids(i: int, *, address: bool = True) -> list[dict[str, Any]]:
    ids: list[dict[str, Any]] = [
        {"hashed_email": h(f"user{i}@example.com")},
        {"hashed_phone_number": h(f"+1555{i:07d}")},
    ]
    if address:
        ids.append(
            {
                "address_info": {
                    "hashed_first_name": h(f"first{i}"),
                    "hashed_last_name": h(f"last{i}"),
                    "country_code": "US",
                    "postal_code": f"{10000 + i}",
                }
            }
        )
    return ids


def test_ads_add_request_is_one_user_data_per_person_with_partial_failure() -> None:
    request = gp.ads_operations_request(JOB, [change(1), change(2, address=False)], remove=False)
    assert as_dict(request) == {
        "resource_name": JOB,
        "enable_partial_failure": True,
        "operations": [
            {"create": {"user_identifiers": _ads_ids(1)}},
            {"create": {"user_identifiers": _ads_ids(2, address=False)}},
        ],
    }


def test_ads_remove_request_uses_remove_operations_only() -> None:
    request = gp.ads_operations_request(JOB, [change(1)], remove=True)
    assert as_dict(request)["operations"] == [{"remove": {"user_identifiers": _ads_ids(1)}}]


def test_address_goes_only_with_first_and_last_name_country_and_zip() -> None:
    partial = Change(b"k", {"email": h("a@b.c"), "first_name": h("x"), "last_name": h("y"), "country": "US"})
    for remove, op in ((False, "create"), (True, "remove")):
        request = gp.ads_operations_request(JOB, [partial], remove=remove)
        assert as_dict(request)["operations"] == [{op: {"user_identifiers": [{"hashed_email": h("a@b.c")}]}}]
    dest = gp.dm_destination(CUSTOMER, None, "555")
    for build in (gp.dm_ingest_request, gp.dm_remove_request):
        assert as_dict(build(dest, [partial]))["audience_members"] == [
            {"user_data": {"user_identifiers": [{"email_address": h("a@b.c")}]}}
        ]


def test_ads_jobs_carry_consent_at_job_level_and_never_denied() -> None:
    user_list = "customers/1234567890/userLists/555"
    assert as_dict(gp.ads_job(user_list, True)) == {
        "type_": "CUSTOMER_MATCH_USER_LIST",
        "customer_match_user_list_metadata": {
            "user_list": user_list,
            "consent": {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"},
        },
    }
    assert as_dict(gp.ads_job(user_list, None)) == {
        "type_": "CUSTOMER_MATCH_USER_LIST",
        "customer_match_user_list_metadata": {"user_list": user_list},
    }
    with pytest.raises(ValueError, match="DENIED"):
        gp.ads_job(user_list, False)


def test_consent_split_groups_granted_and_unknown_and_holds_back_denied() -> None:
    batch = [change(1, True), change(2, None), change(3, False), change(4, True)]
    split = gp.split_by_consent(batch)
    assert [(c, [m.member_key for m in g]) for c, g in split.groups()] == [
        (True, [b"m1", b"m4"]),
        (None, [b"m2"]),
    ]
    assert [m.member_key for m in split.denied] == [b"m3"]


def test_user_list_operation_is_crm_contact_info_with_life_span() -> None:
    assert as_dict(gp.ads_user_list_operation("audience-sync: vip", "VIPs", 400)) == {
        "create": {
            "name": "audience-sync: vip",
            "description": "VIPs",
            "membership_life_span": "400",
            "crm_based_user_list": {"upload_key_type": "CONTACT_INFO", "data_source_type": "FIRST_PARTY"},
        }
    }


def test_gaql_quotes_names() -> None:
    assert gp.gaql_user_list_by_name("it's").endswith("WHERE user_list.name = 'it\\'s'")
    assert gp.gaql_job(JOB).endswith(f"offline_user_data_job.resource_name = '{JOB}'")


# --- bulk builders and column-wise screening agree with the per-member ones -------------------------


def reference_ads_user_data(change: Change) -> oud.UserData:
    """The test's oracle for one Ads member, built message by message on proto-plus: one UserData per
    person, one UserIdentifier per identifier, the address only when all four parts are there."""
    ids = change.identifiers
    identifiers: list[oud.UserIdentifier] = []
    if ids.get("email"):
        identifiers.append(oud.UserIdentifier(hashed_email=ids["email"]))
    if ids.get("phone"):
        identifiers.append(oud.UserIdentifier(hashed_phone_number=ids["phone"]))
    if gp.has_address(change):
        identifiers.append(
            oud.UserIdentifier(
                address_info=oud.OfflineUserAddressInfo(
                    hashed_first_name=ids["first_name"],
                    hashed_last_name=ids["last_name"],
                    country_code=ids["country"],
                    postal_code=ids["zip"],
                )
            )
        )
    return oud.UserData(user_identifiers=identifiers[: gp.MAX_IDENTIFIERS])


def reference_dm_member(change: Change, *, with_consent: bool) -> dm.AudienceMember:
    """The test's oracle for one Data Manager member, built message by message on proto-plus: the
    Data Manager twin of ``reference_ads_user_data``, with both consent signals when asked for and
    known."""
    ids = change.identifiers
    identifiers: list[dm.UserIdentifier] = []
    if ids.get("email"):
        identifiers.append(dm.UserIdentifier(email_address=ids["email"]))
    if ids.get("phone"):
        identifiers.append(dm.UserIdentifier(phone_number=ids["phone"]))
    if gp.has_address(change):
        identifiers.append(
            dm.UserIdentifier(
                address=dm.AddressInfo(
                    given_name=ids["first_name"],
                    family_name=ids["last_name"],
                    region_code=ids["country"],
                    postal_code=ids["zip"],
                )
            )
        )
    member = dm.AudienceMember(user_data=dm.UserData(user_identifiers=identifiers))
    if with_consent and change.consent is not None:
        status = dm.ConsentStatus.CONSENT_GRANTED if change.consent else dm.ConsentStatus.CONSENT_DENIED
        member.consent = dm.Consent(ad_user_data=status, ad_personalization=status)
    return member


_MALFORMED = [
    h("x").upper(),
    h("x")[:63],
    h("x") + "0",
    h("a")[:32] + "\n" + h("b")[:31],
    "é" * 64,
    " " + h("x")[1:],
    h("x")[:63] + "g",
]


def _odd_batch(seed: int, size: int) -> list[Change]:
    """Members with every mix of present, empty and missing identifiers, some malformed hashes, and
    each consent state."""
    import random

    rng = random.Random(seed)
    batch = []
    for i in range(size):
        ids: dict[str, str] = {}
        for kind in ("email", "phone", "first_name", "last_name"):
            roll = rng.random()
            if roll < 0.6:
                ids[kind] = h(f"{kind}{i}")
            elif roll < 0.7:
                ids[kind] = ""
            elif roll < 0.73:
                ids[kind] = rng.choice(_MALFORMED)
        if rng.random() < 0.7:
            ids["country"] = rng.choice(["US", "", "fr"])
        if rng.random() < 0.7:
            ids["zip"] = rng.choice(["94107", "", "SW1A 1AA"])
        batch.append(Change(f"m{i}".encode(), ids, rng.choice([True, False, None])))
    return batch


def test_screen_checks_a_batch_column_wise_exactly_as_member_by_member() -> None:
    def one_by_one(batch: list[Change]) -> tuple[list[Change], dict[bytes, str]]:
        reasons = {c.member_key: gp.invalid_reason(c) for c in batch}
        return [c for c in batch if reasons[c.member_key] is None], {
            k: r for k, r in reasons.items() if r is not None
        }

    clean = [change(i, address=i % 2 == 0, phone=i % 3 != 0) for i in range(50)]
    assert gp.screen(clean) == (clean, {})
    for seed in range(200):
        batch = _odd_batch(seed, seed % 12)
        assert gp.screen(batch) == one_by_one(batch)
    for bad in _MALFORMED:
        batch = [*clean, Change(b"bad", {"email": h("ok"), "phone": bad})]
        assert gp.screen(batch) == one_by_one(batch)
        assert b"bad" in gp.screen(batch)[1]


def test_bulk_built_requests_equal_the_member_by_member_messages() -> None:
    from google.ads.googleads.v24.services.types import offline_user_data_job_service as job_service

    batch = [*_odd_batch(7, 300), Change(b"empty", {}, None)]
    for login in (None, LOGIN):
        dest = gp.dm_destination(CUSTOMER, login, "555")
        for build, request_type, with_consent in (
            (gp.dm_ingest_request, dm.IngestAudienceMembersRequest, True),
            (gp.dm_remove_request, dm.RemoveAudienceMembersRequest, False),
        ):
            expected = request_type(
                destinations=[dest],
                audience_members=[reference_dm_member(c, with_consent=with_consent) for c in batch],
                encoding=dm.Encoding.HEX,
            )
            if with_consent:  # ingests only: removes have no terms_of_service field
                expected.terms_of_service = dm.TermsOfService(
                    customer_match_terms_of_service_status=dm.TermsOfServiceStatus.ACCEPTED
                )
            built = build(dest, batch)
            assert type(built) is request_type
            assert request_type.serialize(built) == request_type.serialize(expected)
    for remove in (False, True):
        operation = job_service.OfflineUserDataJobOperation
        operations = [
            operation(remove=reference_ads_user_data(c))
            if remove
            else operation(create=reference_ads_user_data(c))
            for c in batch
        ]
        expected_ads = job_service.AddOfflineUserDataJobOperationsRequest(
            resource_name=JOB, operations=operations, enable_partial_failure=True
        )
        built_ads = gp.ads_operations_request(JOB, batch, remove=remove)
        assert job_service.AddOfflineUserDataJobOperationsRequest.serialize(built_ads) == (
            job_service.AddOfflineUserDataJobOperationsRequest.serialize(expected_ads)
        )
