"""The settings of a Google Customer Match destination, and the Google Ads API versions its
``google_ads`` backend can pin (Data Manager has no version to choose).

Version end dates: google-ads 34.x ships v23..v26 and defaults to v26 (``google/ads/googleads/client.py``,
``_VALID_API_VERSIONS``, ``_DEFAULT_VERSION``). Sunsets are Google's projection of a year per major
(developers.google.com/ads/blog/posts/2025/09/more-frequent-releases-coming-for), stated by month only
and tentative: we take the first of the month, the earliest reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from audiencesync.connectors.platform_spec import (
    ApiVersions,
    EmulatorDefaults,
    EmulatorTransport,
    Setting,
    SettingsSchema,
    VersionInfo,
    flag,
    matching,
    one_of,
    whole_number,
)

_SUNSETS = "developers.google.com/ads/blog/posts/2025/09/more-frequent-releases-coming-for"
# Projected sunsets, month only: v23 Feb 2027, v24 May 2027, v25 Aug 2027, v26 Nov 2027.
API_VERSIONS = ApiVersions(
    table="google_ads",
    versions={
        "v23": VersionInfo(date(2027, 2, 1), _SUNSETS),
        "v24": VersionInfo(date(2027, 5, 1), _SUNSETS),
        "v25": VersionInfo(date(2027, 8, 1), _SUNSETS),
        "v26": VersionInfo(date(2027, 11, 1), _SUNSETS),
    },
    default="v26",
)

CUSTOMER_MATCH_POLICY = "https://support.google.com/adspolicy/answer/6299717"

_CUSTOMER_ID = matching(r"\d{10}", "must be 10 digits without dashes")


def _check_terms(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The data_manager backend needs the advertiser's explicit acceptance of the Customer Match terms:
    Data Manager takes UserData only with terms_of_service ACCEPTED (proto
    google/ads/datamanager_v1/types/terms_of_service.py), and that status is the advertiser's legal
    attestation, never ours to give."""
    if settings.get("backend") != "google_ads" and settings.get("accept_customer_match_terms") is not True:
        return [
            (
                "accept_customer_match_terms",
                "required for the data_manager backend: set it to true only if the advertiser accepts "
                f"Google's Customer Match policy ({CUSTOMER_MATCH_POLICY}); uploads declare that acceptance",
            )
        ]
    return []


def _version_table(settings: Mapping[str, Any]) -> str | None:
    return API_VERSIONS.table if settings.get("backend") == "google_ads" else None


SETTINGS = SettingsSchema(
    keys={
        "backend": Setting(default="data_manager", check=one_of("data_manager", "google_ads")),
        "customer_id": Setting(required=True, check=_CUSTOMER_ID),
        "login_customer_id": Setting(check=_CUSTOMER_ID),
        # Unset, the client libraries fall back to application-default credentials (docs/setup-google.md);
        # the value is a path or a JSON document, either of which may hold spaces.
        "credentials_env": Setting(
            default="GOOGLE_APPLICATION_CREDENTIALS",
            secret="credentials",
            secret_optional=True,
            secret_multiline=True,
        ),
        # Only the Google Ads API asks for a developer token; Data Manager does not.
        "developer_token_env": Setting(
            default="GOOGLE_ADS_DEVELOPER_TOKEN",
            secret="developer_token",
            secret_needed_when=("backend", "google_ads"),
        ),
        "membership_life_span_days": Setting(default=540, check=whole_number(1, 540)),
        "refresh_margin_days": Setting(default=30, check=whole_number(0, 539)),
        # The advertiser's own attestation of Google's Customer Match terms (_check_terms); the
        # connector sends ACCEPTED only with it.
        "accept_customer_match_terms": Setting(check=flag),
        "api_version": Setting(default=API_VERSIONS.default, check=matching(r"v\d+", "must look like v26")),
    },
    account_key="customer_id",
    checks=_check_terms,
    api_versions=(API_VERSIONS,),
    version_table=_version_table,
    # The API port speaks gRPC, so the admin surface has a port of its own.
    emulator=EmulatorDefaults(port=8803, admin_port=8804, transport=EmulatorTransport.GRPC),
)
