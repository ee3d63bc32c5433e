"""Typed, validated configuration.

The config file is TOML. ``load_config`` reads it, checks every key and collects *every* error with
its key path before raising, so a user fixes a file in one pass. Each destination's settings are
parsed by its platform's schema (``sync.destination_settings``, which asks the registry). Secrets are
never in the file: a destination names an environment variable (``access_token_env``), and a literal
secret under a secret-looking key is refused.

The records it returns live in ``sync.config_records`` and are re-exported here, so callers import
everything from this module.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from audiencesync.connectors.contract import IDENTIFIER_KINDS, DestinationConfig
from audiencesync.sync.config_checks import (
    ConfigErrors,
    check_country,
    cron,
    env_name,
    one_of,
    parse_duration,
    text,
    whole_number,
)
from audiencesync.sync.config_records import (
    IN_FLOW_TAGS,
    MODES,
    STAGES,
    AudienceConfig,
    BreakerConfig,
    Config,
    IncrementalSettings,
    SourceConfig,
    SyncConfig,
    Target,
)
from audiencesync.sync.destination_settings import check_shared_audiences, parse_destinations
from audiencesync.sync.errors import ConfigError
from audiencesync.sync.sql_config import SQL_SOURCE_KEYS, check_sql_audience, parse_sql_source

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "IN_FLOW_TAGS",
    "MODES",
    "STAGES",
    "AudienceConfig",
    "BreakerConfig",
    "Config",
    "ConfigError",
    "IncrementalSettings",
    "SourceConfig",
    "SyncConfig",
    "Target",
    "check_country",
    "load_config",
    "parse_config",
    "parse_duration",
    "resolve_config_path",
]

DEFAULT_CONFIG_NAME = "audience-sync.toml"
CONFIG_ENV = "AUDIENCE_SYNC_CONFIG"

# The source keys that name a table or column; each must be text.
_SOURCE_NAME_KEYS = (
    "table",
    "id_column",
    "stage_column",
    "in_flow_column",
    "changed_at_column",
    "consent_column",
)
_SOURCE_KEYS = {
    "kind",
    "path",
    *_SOURCE_NAME_KEYS,
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
    errors = ConfigErrors(path)
    base = path.resolve().parent
    errors.unknown(raw, _TOP_KEYS, "")

    state_path = raw.get("state_path", "audience-sync.db")
    if not isinstance(state_path, str) or not state_path:
        errors.add("state_path", "must be a file path")
        state_path = "audience-sync.db"

    source = _parse_source(raw.get("source"), base, env, errors)
    audiences = _parse_audiences(raw.get("audiences"), source, errors)
    destinations = parse_destinations(
        raw.get("destinations"), base, env, errors, today or datetime.now(UTC).date()
    )
    syncs = _parse_syncs(raw.get("syncs"), audiences, destinations, errors)
    check_shared_audiences(syncs, destinations, errors)

    retention = raw.get("lag_retention_days", 30)
    if (msg := whole_number(1, 3650)(retention)) is not None:
        errors.add("lag_retention_days", msg)
    alerts = raw.get("alerts", {})
    if not isinstance(alerts, dict):
        errors.add("alerts", "must be a table")
        alerts = {}
    else:
        errors.unknown(alerts, _ALERT_KEYS, "alerts.")
        if "webhook_url_env" in alerts and (msg := env_name(alerts["webhook_url_env"])):
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


def _parse_source(raw: Any, base: Path, env: Mapping[str, str], errors: ConfigErrors) -> SourceConfig | None:
    if not isinstance(raw, dict):
        errors.add("source", "missing table [source]")
        return None
    errors.unknown(raw, _SOURCE_KEYS, "source.")
    kind = raw.get("kind", "sqlite")
    if (msg := one_of("sqlite", "csv", "jsonl", "parquet", "duckdb", "sql")(kind)) is not None:
        errors.add("source.kind", msg)
    path_value = raw.get("path")
    sql = parse_sql_source(raw, base, env, errors.add) if kind == "sql" else None
    if kind == "sql":
        path_value = path_value if isinstance(path_value, str) else ""
    elif not isinstance(path_value, str) or not path_value:
        errors.add("source.path", "required: the profile database or export file")
        path_value = ""
    for key in _SOURCE_NAME_KEYS:
        if key in raw and (msg := text(raw[key])) is not None:
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
        elif (msg := text(column)) is not None:
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


def _parse_incremental(raw: Mapping[str, Any], errors: ConfigErrors) -> IncrementalSettings | None:
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


def _parse_audiences(
    raw: Any, source: SourceConfig | None, errors: ConfigErrors
) -> dict[str, AudienceConfig]:
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
            if (msg := text(value)) is not None:
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


def _parse_syncs(
    raw: Any,
    audiences: Mapping[str, AudienceConfig],
    destinations: Mapping[str, DestinationConfig],
    errors: ConfigErrors,
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
        if (msg := one_of(*MODES)(mode)) is not None:
            errors.add(f"{prefix}.mode", msg)
        schedule = spec.get("schedule", "*/15 * * * *")
        if (msg := cron(schedule)) is not None:
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
        if count is not None and (msg := whole_number(0, 10**9)(count)) is not None:
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
