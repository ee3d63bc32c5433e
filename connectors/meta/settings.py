"""The settings of a Meta destination, and the Marketing API versions it can pin.

Version end dates: the versions table
(developers.facebook.com/documentation/ads-commerce/marketing-api/marketing-api-changelog/versions);
facebook-business 26.x pins v26.0 (``facebook_business/apiconfig.py``). v26.0 and v27.0 have no
announced expiry yet.
"""

from __future__ import annotations

from datetime import date

from audiencesync.connectors.platform_spec import (
    ApiVersions,
    EmulatorDefaults,
    Setting,
    SettingsSchema,
    VersionInfo,
    matching,
    one_of,
)

_VERSIONS_PAGE = (
    "developers.facebook.com/documentation/ads-commerce/marketing-api/marketing-api-changelog/versions"
)
API_VERSIONS = ApiVersions(
    table="meta",
    versions={
        "v24.0": VersionInfo(date(2026, 11, 10), _VERSIONS_PAGE),
        "v25.0": VersionInfo(date(2027, 2, 23), _VERSIONS_PAGE),
        "v26.0": VersionInfo(None, _VERSIONS_PAGE),
        "v27.0": VersionInfo(None, _VERSIONS_PAGE),
    },
    default="v26.0",
)

SETTINGS = SettingsSchema(
    keys={
        "ad_account_id": Setting(
            required=True, check=matching(r"(act_)?\d{1,20}", "must be act_ followed by digits")
        ),
        "access_token_env": Setting(required=True, secret="access_token"),
        # Only for appsecret_proof, which an app may leave off (docs/setup-meta.md).
        "app_secret_env": Setting(secret="app_secret", secret_optional=True),
        "api_version": Setting(
            default=API_VERSIONS.default, check=matching(r"v\d+\.\d+", "must look like v26.0")
        ),
        "customer_file_source": Setting(
            default="USER_PROVIDED_ONLY",
            check=one_of("USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED"),
        ),
    },
    # act_123 and 123 name one ad account (the Graph API's ad account node is act_<id>).
    account_key="ad_account_id",
    account_prefix="act_",
    api_versions=(API_VERSIONS,),
    version_table=lambda _settings: API_VERSIONS.table,
    emulator=EmulatorDefaults(port=8801),
)
