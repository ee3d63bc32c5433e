"""Typed, validated configuration.

The config file is TOML. ``load_config`` reads it, checks every key against the tables below and
collects *every* error with its key path before raising, so a user fixes a file in one pass. Secrets
are never in the file: a destination names an environment variable (``access_token_env``), and a
literal secret under a secret-looking key is refused.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from audiencesync.connectors.contract import IDENTIFIER_KINDS, DestinationConfig, is_loopback
from audiencesync.connectors.registry import PLATFORMS as REGISTERED
from audiencesync.connectors.versions import DEFAULT_VERSIONS, check_version
from audiencesync.sync.errors import ConfigError
from audiencesync.sync.identity import ALPHA2, COUNTRY_NAMES
from audiencesync.sync.redact import looks_like_secret
from audiencesync.sync.sql_config import SQL_SOURCE_KEYS, SqlSettings, check_sql_audience, parse_sql_source

STAGES = (
    "new_subscriber",
    "engaged_subscriber",
    "unengaged_subscriber",
    "new_customer",
    "active_customer",
    "vip",
    "lapsed_customer",
)
IN_FLOW_TAGS = ("welcome", "added_to_cart", "abandoned_checkout", "post_purchase")
PLATFORMS = tuple(REGISTERED)
MODES = ("mirror", "add_only")
DEFAULT_CONFIG_NAME = "audience-sync.toml"
CONFIG_ENV = "AUDIENCE_SYNC_CONFIG"


@dataclass(frozen=True)
class SourceConfig:
    kind: str
    path: Path
    table: str
    id_column: str
    stage_column: str | None
    in_flow_column: str | None
    changed_at_column: str | None
    consent_column: str | None
    default_country: str | None
    identifiers: Mapping[str, str]
    """Identifier kind -> source column."""
    prehashed: frozenset[str]
    consent_granted_values: frozenset[str] = frozenset()
    """Extra consent values (lower case) that mean granted, beyond 1/true/yes/granted..."""
    consent_denied_values: frozenset[str] = frozenset()
    """Extra consent values (lower case) that mean denied, beyond 0/false/no/denied..."""
    sql: SqlSettings | None = None
    """For ``kind = "sql"``: where the database is and how to read it (audiencesync.sync.sql_source)."""
    incremental: IncrementalSettings | None = None
    """Plan from the rows changed since the last run (needs ``changed_at_column``); None: full plans."""


@dataclass(frozen=True)
class IncrementalSettings:
    """``[source] incremental = true``: read only rows whose ``changed_at_column`` is at or after the
    last committed plan's latest change time less ``margin_seconds`` (late commits, clock skew), and
    run a full reconciliation (which finds deleted rows) every ``full_every_seconds``."""

    margin_seconds: float = 300.0
    full_every_seconds: float = 86_400.0


@dataclass(frozen=True)
class AudienceConfig:
    """Who is in an audience: a SQL ``query``, or any of ``stage``, ``in_flow``, ``flag`` (a boolean
    column) and ``where`` (a SQL expression over the source's columns), all of which must hold."""

    name: str
    stage: str | None = None
    in_flow: str | None = None
    query: str | None = None
    description: str = ""
    flag: str | None = None
    where: str | None = None
    model: str | None = None
    """A dbt model whose relation (from the manifest) replaces ``[source] table`` for this audience."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Bound parameters of ``query`` (``:name`` in the SQL), for a ``sql`` source."""

    @property
    def is_in_flow(self) -> bool:
        return self.in_flow is not None


@dataclass(frozen=True)
class BreakerConfig:
    max_remove_share: float = 0.20
    max_remove_count: int | None = None


@dataclass(frozen=True)
class SyncConfig:
    audience: str
    destinations: tuple[str, ...]
    mode: str
    schedule: str
    max_lag_seconds: float | None
    breaker: BreakerConfig
    audience_ids: Mapping[str, str]


@dataclass(frozen=True)
class Target:
    """One audience on one destination: the unit that is planned, pushed and reported."""

    audience: AudienceConfig
    destination: DestinationConfig
    sync: SyncConfig

    @property
    def key(self) -> str:
        return f"{self.audience.name}@{self.destination.name}"

    @property
    def platform_audience_name(self) -> str:
        return f"{self.destination.name_prefix}{self.audience.name}"

    @property
    def pinned_audience_id(self) -> str | None:
        return self.sync.audience_ids.get(self.destination.name)


@dataclass(frozen=True)
class Config:
    path: Path
    state_path: Path
    source: SourceConfig
    audiences: Mapping[str, AudienceConfig]
    destinations: Mapping[str, DestinationConfig]
    syncs: tuple[SyncConfig, ...]
    lag_retention_days: int = 30
    alerts: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """``key.path: message`` lines that do not stop a run (an API version near its end date)."""

    def targets(self, only: str | None = None) -> list[Target]:
        """Every audience x destination pair, in config order. ``only`` keeps those whose audience,
        destination or target key equals it."""
        out: list[Target] = []
        for sync in self.syncs:
            for dest in sync.destinations:
                target = Target(self.audiences[sync.audience], self.destinations[dest], sync)
                if only in (None, target.key, sync.audience, dest):
                    out.append(target)
        return out


# --- key tables -------------------------------------------------------------------------------------
# A key spec is (required, default, validator). Validators return an error message or None.
Validator = Callable[[Any], str | None]


def _str(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _choice(*choices: str) -> Validator:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _int_range(low: int, high: int) -> Validator:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be a whole number from {low} to {high}"

    return check


def _pattern(regex: str, hint: str) -> Validator:
    compiled = re.compile(regex)

    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and compiled.fullmatch(value) else hint

    return check


def check_country(value: Any) -> str | None:
    """None for an ISO 3166-1 alpha-2 code the identity rules know (``UK`` too, which they read as
    GB), else what is wrong with it."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z]{2}", value):
        code = value.upper()
        if code in ALPHA2 or COUNTRY_NAMES.get(code.lower()) in ALPHA2:
            return None
    return f"{value!r} is not an ISO 3166-1 alpha-2 country code (such as US or GB)"


def _env_name(value: Any) -> str | None:
    # The message never repeats the value: a token pasted here must not reach the terminal.
    if not isinstance(value, str) or looks_like_secret(value):
        return (
            "must name an environment variable (letters, digits, underscore), not hold a secret; "
            "the value looks like a token and is not shown"
        )
    return None


def _endpoint(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a URL such as http://127.0.0.1:8801 or host:port"
    return None


_COMMON: dict[str, tuple[bool, Any, Validator]] = {
    "platform": (True, None, _choice(*PLATFORMS)),
    "name_prefix": (False, "audience-sync: ", _str),
    "endpoint": (False, None, _endpoint),
    "max_wait_seconds": (False, 300, _int_range(0, 86_400)),
}

PLATFORM_KEYS: dict[str, dict[str, tuple[bool, Any, Validator]]] = {
    "meta": {
        "ad_account_id": (True, None, _pattern(r"(act_)?\d{1,20}", "must be act_ followed by digits")),
        "access_token_env": (True, None, _env_name),
        "app_secret_env": (False, None, _env_name),
        "api_version": (False, DEFAULT_VERSIONS["meta"], _pattern(r"v\d+\.\d+", "must look like v26.0")),
        "customer_file_source": (
            False,
            "USER_PROVIDED_ONLY",
            _choice("USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED"),
        ),
    },
    "google": {
        "backend": (False, "data_manager", _choice("data_manager", "google_ads")),
        "customer_id": (True, None, _pattern(r"\d{10}", "must be 10 digits without dashes")),
        "login_customer_id": (False, None, _pattern(r"\d{10}", "must be 10 digits without dashes")),
        "credentials_env": (False, "GOOGLE_APPLICATION_CREDENTIALS", _env_name),
        "developer_token_env": (False, "GOOGLE_ADS_DEVELOPER_TOKEN", _env_name),
        "membership_life_span_days": (False, 540, _int_range(1, 540)),
        "refresh_margin_days": (False, 30, _int_range(0, 539)),
        # The advertiser's own attestation of Google's Customer Match terms, required for data_manager
        # (checked in _check_google); the connector sends ACCEPTED only with it.
        "accept_customer_match_terms": (False, None, _bool),
        "api_version": (False, DEFAULT_VERSIONS["google_ads"], _pattern(r"v\d+", "must look like v26")),
    },
    "tiktok": {
        "advertiser_id": (True, None, _pattern(r"\d{1,25}", "must be the numeric advertiser id")),
        "access_token_env": (True, None, _env_name),
        "batch_size": (False, 10_000, _int_range(1, 100_000)),
        "flow": (False, "segment", _choice("segment", "file")),
        "maid_type": (False, "GAID", _choice("IDFA", "GAID", "AAID")),
    },
    "file": {
        "directory": (True, None, _str),
        "format": (False, "meta", _choice("meta", "google", "tiktok")),
    },
}

# Which environment-variable keys hold secrets, and what the connector calls each.
SECRET_KEYS: dict[str, dict[str, str]] = {
    "meta": {"access_token_env": "access_token", "app_secret_env": "app_secret"},
    "google": {"credentials_env": "credentials", "developer_token_env": "developer_token"},
    "tiktok": {"access_token_env": "access_token"},
    "file": {},
}
# Secrets that may stay unset: Google falls back to application-default credentials.
OPTIONAL_SECRETS = {("google", "credentials_env"), ("meta", "app_secret_env")}
# A key whose name says "secret" and that holds a value directly is refused.
_SECRETISH = re.compile(r"(token|secret|password|api_key|credential)s?$", re.IGNORECASE)

# The key naming the ad account a destination pushes to. Audiences are found or created by name
# within that account, so two destinations on one account with one name_prefix share them.
ACCOUNT_KEYS = {"meta": "ad_account_id", "google": "customer_id", "tiktok": "advertiser_id"}

_SOURCE_KEYS = {
    "kind",
    "path",
    "table",
    "id_column",
    "stage_column",
    "in_flow_column",
    "changed_at_column",
    "consent_column",
    "default_country",
    "identifiers",
    "prehashed",
    "consent_granted_values",
    "consent_denied_values",
    "incremental",
    "incremental_margin",
    "full_reconcile_every",
    *SQL_SOURCE_KEYS,
}
_AUDIENCE_KEYS = {"stage", "in_flow", "flag", "where", "query", "description", "model", "params"}
_SYNC_KEYS = {
    "audience",
    "destinations",
    "mode",
    "schedule",
    "max_lag",
    "max_remove_share",
    "max_remove_count",
    "audience_ids",
}
_TOP_KEYS = {"state_path", "source", "audiences", "destinations", "syncs", "lag_retention_days", "alerts"}
_ALERT_KEYS = {"webhook_url_env", "drift_threshold", "hold_evaluations", "hold_seconds"}


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


def _cron(value: Any) -> str | None:
    # The daemon's own parser, so validate accepts exactly what the daemon schedules.
    if not isinstance(value, str) or len(value.split()) != 5:
        return "must be a 5-field cron expression such as '*/15 * * * *'"
    from audiencesync.sync.cron import crontab_trigger

    try:
        crontab_trigger(value)
    except ValueError as exc:
        return f"is not a valid cron expression: {exc}"
    return None


class _Errors:
    """Collects ``key.path: message`` lines."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.items: list[str] = []
        self.warnings: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def unknown(self, table: Mapping[str, Any], allowed: set[str] | dict[str, Any], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                self.add(f"{prefix}{key}", "unknown key (check its spelling)")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.file, self.items)


def resolve_config_path(given: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$AUDIENCE_SYNC_CONFIG``, else ``./audience-sync.toml``."""
    if given:
        return Path(given)
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else Path(DEFAULT_CONFIG_NAME)


def load_config(path: Path, environ: Mapping[str, str] | None = None, today: date | None = None) -> Config:
    """Read and validate ``path``; raise ``ConfigError`` listing every problem with its key path.
    ``today`` (default: the UTC date) is the date API versions are checked against."""
    env = os.environ if environ is None else environ
    if not path.is_file():
        raise ConfigError(path, ["file not found (pass --config or set AUDIENCE_SYNC_CONFIG)"])
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, ["not UTF-8 text"]) from None
    return parse_config(raw, path, env, today)


def parse_config(
    raw: Mapping[str, Any], path: Path, env: Mapping[str, str], today: date | None = None
) -> Config:
    errors = _Errors(path)
    base = path.resolve().parent
    errors.unknown(raw, _TOP_KEYS, "")

    state_path = raw.get("state_path", "audience-sync.db")
    if not isinstance(state_path, str) or not state_path:
        errors.add("state_path", "must be a file path")
        state_path = "audience-sync.db"

    source = _parse_source(raw.get("source"), base, env, errors)
    audiences = _parse_audiences(raw.get("audiences"), source, errors)
    destinations = _parse_destinations(
        raw.get("destinations"), base, env, errors, today or datetime.now(UTC).date()
    )
    syncs = _parse_syncs(raw.get("syncs"), audiences, destinations, errors)
    _check_shared_audiences(syncs, destinations, errors)

    retention = raw.get("lag_retention_days", 30)
    if (msg := _int_range(1, 3650)(retention)) is not None:
        errors.add("lag_retention_days", msg)
    alerts = raw.get("alerts", {})
    if not isinstance(alerts, dict):
        errors.add("alerts", "must be a table")
        alerts = {}
    else:
        errors.unknown(alerts, _ALERT_KEYS, "alerts.")
        if "webhook_url_env" in alerts and (msg := _env_name(alerts["webhook_url_env"])):
            errors.add("alerts.webhook_url_env", msg)
        hold = alerts.get("hold_evaluations", 1)
        if isinstance(hold, bool) or not isinstance(hold, int) or hold < 1:
            errors.add("alerts.hold_evaluations", "must be a whole number of evaluations, 1 or more")
        hold_s = alerts.get("hold_seconds", 0)
        if isinstance(hold_s, bool) or not isinstance(hold_s, int | float) or hold_s < 0:
            errors.add("alerts.hold_seconds", "must be a number of seconds, 0 or more")

    errors.raise_if_any()
    assert source is not None
    return Config(
        path=path,
        state_path=(base / state_path),
        source=source,
        audiences=audiences,
        destinations=destinations,
        syncs=tuple(syncs),
        lag_retention_days=int(retention),
        alerts=alerts,
        warnings=tuple(errors.warnings),
    )


def _parse_source(raw: Any, base: Path, env: Mapping[str, str], errors: _Errors) -> SourceConfig | None:
    if not isinstance(raw, dict):
        errors.add("source", "missing table [source]")
        return None
    errors.unknown(raw, _SOURCE_KEYS, "source.")
    kind = raw.get("kind", "sqlite")
    if (msg := _choice("sqlite", "csv", "jsonl", "sql")(kind)) is not None:
        errors.add("source.kind", msg)
    path_value = raw.get("path")
    sql = parse_sql_source(raw, base, env, errors.add) if kind == "sql" else None
    if kind == "sql":
        path_value = path_value if isinstance(path_value, str) else ""
    elif not isinstance(path_value, str) or not path_value:
        errors.add("source.path", "required: the profile database or export file")
        path_value = ""
    for key in (
        "table",
        "id_column",
        "stage_column",
        "in_flow_column",
        "changed_at_column",
        "consent_column",
    ):
        if key in raw and (msg := _str(raw[key])) is not None:
            errors.add(f"source.{key}", msg)
    country = raw.get("default_country")
    if country is not None and (msg := check_country(country)) is not None:
        errors.add("source.default_country", msg)
        country = None
    identifiers = raw.get("identifiers", {})
    if not isinstance(identifiers, dict) or not identifiers:
        errors.add("source.identifiers", "must map at least one identifier kind to a column")
        identifiers = {}
    for kind_name, column in identifiers.items():
        if kind_name not in IDENTIFIER_KINDS:
            errors.add(
                f"source.identifiers.{kind_name}",
                f"unknown identifier kind (one of {', '.join(IDENTIFIER_KINDS)})",
            )
        elif (msg := _str(column)) is not None:
            errors.add(f"source.identifiers.{kind_name}", msg)
    prehashed = raw.get("prehashed", [])
    if not isinstance(prehashed, list) or any(p not in identifiers for p in prehashed):
        errors.add("source.prehashed", "must list identifier kinds configured under [source.identifiers]")
        prehashed = []
    vocab: dict[str, frozenset[str]] = {}
    for key in ("consent_granted_values", "consent_denied_values"):
        values = raw.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str | int) for v in values):
            errors.add(f"source.{key}", 'must list the consent values, such as ["opted_out"]')
            values = []
        vocab[key] = frozenset(str(v).strip().lower() for v in values)
    if both := vocab["consent_granted_values"] & vocab["consent_denied_values"]:
        errors.add("source.consent_denied_values", f"also listed as granted: {', '.join(sorted(both))}")
    incremental = _parse_incremental(raw, errors)
    return SourceConfig(
        incremental=incremental,
        kind=str(kind),
        path=base / path_value,
        table=str(raw.get("table", "profiles")),
        id_column=str(raw.get("id_column", "profile_id")),
        stage_column=raw.get("stage_column"),
        in_flow_column=raw.get("in_flow_column"),
        changed_at_column=raw.get("changed_at_column"),
        consent_column=raw.get("consent_column"),
        default_country=country.upper() if isinstance(country, str) else None,
        identifiers={k: str(v) for k, v in identifiers.items() if k in IDENTIFIER_KINDS},
        prehashed=frozenset(prehashed),
        consent_granted_values=vocab["consent_granted_values"],
        consent_denied_values=vocab["consent_denied_values"],
        sql=sql,
    )


def _parse_incremental(raw: Mapping[str, Any], errors: _Errors) -> IncrementalSettings | None:
    on = raw.get("incremental", False)
    if not isinstance(on, bool):
        errors.add("source.incremental", "must be true or false")
        return None
    durations: dict[str, float] = {}
    for key, default in (("incremental_margin", 300.0), ("full_reconcile_every", 86_400.0)):
        durations[key] = default
        if key in raw:
            if not on:
                errors.add(f"source.{key}", "applies only with incremental = true")
                continue
            try:
                durations[key] = parse_duration(str(raw[key]))
            except ValueError as exc:
                errors.add(f"source.{key}", str(exc))
    if not on:
        return None
    if not raw.get("changed_at_column"):
        errors.add("source.incremental", "needs changed_at_column: the column saying when a row last changed")
        return None
    return IncrementalSettings(durations["incremental_margin"], durations["full_reconcile_every"])


def _parse_audiences(raw: Any, source: SourceConfig | None, errors: _Errors) -> dict[str, AudienceConfig]:
    if not isinstance(raw, dict) or not raw:
        errors.add("audiences", "define at least one [audiences.NAME]")
        return {}
    out: dict[str, AudienceConfig] = {}
    for name, spec in raw.items():
        prefix = f"audiences.{name}"
        if not isinstance(spec, dict):
            errors.add(prefix, "must be a table")
            continue
        errors.unknown(spec, _AUDIENCE_KEYS, prefix + ".")
        stage, in_flow, query = spec.get("stage"), spec.get("in_flow"), spec.get("query")
        flag, where = spec.get("flag"), spec.get("where")
        # Stages and in-flow tags are whatever the source holds: `validate` checks the values
        # against the source itself, not against a built-in list.
        for key, value, column in (
            ("stage", stage, "stage_column"),
            ("in_flow", in_flow, "in_flow_column"),
            ("flag", flag, None),
            ("where", where, None),
        ):
            if value is None:
                continue
            if (msg := _str(value)) is not None:
                errors.add(f"{prefix}.{key}", msg)
            elif column and source is not None and getattr(source, column) is None:
                errors.add(f"{prefix}.{key}", f"needs source.{column} to say which column holds it")
        filters = [
            k for k, v in (("stage", stage), ("in_flow", in_flow), ("flag", flag), ("where", where)) if v
        ]
        if query is not None:
            if not isinstance(query, str) or not query.strip():
                errors.add(f"{prefix}.query", "must be a SQL SELECT")
            elif filters:
                errors.add(f"{prefix}.query", f"use either query or {'/'.join(filters)}, not both")
        elif not filters and spec.get("model") is None:
            errors.add(prefix, "needs stage, in_flow, flag or where (any together), a dbt model, or query")
        for key, msg in check_sql_audience(spec, source.kind if source else None):
            errors.add(f"{prefix}.{key}", msg)
        description = spec.get("description", "")
        out[name] = AudienceConfig(
            name=name,
            stage=stage if isinstance(stage, str) else None,
            in_flow=in_flow if isinstance(in_flow, str) else None,
            query=query if isinstance(query, str) else None,
            description=description if isinstance(description, str) else "",
            flag=flag if isinstance(flag, str) else None,
            where=where if isinstance(where, str) else None,
            model=spec["model"] if isinstance(spec.get("model"), str) else None,
            params=spec["params"] if isinstance(spec.get("params"), dict) else {},
        )
    return out


def _parse_destinations(
    raw: Any, base: Path, env: Mapping[str, str], errors: _Errors, today: date
) -> dict[str, DestinationConfig]:
    if not isinstance(raw, dict) or not raw:
        errors.add("destinations", "define at least one [destinations.NAME]")
        return {}
    out: dict[str, DestinationConfig] = {}
    for name, spec in raw.items():
        prefix = f"destinations.{name}"
        if not isinstance(spec, dict):
            errors.add(prefix, "must be a table")
            continue
        platform = spec.get("platform")
        if platform not in PLATFORMS:
            errors.add(f"{prefix}.platform", f"required, one of {', '.join(PLATFORMS)}")
            continue
        table = {**_COMMON, **PLATFORM_KEYS[platform]}
        settings: dict[str, Any] = {}
        for key, value in spec.items():
            if key not in table:
                if _SECRETISH.search(key):
                    errors.add(
                        f"{prefix}.{key}",
                        "secrets are never read from the config file: put the value in an environment "
                        f"variable and name it with {key}_env",
                    )
                else:
                    errors.add(f"{prefix}.{key}", f"unknown key for platform {platform}")
                continue
            if (msg := table[key][2](value)) is not None:
                errors.add(f"{prefix}.{key}", msg)
        for key, (required, default, _check) in table.items():
            if key in spec:
                settings[key] = spec[key]
            elif required:
                errors.add(f"{prefix}.{key}", "required")
            elif default is not None:
                settings[key] = default
        endpoint = settings.get("endpoint")
        emulated = isinstance(endpoint, str) and is_loopback(endpoint)
        secrets: dict[str, str] = {}
        for env_key, secret_name in SECRET_KEYS[platform].items():
            var = settings.get(env_key)
            if not isinstance(var, str):
                continue
            # A token read from a file (``export X=$(cat token.txt)``) often ends in a newline: the
            # ends are trimmed; whitespace inside is a pasting error, refused by name, never shown.
            value = (env.get(var) or "").strip()
            if value and secret_name != "credentials" and any(c.isspace() or ord(c) < 32 for c in value):
                errors.add(
                    f"{prefix}.{env_key}",
                    f"environment variable {var} holds whitespace or control characters inside the "
                    "token (the value is not shown); set it to the token alone",
                )
            elif value:
                secrets[secret_name] = value
            elif not emulated and (platform, env_key) not in OPTIONAL_SECRETS:
                if (
                    platform == "google"
                    and env_key == "developer_token_env"
                    and (settings.get("backend") != "google_ads")
                ):
                    continue
                errors.add(f"{prefix}.{env_key}", f"environment variable {var} is not set")
        if platform == "google":
            _check_google(prefix, settings, errors)
        _check_api_version(prefix, platform, settings, today, errors)
        if platform == "file" and isinstance(settings.get("directory"), str):
            settings["directory"] = str(base / settings["directory"])
        out[name] = DestinationConfig(
            name=name,
            platform=platform,
            settings=settings,
            secrets=secrets,
            name_prefix=str(settings.get("name_prefix", "audience-sync: ")),
            base_dir=base,
        )
    return out


CUSTOMER_MATCH_POLICY = "https://support.google.com/adspolicy/answer/6299717"


def _check_google(prefix: str, settings: Mapping[str, Any], errors: _Errors) -> None:
    """The data_manager backend needs the advertiser's explicit acceptance of the Customer Match terms:
    Data Manager takes UserData only with terms_of_service ACCEPTED (proto
    google/ads/datamanager_v1/types/terms_of_service.py), and that status is the advertiser's legal
    attestation, never ours to give."""
    if settings.get("backend") != "google_ads" and settings.get("accept_customer_match_terms") is not True:
        errors.add(
            f"{prefix}.accept_customer_match_terms",
            "required for the data_manager backend: set it to true only if the advertiser accepts "
            f"Google's Customer Match policy ({CUSTOMER_MATCH_POLICY}); uploads declare that acceptance",
        )


def _check_api_version(
    prefix: str, platform: str, settings: Mapping[str, Any], today: date, errors: _Errors
) -> None:
    """A version past its published end date is refused, one within 90 days of it is a warning
    (the dates and their sources: connectors/versions.py). Only Meta and Google's google_ads backend
    name a version; Data Manager and TikTok have none to choose."""
    table = {"meta": "meta", "google": "google_ads" if settings.get("backend") == "google_ads" else None}
    versioned = table.get(platform)
    version = settings.get("api_version")
    if versioned is None or not isinstance(version, str):
        return
    check = check_version(versioned, version, today)
    if check.refused:
        errors.add(f"{prefix}.api_version", check.message)
    elif not check.ok:
        errors.warnings.append(f"{prefix}.api_version: {check.message}")


def _parse_syncs(
    raw: Any,
    audiences: Mapping[str, AudienceConfig],
    destinations: Mapping[str, DestinationConfig],
    errors: _Errors,
) -> list[SyncConfig]:
    if not isinstance(raw, list) or not raw:
        errors.add("syncs", "define at least one [[syncs]] entry")
        return []
    out: list[SyncConfig] = []
    seen: set[tuple[str, str]] = set()
    for i, spec in enumerate(raw):
        prefix = f"syncs[{i}]"
        if not isinstance(spec, dict):
            errors.add(prefix, "must be a table")
            continue
        errors.unknown(spec, _SYNC_KEYS, prefix + ".")
        audience = spec.get("audience")
        if audience not in audiences:
            errors.add(f"{prefix}.audience", f"names no [audiences.{audience}]")
        dests = spec.get("destinations")
        if not isinstance(dests, list) or not dests:
            errors.add(f"{prefix}.destinations", "must list at least one destination name")
            dests = []
        for d in dests:
            if d not in destinations:
                errors.add(f"{prefix}.destinations", f"names no [destinations.{d}]")
            elif (str(audience), d) in seen:
                errors.add(f"{prefix}.destinations", f"{audience} is already synced to {d}")
            seen.add((str(audience), str(d)))
        mode = spec.get("mode", "mirror")
        if (msg := _choice(*MODES)(mode)) is not None:
            errors.add(f"{prefix}.mode", msg)
        schedule = spec.get("schedule", "*/15 * * * *")
        if (msg := _cron(schedule)) is not None:
            errors.add(f"{prefix}.schedule", msg)
        max_lag: float | None = None
        if "max_lag" in spec:
            try:
                max_lag = parse_duration(str(spec["max_lag"]))
            except ValueError as exc:
                errors.add(f"{prefix}.max_lag", str(exc))
        share = spec.get("max_remove_share", 0.20)
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
            errors.add(f"{prefix}.max_remove_share", "must be a fraction from 0 to 1, such as 0.2")
            share = 0.20
        count = spec.get("max_remove_count")
        if count is not None and (msg := _int_range(0, 10**9)(count)) is not None:
            errors.add(f"{prefix}.max_remove_count", msg)
            count = None
        ids = spec.get("audience_ids", {})
        if not isinstance(ids, dict):
            errors.add(f"{prefix}.audience_ids", "must map destination names to platform audience ids")
            ids = {}
        for d, value in ids.items():
            if d not in dests:
                errors.add(f"{prefix}.audience_ids.{d}", "is not one of this sync's destinations")
            elif not isinstance(value, str | int):
                errors.add(f"{prefix}.audience_ids.{d}", "must be the platform audience id")
        out.append(
            SyncConfig(
                audience=str(audience),
                destinations=tuple(str(d) for d in dests),
                mode=str(mode),
                schedule=str(schedule),
                max_lag_seconds=max_lag,
                breaker=BreakerConfig(float(share), count),
                audience_ids={str(k): str(v) for k, v in ids.items()},
            )
        )
    return out


def _account(dest: DestinationConfig) -> tuple[str, str, str | None] | None:
    """The ad account ``dest`` pushes to (platform, account id, endpoint); None for files."""
    key = ACCOUNT_KEYS.get(dest.platform)
    if key is None or key not in dest.settings:
        return None
    account = str(dest.settings[key])
    if dest.platform == "meta":
        account = account.removeprefix("act_")
    return dest.platform, account, dest.endpoint


def _check_shared_audiences(
    syncs: list[SyncConfig], destinations: Mapping[str, DestinationConfig], errors: _Errors
) -> None:
    """Refuse two sync targets that would find or create one platform audience by the same name in
    the same account: each would treat it as its own (a mirror target removes what an add_only
    target keeps; both upload every member). Audiences pinned with ``audience_ids`` are left alone:
    sharing one that way is a choice."""
    first: dict[tuple[tuple[str, str, str | None], str], str] = {}
    for sync in syncs:
        for d in sync.destinations:
            dest = destinations.get(d)
            account = _account(dest) if dest is not None else None
            if dest is None or account is None or d in sync.audience_ids:
                continue
            name = f"{dest.name_prefix}{sync.audience}"
            other = first.setdefault((account, name), d)
            if other != d:
                errors.add(
                    f"destinations.{d}",
                    f"{sync.audience}@{d} and {sync.audience}@{other} would share the {dest.platform} "
                    f"audience {name!r}: destinations {other} and {d} have the same "
                    f"{ACCOUNT_KEYS[dest.platform]} and name_prefix. Give one its own name_prefix "
                    "(or pin both to one audience with audience_ids, if sharing it is meant)",
                )
