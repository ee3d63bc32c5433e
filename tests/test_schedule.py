"""When things run: one crontab parser for ``validate`` and the daemon (what one accepts the other
schedules, with crontab's day-of-week numbering: 0 and 7 are Sunday), and the daemon's schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from audiencesync.sync.config import load_config
from audiencesync.sync.errors import InputError
from audiencesync.sync.schedule import TICK_ENV, DaemonSchedule, crontab_trigger, tick_from_env
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


@pytest.mark.parametrize(("value", "seconds"), [("", None), ("  ", None), ("2", 2.0), ("0.5", 0.5)])
def test_the_tick_hook_is_a_positive_number_of_seconds_or_unset(value: str, seconds: float | None) -> None:
    assert tick_from_env({TICK_ENV: value}) == seconds
    assert tick_from_env({}) is None


@pytest.mark.parametrize("bad", ["soon", "0", "-3"])
def test_a_tick_that_is_not_a_positive_number_is_bad_input_naming_the_variable(bad: str) -> None:
    with pytest.raises(InputError, match=TICK_ENV):
        tick_from_env({TICK_ENV: bad})


def test_a_target_fires_on_its_crontab_unless_the_tick_is_set() -> None:
    cron = DaemonSchedule(jitter_seconds=0).target_trigger("0 9 * * 1-5")
    assert cron.get_next_fire_time(None, WEDNESDAY) == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    ticking = DaemonSchedule(jitter_seconds=0, tick_seconds=5).target_trigger("0 9 * * 1-5")
    first = ticking.get_next_fire_time(None, datetime.now(UTC))
    assert first is not None
    assert ticking.get_next_fire_time(first, first) == first + timedelta(seconds=5)


def test_missed_runs_run_once_within_the_grace_and_a_job_never_overlaps_itself() -> None:
    defaults = DaemonSchedule(misfire_grace_seconds=120).job_defaults()
    assert defaults == {"coalesce": True, "max_instances": 1, "misfire_grace_time": 120}
