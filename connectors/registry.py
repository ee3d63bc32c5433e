"""The platforms this tool syncs to: name -> ``PlatformSpec``. A new platform is one folder under
``connectors/`` (its settings, identity profile, connector, payloads, emulator and ``SPEC``) and one
line here. Connector modules are imported only when a destination uses them: a user who only syncs
to Meta never pays for importing the Google clients."""

from __future__ import annotations

import importlib

from audiencesync.connectors import file, google, meta, tiktok
from audiencesync.connectors.contract import Connector, DestinationConfig, PlatformSpec

PLATFORMS: dict[str, PlatformSpec] = {
    spec.name: spec for spec in (meta.SPEC, google.SPEC, tiktok.SPEC, file.SPEC)
}


def build_connector(dest: DestinationConfig) -> Connector:
    """The connector for ``dest.platform``."""
    spec = PLATFORMS.get(dest.platform)
    if spec is None:
        raise ValueError(f"no connector for platform {dest.platform!r}")
    module, name = spec.connector.split(":")
    connector: Connector = getattr(importlib.import_module(module), name)(dest)
    return connector


def emulator_module(platform: str) -> object:
    """The emulator module of ``platform`` (imported lazily: the Google one pulls in gRPC)."""
    spec = PLATFORMS[platform]
    if spec.emulator is None:
        raise ValueError(f"platform {platform!r} has no emulator")
    return importlib.import_module(spec.emulator)


def emulated_platforms() -> tuple[str, ...]:
    """The platforms with a local emulator, in registry order."""
    return tuple(name for name, spec in PLATFORMS.items() if spec.emulator is not None)


def identity_platform(dest: DestinationConfig) -> str:
    """Whose identity rules ``dest`` hashes its members by: its own platform's, or those of the
    platform a setting names (a ``file`` destination follows its ``format``)."""
    schema = PLATFORMS[dest.platform].settings
    key = schema.identity_from
    if key is None:
        return dest.platform
    return str(dest.settings.get(key, schema.keys[key].default))
