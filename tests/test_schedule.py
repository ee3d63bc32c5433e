"""One crontab parser for ``validate`` and the daemon: what one accepts the other schedules, with
crontab's day-of-week numbering (0 and 7 are Sunday)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from audiencesync.sync.config import load_config
from audiencesync.sync.errors import InputError
from audiencesync.sync.schedule import crontab_trigger
from sample_configs import WriteConfig

WEDNESDAY = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

SYNC_ON = """
[destinations.files]
platform = "file"
directory = "exports"

[[syncs]]
audience = "vip"
destinations = ["files"]
schedule = "{schedule}"
"""


def next_fire(expr: str) -> datetime:
    fire = crontab_trigger(expr).get_next_fire_time(None, WEDNESDAY)
    assert fire is not None
    return fire


@pytest.mark.parametrize("sunday", ["0", "7", "sun"])
def test_sunday_is_0_7_or_sun_in_both_validate_and_the_daemon(sunday: str, write_config: WriteConfig) -> None:
    load_config(write_config(SYNC_ON.format(schedule=f"0 9 * * {sunday}")))  # validate accepts it
    assert next_fire(f"0 9 * * {sunday}") == datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def test_weekday_ranges_follow_crontab_not_apschedulers_monday_zero() -> None:
    assert next_fire("0 9 * * 1-5") == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)  # Thursday
    assert next_fire("0 9 * * 1").weekday() == 0  # Monday


@pytest.mark.parametrize("bad", ["0 9 * * 8", "61 * * * *", "0 9 * *"])
def test_what_the_daemon_cannot_schedule_validate_refuses(bad: str, write_config: WriteConfig) -> None:
    with pytest.raises(ValueError):
        crontab_trigger(bad)
    with pytest.raises(InputError, match=r"syncs\[0\]\.schedule"):
        load_config(write_config(SYNC_ON.format(schedule=bad)))
