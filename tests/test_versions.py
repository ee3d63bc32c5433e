"""The one table of platform API versions and end dates, and the verdict it gives for a date."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from audiencesync.connectors.versions import (
    DEFAULT_VERSIONS,
    VERSIONS,
    WARN_DAYS,
    VersionStatus,
    check_version,
)
from hypothesis import given
from hypothesis import strategies as st


def test_google_ads_v24_warns_within_90_days_of_its_projected_sunset() -> None:
    check = check_version("google_ads", "v24", date(2027, 3, 1))
    assert check.status is VersionStatus.WARN
    assert "2027-05-01" in check.message


def test_a_passed_version_is_refused_and_names_the_default() -> None:
    check = check_version("meta", "v24.0", date(2026, 12, 2))
    assert check.refused
    assert "v26.0" in check.message


def test_meta_v25_is_fine_today_and_warns_from_late_november() -> None:
    assert check_version("meta", "v25.0", date(2026, 11, 1)).ok
    assert check_version("meta", "v25.0", date(2026, 12, 2)).status is VersionStatus.WARN


def test_a_version_with_no_announced_end_is_ok() -> None:
    assert check_version("meta", "v27.0", date(2030, 1, 1)).ok


def test_an_unknown_version_is_refused() -> None:
    check = check_version("google_ads", "v19", date(2026, 12, 2))
    assert check.refused
    assert "v26" in check.message


def test_defaults_are_in_the_table() -> None:
    for platform, version in DEFAULT_VERSIONS.items():
        assert version in VERSIONS[platform]


def test_an_unknown_platform_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        check_version("myspace", "v1", date(2026, 1, 1))


@given(st.sampled_from(sorted(VERSIONS["google_ads"])), st.integers(-400, 400))
def test_the_verdict_follows_the_days_left(version: str, offset: int) -> None:
    end = VERSIONS["google_ads"][version].end
    assert end is not None
    status = check_version("google_ads", version, end - timedelta(days=offset)).status
    expected = (
        VersionStatus.REFUSED
        if offset <= 0
        else VersionStatus.WARN
        if offset <= WARN_DAYS
        else VersionStatus.OK
    )
    assert status is expected
