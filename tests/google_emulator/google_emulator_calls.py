"""What the Google emulator tests share: ids and hashes, and small calls made through Google's own
clients (the google-ads v24 client and the ``google.ads.datamanager_v1`` gRPC clients)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

from audiencesync.connectors.google.emulator import (
    GoogleEmulator,
)
from google.ads import datamanager_v1 as dm
from google.ads.googleads.client import GoogleAdsClient
from google.ads.googleads.errors import GoogleAdsException
from google.ads.googleads.v24.errors.types.errors import GoogleAdsFailure

CID = "1234567890"
OTHER_CID = "5555555555"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


EMAIL_A, EMAIL_B, EMAIL_C = sha("a@example.com"), sha("b@example.com"), sha("c@example.com")
PHONE_A = sha("+18005550100")


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
