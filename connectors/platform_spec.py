"""What a platform folder declares as data, beside its connector: the settings a destination of it
takes (``SettingsSchema``), the normalization rules its identifiers follow (``IdentityProfile``), the
API versions it can speak and where its emulator listens. ``PlatformSpec`` (connectors.contract)
carries them; the engine reads them through ``connectors.registry`` and names no platform itself.

Validators are plain functions returning an error message or None, so a platform can write its own.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

Validator = Callable[[Any], str | None]
"""Returns what is wrong with a configured value, or None when it is fine."""


def text(value: Any) -> str | None:
    """A non-empty string."""
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def flag(value: Any) -> str | None:
    """A TOML boolean."""
    return None if isinstance(value, bool) else "must be true or false"


def one_of(*choices: str) -> Validator:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def whole_number(low: int, high: int) -> Validator:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be a whole number from {low} to {high}"

    return check


def matching(regex: str, hint: str) -> Validator:
    compiled = re.compile(regex)

    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and compiled.fullmatch(value) else hint

    return check


@dataclass(frozen=True)
class Setting:
    """One key of a destination's table. A key with ``secret`` names the environment variable that
    holds that secret (the connector finds its value under ``DestinationConfig.secrets[secret]``);
    the engine checks such a key is a variable's name, never a pasted token."""

    required: bool = False
    default: Any = None
    check: Validator | None = None
    secret: str | None = None
    secret_optional: bool = False
    """The variable may stay unset (the connector has a fallback, such as Google's ADC)."""
    secret_needed_when: tuple[str, Any] | None = None
    """``(key, value)``: the variable must be set only when that setting has that value."""
    secret_multiline: bool = False
    """The secret may hold whitespace inside (a path or a JSON document, not a token)."""
    relative_path: bool = False
    """A path, read relative to the config file's folder."""


@dataclass(frozen=True)
class VersionInfo:
    """One API version: its end date (None while unannounced) and where that date comes from."""

    end: date | None
    source: str


@dataclass(frozen=True)
class ApiVersions:
    """The versions of one API a platform can be pinned to (``api_version``), with their end dates."""

    table: str
    """Name of the table (``meta``, ``google_ads``): one platform may speak more than one API."""
    versions: Mapping[str, VersionInfo]
    default: str
    """The newest version the pinned SDK supports."""


class EmulatorTransport(enum.StrEnum):
    HTTP = "http"
    """The API and the admin surface (``/_emulator/state``) share one HTTP port."""
    GRPC = "grpc"
    """The API speaks gRPC; the admin surface has an HTTP port of its own."""


@dataclass(frozen=True)
class EmulatorDefaults:
    """Where ``audience-sync emulator <platform>`` listens unless told otherwise."""

    port: int
    admin_port: int | None = None
    """A separate HTTP admin port, for an emulator whose API port speaks gRPC."""
    transport: EmulatorTransport = EmulatorTransport.HTTP


DestinationCheck = Callable[[Mapping[str, Any]], list[tuple[str, str]]]
"""Checks across keys of one destination's settings: (key, message) for each problem."""


def _no_checks(_settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    return []


def _no_version(_settings: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class SettingsSchema:
    """A platform's destination settings: every key it takes, with defaults and checks, and what the
    engine needs to know of them (the account they push to, the API version they pin)."""

    keys: Mapping[str, Setting] = field(default_factory=dict)
    account_key: str | None = None
    """The key naming the ad account: audiences are found or created by name within it."""
    account_prefix: str = ""
    """A prefix that names the same account with or without it (Meta's ``act_``)."""
    checks: DestinationCheck = _no_checks
    api_versions: tuple[ApiVersions, ...] = ()
    version_table: Callable[[Mapping[str, Any]], str | None] = _no_version
    """Which of ``api_versions`` a destination's ``api_version`` is checked against, if any."""
    identity_from: str | None = None
    """A key naming the platform whose identity rules apply (a ``file`` destination's format)."""
    emulator: EmulatorDefaults | None = None

    def value(self, settings: Mapping[str, Any], key: str) -> Any:
        """``settings[key]``, or this schema's default for ``key`` when it is unset: the one place a
        connector finds a default, whether or not its settings went through config parsing."""
        value = settings.get(key)
        return self.keys[key].default if value is None else value


class Rule(enum.StrEnum):
    """The normalization rules ``audiencesync.sync.identity`` implements, one function each. A platform
    names the rule each identifier kind follows; the rules cite their sources there."""

    EMAIL = "email"
    """Trimmed and lowercased, nothing rewritten."""
    EMAIL_GMAIL_CANONICAL = "email_gmail_canonical"
    """As EMAIL, and on gmail.com/googlemail.com only, dots and a +tag dropped from the local part."""
    EMAIL_NO_PLUS_TAG = "email_no_plus_tag"
    """As EMAIL, and a +tag dropped from the local part on every domain; dots kept."""
    PHONE_E164 = "phone_e164"
    """E.164 with its ``+``."""
    PHONE_E164_DIGITS = "phone_e164_digits"
    """E.164 without the ``+``: country code and number, digits only."""
    NAME_LETTERS_ONLY = "name_letters_only"
    """Lowercase, NFC, punctuation and spaces dropped."""
    NAME_TRIMMED = "name_trimmed"
    """Lowercase, NFC, trimmed at the ends; inner spaces and punctuation kept."""
    CITY = "city"
    STATE = "state"
    """Letters only; US state names to their two-letter codes."""
    ZIP_US_FIVE = "zip_us_five"
    """Lowercase, spaces dropped; a US ZIP+4 cut to its five digits."""
    ZIP_TRIMMED = "zip_trimmed"
    COUNTRY_LOWER = "country_lower"
    """ISO 3166-1 alpha-2, lowercase."""
    COUNTRY_UPPER = "country_upper"
    DOB = "dob"
    """``YYYYMMDD`` from an ISO date."""
    DOB_SPLIT = "dob_split"
    """As DOB, sent as three values: ``doby``, ``dobm`` and ``dobd``."""
    GENDER = "gender"
    MAID = "maid"
    """A mobile advertising id: a UUID, lowercase."""
    EXTERNAL_ID = "external_id"


@dataclass(frozen=True)
class IdentityProfile:
    """How a platform wants each identifier kind it takes: the rule that normalizes it, and whether
    it is sent hashed."""

    rules: Mapping[str, Rule]
    """Canonical identifier kind (``connectors.contract.IDENTIFIER_KINDS``) -> its rule."""
    unhashed: frozenset[str] = frozenset()
    """Kinds sent normalized but not hashed (they are sealed at rest, never stored plain)."""

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.rules)
