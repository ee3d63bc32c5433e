"""The one crontab parser: ``validate`` checks a schedule with it and the daemon schedules with it, so
both accept and mean the same expressions."""

from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger

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
