"""What ``validate`` says about the API versions destinations are configured with: a warning within
90 days of a version's published end date, a refusal once it has passed (``connectors.versions``
holds the table and its sources)."""

from __future__ import annotations

from datetime import date

from audiencesync.connectors.versions import DEFAULT_VERSIONS, check_version
from audiencesync.sync.config import Config
from audiencesync.sync.errors import ConfigError

VERSION_KEYS: dict[str, str] = {"meta": "api_version"}
"""The destination key that holds each platform's API version."""


def check_versions(config: Config, today: date) -> list[str]:
    """Warnings (``key.path: message``) for versions near their end; raise ``ConfigError`` naming
    every destination whose version has ended."""
    warnings: list[str] = []
    refused: list[str] = []
    for dest in config.destinations.values():
        key = VERSION_KEYS.get(dest.platform)
        if key is None:
            continue
        version = str(dest.settings.get(key) or DEFAULT_VERSIONS[dest.platform])
        check = check_version(dest.platform, version, today)
        where = f"destinations.{dest.name}.{key}"
        if check.refused:
            refused.append(f"{where}: {check.message}")
        elif not check.ok:
            warnings.append(f"{where}: {check.message}")
    if refused:
        raise ConfigError(config.path, refused)
    return warnings
