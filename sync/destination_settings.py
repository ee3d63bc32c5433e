"""Each ``[destinations.NAME]`` table, parsed by its platform's settings schema.

The engine names no platform here: ``connectors.registry.PLATFORMS`` says which platforms exist, and
each one's ``SettingsSchema`` (in its folder) says which keys it takes, their defaults and checks,
which keys name secrets, which account it pushes to and which API version table applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from audiencesync.connectors.contract import DestinationConfig, is_loopback
from audiencesync.connectors.platform_spec import Setting, SettingsSchema
from audiencesync.connectors.registry import PLATFORMS as REGISTERED
from audiencesync.connectors.retry import DEFAULT_MAX_WAIT_SECONDS
from audiencesync.connectors.versions import check_version
from audiencesync.sync.config_checks import ConfigErrors, endpoint, env_name, text, whole_number
from audiencesync.sync.config_records import SyncConfig

DEFAULT_NAME_PREFIX = "audience-sync: "

# The keys every destination takes, whatever its platform.
COMMON_KEYS: dict[str, Setting] = {
    "platform": Setting(required=True),
    "name_prefix": Setting(default=DEFAULT_NAME_PREFIX, check=text),
    "endpoint": Setting(check=endpoint),
    "max_wait_seconds": Setting(default=DEFAULT_MAX_WAIT_SECONDS, check=whole_number(0, 86_400)),
}
# A key whose name says "secret" and that holds a value directly is refused.
_SECRETISH = re.compile(r"(token|secret|password|api_key|credential)s?$", re.IGNORECASE)


def _schema(platform: str) -> SettingsSchema:
    return REGISTERED[platform].settings


def parse_destinations(
    raw: Any, base: Path, env: Mapping[str, str], errors: ConfigErrors, today: date
) -> dict[str, DestinationConfig]:
    """Every destination of ``raw`` (the ``destinations`` table), checked against its platform's
    schema; problems go to ``errors`` with their key paths."""
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
        if platform not in REGISTERED:
            errors.add(f"{prefix}.platform", f"required, one of {', '.join(REGISTERED)}")
            continue
        out[name] = _parse_destination(name, str(platform), spec, base, env, errors, today)
    return out


def _parse_destination(
    name: str,
    platform: str,
    spec: Mapping[str, Any],
    base: Path,
    env: Mapping[str, str],
    errors: ConfigErrors,
    today: date,
) -> DestinationConfig:
    prefix = f"destinations.{name}"
    schema = _schema(platform)
    table = {**COMMON_KEYS, **schema.keys}
    settings: dict[str, Any] = {}
    for key, value in spec.items():
        setting = table.get(key)
        if setting is None:
            if _SECRETISH.search(key):
                errors.add(
                    f"{prefix}.{key}",
                    "secrets are never read from the config file: put the value in an environment "
                    f"variable and name it with {key}_env",
                )
            else:
                errors.add(f"{prefix}.{key}", f"unknown key for platform {platform}")
            continue
        check = env_name if setting.secret is not None else setting.check
        if check is not None and (msg := check(value)) is not None:
            errors.add(f"{prefix}.{key}", msg)
    for key, setting in table.items():
        if key in spec:
            settings[key] = spec[key]
        elif setting.required:
            errors.add(f"{prefix}.{key}", "required")
        elif setting.default is not None:
            settings[key] = setting.default
    secrets = _read_secrets(prefix, schema, settings, env, errors)
    for key, message in schema.checks(settings):
        errors.add(f"{prefix}.{key}", message)
    _check_api_version(prefix, schema, settings, today, errors)
    for key, setting in schema.keys.items():
        if setting.relative_path and isinstance(settings.get(key), str):
            settings[key] = str(base / settings[key])
    return DestinationConfig(
        name=name,
        platform=platform,
        settings=settings,
        secrets=secrets,
        name_prefix=str(settings.get("name_prefix", DEFAULT_NAME_PREFIX)),
        base_dir=base,
    )


def _read_secrets(
    prefix: str,
    schema: SettingsSchema,
    settings: Mapping[str, Any],
    env: Mapping[str, str],
    errors: ConfigErrors,
) -> dict[str, str]:
    """The secrets the schema's ``*_env`` keys name, read from ``env``. An unset variable is an error
    unless the destination is an emulator on loopback or the schema says the secret may stay unset."""
    endpoint_value = settings.get("endpoint")
    emulated = isinstance(endpoint_value, str) and is_loopback(endpoint_value)
    secrets: dict[str, str] = {}
    for env_key, setting in schema.keys.items():
        var = settings.get(env_key)
        if setting.secret is None or not isinstance(var, str):
            continue
        # A token read from a file (``export X=$(cat token.txt)``) often ends in a newline: the
        # ends are trimmed; whitespace inside is a pasting error, refused by name, never shown.
        value = (env.get(var) or "").strip()
        if value and not setting.secret_multiline and any(c.isspace() or ord(c) < 32 for c in value):
            errors.add(
                f"{prefix}.{env_key}",
                f"environment variable {var} holds whitespace or control characters inside the "
                "token (the value is not shown); set it to the token alone",
            )
        elif value:
            secrets[setting.secret] = value
        elif not emulated and _secret_needed(setting, settings):
            errors.add(f"{prefix}.{env_key}", f"environment variable {var} is not set")
    return secrets


def _secret_needed(setting: Setting, settings: Mapping[str, Any]) -> bool:
    if setting.secret_optional:
        return False
    if setting.secret_needed_when is not None:
        key, value = setting.secret_needed_when
        return bool(settings.get(key) == value)
    return True


def _check_api_version(
    prefix: str, schema: SettingsSchema, settings: Mapping[str, Any], today: date, errors: ConfigErrors
) -> None:
    """A version past its published end date is refused, one within 90 days of it is a warning
    (the dates and their sources: each platform's settings). A platform, or a backend of one, with
    no version to choose has no table."""
    table = schema.version_table(settings)
    version = settings.get("api_version")
    if table is None or not isinstance(version, str):
        return
    check = check_version(table, version, today)
    if check.refused:
        errors.add(f"{prefix}.api_version", check.message)
    elif not check.ok:
        errors.warnings.append(f"{prefix}.api_version: {check.message}")


def account_of(dest: DestinationConfig) -> tuple[str, str, str | None] | None:
    """The ad account ``dest`` pushes to (platform, account id, endpoint); None for a platform
    without accounts (files)."""
    schema = _schema(dest.platform)
    key = schema.account_key
    if key is None or key not in dest.settings:
        return None
    account = str(dest.settings[key]).removeprefix(schema.account_prefix)
    return dest.platform, account, dest.endpoint


def check_shared_audiences(
    syncs: Iterable[SyncConfig], destinations: Mapping[str, DestinationConfig], errors: ConfigErrors
) -> None:
    """Refuse two sync targets that would find or create one platform audience by the same name in
    the same account: each would treat it as its own (a mirror target removes what an add_only
    target keeps; both upload every member). Audiences pinned with ``audience_ids`` are left alone:
    sharing one that way is a choice."""
    first: dict[tuple[tuple[str, str, str | None], str], str] = {}
    for sync in syncs:
        for d in sync.destinations:
            dest = destinations.get(d)
            account = account_of(dest) if dest is not None else None
            if dest is None or account is None or d in sync.audience_ids:
                continue
            name = f"{dest.name_prefix}{sync.audience}"
            other = first.setdefault((account, name), d)
            if other != d:
                errors.add(
                    f"destinations.{d}",
                    f"{sync.audience}@{d} and {sync.audience}@{other} would share the {dest.platform} "
                    f"audience {name!r}: destinations {other} and {d} have the same "
                    f"{_schema(dest.platform).account_key} and name_prefix. Give one its own name_prefix "
                    "(or pin both to one audience with audience_ids, if sharing it is meant)",
                )
