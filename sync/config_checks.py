"""What every part of config parsing shares: the error collector, and the checks of values that are
not any one platform's (country codes, environment variable names, endpoints, durations, cron).
The generic validators come from ``connectors.platform_spec``, where the platforms' settings use them
too."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiencesync.connectors.platform_spec import Validator, flag, matching, one_of, text, whole_number
from audiencesync.sync.errors import ConfigError
from audiencesync.sync.identity import ALPHA2, COUNTRY_NAMES
from audiencesync.sync.redact import looks_like_secret

__all__ = [
    "ConfigErrors",
    "Validator",
    "check_country",
    "cron",
    "endpoint",
    "env_name",
    "flag",
    "matching",
    "one_of",
    "parse_duration",
    "text",
    "whole_number",
]


class ConfigErrors:
    """Collects ``key.path: message`` lines, and the warnings that do not stop a run."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.items: list[str] = []
        self.warnings: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def unknown(self, table: Mapping[str, Any], allowed: set[str] | Mapping[str, Any], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                self.add(f"{prefix}{key}", "unknown key (check its spelling)")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.file, self.items)


def check_country(value: Any) -> str | None:
    """None for an ISO 3166-1 alpha-2 code the identity rules know (``UK`` too, which they read as
    GB), else what is wrong with it."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z]{2}", value):
        code = value.upper()
        if code in ALPHA2 or COUNTRY_NAMES.get(code.lower()) in ALPHA2:
            return None
    return f"{value!r} is not an ISO 3166-1 alpha-2 country code (such as US or GB)"


def env_name(value: Any) -> str | None:
    """None for the name of an environment variable; never repeats the value, which may be a token
    pasted in by mistake and must not reach the terminal."""
    if not isinstance(value, str) or looks_like_secret(value):
        return (
            "must name an environment variable (letters, digits, underscore), not hold a secret; "
            "the value looks like a token and is not shown"
        )
    return None


def endpoint(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a URL such as http://127.0.0.1:8801 or host:port"
    return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` or a mix (``"1h30m"``) to seconds."""
    cleaned = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(cleaned):
        if cleaned[pos : match.start()].strip():
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or cleaned[pos:].strip():
        raise ValueError(f"not a duration: {text!r} (use for example 90s, 15m, 2h, 7d)")
    return total


def cron(value: Any) -> str | None:
    # The daemon's own parser, so validate accepts exactly what the daemon schedules.
    if not isinstance(value, str) or len(value.split()) != 5:
        return "must be a 5-field cron expression such as '*/15 * * * *'"
    from audiencesync.sync.schedule import crontab_trigger

    try:
        crontab_trigger(value)
    except ValueError as exc:
        return f"is not a valid cron expression: {exc}"
    return None
