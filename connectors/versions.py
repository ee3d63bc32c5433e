"""Platform API versions and their published end dates, for every platform, in one table.

A version's end date is the day its calls stop working as documented. ``check_version`` says
whether a configured version is fine, near its end (warn) or past it (refused), given today's date,
so config loading can warn and refuse without calling a platform.

Sources:
- Google Ads API: google-ads 34.x ships v23..v26 and defaults to v26 (``google/ads/googleads/client.py``,
  ``_VALID_API_VERSIONS``, ``_DEFAULT_VERSION``). Sunsets are Google's projection of a year per major
  (developers.google.com/ads/blog/posts/2025/09/more-frequent-releases-coming-for), stated by month only
  and tentative: we take the first of the month, the earliest reading.
- Meta Marketing API: expiries from the versions table
  (developers.facebook.com/documentation/ads-commerce/marketing-api/marketing-api-changelog/versions);
  facebook-business 26.x pins v26.0 (``facebook_business/apiconfig.py``). v26.0 and v27.0 have no
  announced expiry yet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date

# A version within this many days of its published end date draws a warning.
WARN_DAYS = 90


@dataclass(frozen=True)
class VersionInfo:
    """One API version: its end date (None while unannounced) and where that date comes from."""

    end: date | None
    source: str


_GOOGLE_ADS_SUNSETS = "developers.google.com/ads/blog/posts/2025/09/more-frequent-releases-coming-for"
_META_VERSIONS = (
    "developers.facebook.com/documentation/ads-commerce/marketing-api/marketing-api-changelog/versions"
)

VERSIONS: dict[str, dict[str, VersionInfo]] = {
    # Projected sunsets, month only: v23 Feb 2027, v24 May 2027, v25 Aug 2027, v26 Nov 2027.
    "google_ads": {
        "v23": VersionInfo(date(2027, 2, 1), _GOOGLE_ADS_SUNSETS),
        "v24": VersionInfo(date(2027, 5, 1), _GOOGLE_ADS_SUNSETS),
        "v25": VersionInfo(date(2027, 8, 1), _GOOGLE_ADS_SUNSETS),
        "v26": VersionInfo(date(2027, 11, 1), _GOOGLE_ADS_SUNSETS),
    },
    "meta": {
        "v24.0": VersionInfo(date(2026, 11, 10), _META_VERSIONS),
        "v25.0": VersionInfo(date(2027, 2, 23), _META_VERSIONS),
        "v26.0": VersionInfo(None, _META_VERSIONS),
        "v27.0": VersionInfo(None, _META_VERSIONS),
    },
}

# The newest version each pinned SDK supports: google-ads 34.x defaults to v26; facebook-business
# 26.x pins v26.0.
DEFAULT_VERSIONS: dict[str, str] = {"google_ads": "v26", "meta": "v26.0"}


class VersionStatus(enum.Enum):
    OK = "ok"
    WARN = "warn"
    REFUSED = "refused"


@dataclass(frozen=True)
class VersionCheck:
    """The verdict on one configured version; ``message`` says why, for a warning or a refusal."""

    status: VersionStatus
    message: str
    end: date | None = None

    @property
    def ok(self) -> bool:
        return self.status is VersionStatus.OK

    @property
    def refused(self) -> bool:
        return self.status is VersionStatus.REFUSED


def check_version(platform: str, version: str, today: date) -> VersionCheck:
    """Say whether ``version`` of ``platform`` ("google_ads" or "meta") may be used on ``today``.

    Unknown versions are refused (the pinned SDK does not ship them, or the table does not know
    their end date); a passed end date is refused; one within ``WARN_DAYS`` warns.
    """
    table = VERSIONS.get(platform)
    if table is None:
        raise KeyError(f"no version table for platform {platform!r}")
    info = table.get(version)
    if info is None:
        known = ", ".join(table)
        return VersionCheck(
            VersionStatus.REFUSED, f"{version} is not a supported version (supported: {known})"
        )
    if info.end is None:
        return VersionCheck(VersionStatus.OK, f"{version} has no announced end date", None)
    left = (info.end - today).days
    if left <= 0:
        return VersionCheck(
            VersionStatus.REFUSED,
            f"{version} stopped working on {info.end.isoformat()} ({info.source}); "
            f"use {DEFAULT_VERSIONS[platform]}",
            info.end,
        )
    if left <= WARN_DAYS:
        return VersionCheck(
            VersionStatus.WARN,
            f"{version} stops working on {info.end.isoformat()}, in {left} days ({info.source}); "
            f"move to {DEFAULT_VERSIONS[platform]}",
            info.end,
        )
    return VersionCheck(VersionStatus.OK, f"{version} ends on {info.end.isoformat()}", info.end)
