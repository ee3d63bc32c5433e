"""The Data Manager ingest the connector builds, against the one Google's official sample builds.

googleads/data-manager-python, samples/audiences/ingest_audience_members.py: per batch of up to
10,000 members, one IngestAudienceMembersRequest with the destination (operating account, optional
login account, product_destination_id = the list id), members with one UserIdentifier per email and
per phone (hex SHA-256), consent GRANTED for ad_user_data and ad_personalization, terms of service
ACCEPTED, encoding HEX and validate_only false. The expected request below is written out from that
sample's structure (not copied code); the identifiers are the normalization vectors of Google's
Data Manager client tests (email "  ALEXZ@example.com   ", phone "+1 800-555-0100").
"""

from __future__ import annotations

from typing import Any

from audiencesync.connectors.contract import Change
from audiencesync.connectors.google import payload as gp
from google.ads import datamanager_v1 as dm
from google.protobuf.json_format import MessageToDict

EMAIL = "509e933019bb285a134a9334b8bb679dff79d0ce023d529af4bd744d47b4fd8a"
PHONE = "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"
OPERATING, LOGIN, LIST_ID = "1234567890", "9876543210", "555"


def sample_request() -> dm.IngestAudienceMembersRequest:
    """The request Google's sample sends for one member with one email and one phone."""
    destination = dm.Destination()
    destination.operating_account.account_type = dm.ProductAccount.AccountType.GOOGLE_ADS
    destination.operating_account.account_id = OPERATING
    destination.login_account.account_type = dm.ProductAccount.AccountType.GOOGLE_ADS
    destination.login_account.account_id = LOGIN
    destination.product_destination_id = LIST_ID
    user_data = dm.UserData(
        user_identifiers=[dm.UserIdentifier(email_address=EMAIL), dm.UserIdentifier(phone_number=PHONE)]
    )
    return dm.IngestAudienceMembersRequest(
        destinations=[destination],
        audience_members=[dm.AudienceMember(user_data=user_data)],
        consent=dm.Consent(
            ad_user_data=dm.ConsentStatus.CONSENT_GRANTED,
            ad_personalization=dm.ConsentStatus.CONSENT_GRANTED,
        ),
        terms_of_service=dm.TermsOfService(
            customer_match_terms_of_service_status=dm.TermsOfServiceStatus.ACCEPTED
        ),
        encoding=dm.Encoding.HEX,
        validate_only=False,
    )


def as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(type(message).pb(message), preserving_proto_field_name=True)


def effective_consent(request: dict[str, Any], member: dict[str, Any]) -> dict[str, Any]:
    # Data Manager: a member's consent wins over the request's
    # (developers.google.com/data-manager/api/reference/rest/v1/audienceMembers/ingest).
    return member.get("consent") or request.get("consent") or {}


def test_the_connector_builds_the_request_of_googles_official_sample() -> None:
    built = as_dict(
        gp.dm_ingest_request(
            gp.dm_destination(OPERATING, LOGIN, LIST_ID),
            [Change(b"m1", {"email": EMAIL, "phone": PHONE}, consent=True)],
        )
    )
    sample = as_dict(sample_request())
    assert built["destinations"] == sample["destinations"]
    assert built["encoding"] == sample["encoding"] == "HEX"
    assert built["terms_of_service"] == sample["terms_of_service"]
    assert built.get("validate_only", False) is False
    assert len(built["audience_members"]) == len(sample["audience_members"]) == 1
    ours, theirs = built["audience_members"][0], sample["audience_members"][0]
    assert ours["user_data"] == theirs["user_data"]
    # The one difference in form: the sample sets consent on the request, the connector per member
    # (each profile's own consent); what Google applies to the member is the same.
    assert effective_consent(built, ours) == effective_consent(sample, theirs)
    assert set(built) - {"consent"} <= set(sample)
