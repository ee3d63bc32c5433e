"""Start the platform emulators that a config's loopback destinations point at (for the demo and for
tests): Meta and TikTok over HTTP, Google over gRPC, each on the port its ``endpoint`` names."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

from audiencesync.sync.config import Config

EMULATED_PLATFORMS = ("meta", "google", "tiktok")


class RunningEmulator(Protocol):
    port: int

    def stop(self) -> None: ...


def endpoint_port(endpoint: str) -> int:
    parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    if parts.port is None:
        raise ValueError(f"endpoint {endpoint!r} names no port")
    return parts.port


def emulator_module(platform: str) -> Any:
    """The emulator module for ``platform`` (imported lazily: the Google one pulls in gRPC)."""
    return importlib.import_module(f"audiencesync.connectors.emulators.{platform}")


@contextmanager
def emulators_for(config: Config) -> Iterator[dict[str, Any]]:
    """Run one emulator per loopback endpoint in ``config`` for the duration of the block; yields them
    by destination name."""
    started: dict[tuple[str, int], Any] = {}
    by_destination: dict[str, Any] = {}
    try:
        used = {t.destination.name for t in config.targets()}
        for dest in config.destinations.values():
            if dest.name not in used:
                continue
            if dest.platform not in EMULATED_PLATFORMS or not dest.is_emulated or dest.endpoint is None:
                continue
            port = endpoint_port(dest.endpoint)
            key = (dest.platform, port)
            if key not in started:
                started[key] = emulator_module(dest.platform).start_emulator(port=port)
            by_destination[dest.name] = started[key]
        yield by_destination
    finally:
        for emulator in started.values():
            emulator.stop()
