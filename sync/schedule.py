"""When things run: the one crontab parser and the daemon's schedule.

``validate`` checks a ``[[syncs]].schedule`` with ``crontab_trigger`` and the daemon schedules with it,
so both accept and mean the same expressions. The daemon's jobs (one per target, and the follow step
between runs) get their triggers and their overlap rules here.

Test and operations hook: ``AUDIENCE_SYNC_TICK_SECONDS=N`` runs every target every N seconds instead
of on its cron schedule (cron has no seconds field); for tests and for catching up by hand.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from audiencesync.sync.errors import InputError

TICK_ENV = "AUDIENCE_SYNC_TICK_SECONDS"

# APScheduler 3 numbers days from Monday = 0; crontab(5) from Sunday = 0, with 7 also Sunday. Numbers
# are spelled as names before APScheduler sees them, so "1-5" is Monday to Friday as in crontab.
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DOW_NUMBER = re.compile(r"(?<![/\d])\d+")


def crontab_trigger(expr: str, jitter: int | None = None) -> CronTrigger:
    """A trigger for a standard 5-field crontab (day of week 0 and 7 are Sunday). Raises
    ``ValueError`` naming what is wrong."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r} has {len(fields)} fields, a crontab has 5")
    dow = fields[4]
    for number in _DOW_NUMBER.findall(dow):
        if int(number) > 7:
            raise ValueError(f"day of week {number} is out of range (0-7, 0 and 7 are Sunday)")
    fields[4] = _DOW_NUMBER.sub(lambda m: _CRON_DAYS[int(m.group())], dow)
    trigger = CronTrigger.from_crontab(" ".join(fields))
    trigger.jitter = jitter or None
    return trigger


def tick_from_env(environ: Mapping[str, str] | None = None) -> float | None:
    """``$AUDIENCE_SYNC_TICK_SECONDS`` as seconds, or None when unset. Raises ``InputError`` for a
    value that is not a positive number."""
    value = (os.environ if environ is None else environ).get(TICK_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise InputError(f"${TICK_ENV}: {value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise InputError(f"${TICK_ENV}: must be more than 0 seconds")
    return seconds


@dataclass(frozen=True)
class DaemonSchedule:
    """How the daemon's jobs fire."""

    jitter_seconds: int = 30
    """Each run fires up to this many seconds after its cron time, at random, so targets that share
    a schedule do not fire at once."""
    misfire_grace_seconds: int = 600
    """A run missed by less than this (the machine slept, a long run held the slot) still runs once."""
    tick_seconds: float | None = None
    """Every target every N seconds, ignoring the schedules (from $AUDIENCE_SYNC_TICK_SECONDS)."""

    def job_defaults(self) -> dict[str, Any]:
        """Missed runs are coalesced into one, and a job never overlaps itself."""
        return {"coalesce": True, "max_instances": 1, "misfire_grace_time": self.misfire_grace_seconds}

    def target_trigger(self, cron: str) -> BaseTrigger:
        """The trigger of one target's runs: its crontab, or the tick when one is set."""
        jitter = self.jitter_seconds or None
        if self.tick_seconds is not None:
            return IntervalTrigger(seconds=self.tick_seconds, jitter=jitter)
        return crontab_trigger(cron, jitter)

    @staticmethod
    def follow_trigger(interval_seconds: float) -> BaseTrigger:
        """The trigger of the follow step between runs."""
        return IntervalTrigger(seconds=interval_seconds)
