"""Platform API versions and their published end dates: the verdict on a configured version.

Each platform folder declares the versions it can pin and their sources (``ApiVersions`` in its
``settings.py``); this module gathers them by table name and says whether a configured version is
fine, near its end (warn) or past it (refused), given today's date, so config loading can warn and
refuse without calling a platform. A version's end date is the day its calls stop working as
documented.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date

from audiencesync.connectors.platform_spec import ApiVersions, VersionInfo
from audiencesync.connectors.registry import PLATFORMS

__all__ = [
    "DEFAULT_VERSIONS",
    "VERSIONS",
    "WARN_DAYS",
    "VersionCheck",
    "VersionInfo",
    "VersionStatus",
    "check_version",
]

# A version within this many days of its published end date draws a warning.
WARN_DAYS = 90


def _tables() -> dict[str, ApiVersions]:
    return {api.table: api for spec in PLATFORMS.values() for api in spec.settings.api_versions}


VERSIONS: dict[str, dict[str, VersionInfo]] = {name: dict(api.versions) for name, api in _tables().items()}
"""Table name (``meta``, ``google_ads``) -> version -> its end date."""
DEFAULT_VERSIONS: dict[str, str] = {name: api.default for name, api in _tables().items()}
"""Table name -> the newest version the pinned SDK supports."""


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
    """Say whether ``version`` of the API ``platform`` names (a table of ``VERSIONS``: "google_ads",
    "meta") may be used on ``today``.

    Unknown versions are refused (the pinned SDK does not ship them, or the table does not know
    their end date); a passed end date is refused; one within ``WARN_DAYS`` warns.
    """
    api = _tables().get(platform)
    if api is None:
        raise KeyError(f"no version table for platform {platform!r}")
    table = api.versions
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
            f"{version} stopped working on {info.end.isoformat()} ({info.source}); use {api.default}",
            info.end,
        )
    if left <= WARN_DAYS:
        return VersionCheck(
            VersionStatus.WARN,
            f"{version} stops working on {info.end.isoformat()}, in {left} days ({info.source}); "
            f"move to {api.default}",
            info.end,
        )
    return VersionCheck(VersionStatus.OK, f"{version} ends on {info.end.isoformat()}", info.end)
