"""API versions with published end dates, in one table, and the one check ``validate`` applies.

A version the platform has retired fails every call (Meta: error 2635), and one close to its end date
will soon; both are cheaper to hear about from ``validate`` than from a failed night's sync. Each row
names its source. A version the table does not list has no published end date: it passes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, timedelta

WARN_WITHIN = timedelta(days=90)
"""How long before a published end date ``validate`` starts warning."""

DEFAULT_VERSIONS: dict[str, str] = {
    # The version facebook-business 26.x is built for (facebook_business/apiconfig.py, API_VERSION);
    # a test keeps it equal to the installed SDK's.
    "meta": "v26.0",
}

END_DATES: dict[str, dict[str, date]] = {
    # Meta's Marketing API changelog, "versions" table (developers.facebook.com/documentation/
    # ads-commerce/marketing-api/marketing-api-changelog/versions). Custom-audience endpoints follow
    # the Marketing API dates, not the later Graph API ones. v26.0 and v27.0: not yet announced.
    "meta": {
        "v24.0": date(2026, 11, 10),
        "v25.0": date(2027, 2, 23),
    },
}


class VersionState(enum.Enum):
    CURRENT = "current"
    """No published end date, or one more than ``WARN_WITHIN`` away."""
    ENDING = "ending"
    """The end date is within ``WARN_WITHIN``: warn."""
    ENDED = "ended"
    """The end date has passed: refuse."""


@dataclass(frozen=True)
class VersionCheck:
    """What ``check_version`` found, with a message that names the version and its end date."""

    platform: str
    version: str
    state: VersionState
    end_date: date | None
    message: str

    @property
    def refused(self) -> bool:
        return self.state is VersionState.ENDED

    @property
    def warning(self) -> bool:
        return self.state is VersionState.ENDING


def check_version(platform: str, version: str, today: date) -> VersionCheck:
    """Where ``version`` of ``platform``'s API stands on ``today``."""
    table = END_DATES.get(platform, {})
    end = table.get(version)
    if end is None and table and _older_than_all(version, table):
        # Versions retire in release order (Meta's versioning page: each is served at least 90 days
        # after its successor ships), so one older than every row ended before the oldest row did.
        end = min(table.values())
    newest = DEFAULT_VERSIONS.get(platform)
    advice = f"; set it to a current version such as {newest}" if newest and newest != version else ""
    if end is None:
        return VersionCheck(
            platform, version, VersionState.CURRENT, None, f"{version} has no published end date"
        )
    if today >= end:
        message = f"{platform} stopped serving {version} on {end.isoformat()}{advice}"
        return VersionCheck(platform, version, VersionState.ENDED, end, message)
    if end - today <= WARN_WITHIN:
        days = (end - today).days
        message = f"{platform} stops serving {version} on {end.isoformat()}, in {days} days{advice}"
        return VersionCheck(platform, version, VersionState.ENDING, end, message)
    return VersionCheck(
        platform, version, VersionState.CURRENT, end, f"{version} is served until {end.isoformat()}"
    )


def _number(version: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in version.lstrip("v").split("."))
    except ValueError:
        return None


def _older_than_all(version: str, table: dict[str, date]) -> bool:
    mine = _number(version)
    listed = [n for n in map(_number, table) if n is not None]
    return mine is not None and bool(listed) and mine < min(listed)
