"""Start the platform emulators that a config's loopback destinations point at (for the demo and for
tests), each on the port its ``endpoint`` names. Which platforms have one, where it listens by
default and whether it speaks HTTP or gRPC is each platform's ``EmulatorDefaults``, from the
registry."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from audiencesync.connectors import registry
from audiencesync.connectors.contract import DestinationConfig
from audiencesync.connectors.platform_spec import EmulatorDefaults, EmulatorTransport
from audiencesync.sync.config import Config
from audiencesync.sync.errors import InputError
from audiencesync.sync.run_status import ExitCode

EMULATED_PLATFORMS = registry.emulated_platforms()


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
    return registry.emulator_module(platform)


def emulator_defaults(platform: str) -> EmulatorDefaults:
    """Where ``platform``'s emulator listens unless told otherwise."""
    defaults = registry.PLATFORMS[platform].settings.emulator
    if defaults is None:
        raise ValueError(f"platform {platform!r} declares no emulator ports")
    return defaults


class PortBusy(InputError):
    """A port a loopback endpoint names is taken by a program that is not its emulator."""

    exit_code = ExitCode.PORT_BUSY


@dataclass(frozen=True)
class AlreadyRunning:
    """An emulator started elsewhere (``audience-sync emulator all`` in another terminal)."""

    port: int
    admin_url: str | None

    def stop(self) -> None:
        """Not ours to stop."""


def emulated_destinations(config: Config) -> list[DestinationConfig]:
    """The destinations of ``config``'s sync targets whose endpoint is a loopback emulator."""
    used = {t.destination.name for t in config.targets()}
    return [
        dest
        for dest in config.destinations.values()
        if dest.name in used
        and dest.platform in EMULATED_PLATFORMS
        and dest.is_emulated
        and dest.endpoint is not None
    ]


def listening(port: int, timeout: float = 0.5) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _speaks_grpc(platform: str) -> bool:
    return emulator_defaults(platform).transport is EmulatorTransport.GRPC


def _answers_as_emulator(platform: str, port: int) -> bool:
    if _speaks_grpc(platform):
        # gRPC: the emulator's admin surface is on another port, so a server that completes an
        # HTTP/2 handshake here is taken to be it.
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1.0)
            except grpc.FutureTimeoutError:
                return False
            return True
    try:
        return requests.get(f"http://127.0.0.1:{port}/_emulator/state", timeout=2).ok
    except requests.RequestException:
        return False


def running_emulators(config: Config) -> dict[str, AlreadyRunning]:
    """The emulators ``config`` names that already run, by destination name. Raises ``PortBusy``
    when a port is taken by something else: checked before anything is started or written."""
    found: dict[str, AlreadyRunning] = {}
    for dest in emulated_destinations(config):
        assert dest.endpoint is not None
        port = endpoint_port(dest.endpoint)
        if not listening(port):
            continue
        if not _answers_as_emulator(dest.platform, port):
            raise PortBusy(
                f"port {port} (destinations.{dest.name}.endpoint {dest.endpoint}) is in use by another "
                "program, not a platform emulator: stop it or change the endpoint's port"
            )
        admin = None if _speaks_grpc(dest.platform) else f"http://127.0.0.1:{port}"
        found[dest.name] = AlreadyRunning(port, admin)
    return found


@contextmanager
def emulators_for(config: Config, *, reuse: bool = False) -> Iterator[dict[str, Any]]:
    """Run one emulator per loopback endpoint in ``config`` for the duration of the block; yields them
    by destination name. With ``reuse``, an emulator already running on its port is used as it is;
    without, any taken port raises ``PortBusy``."""
    running = running_emulators(config)
    if running and not reuse:
        name, emulator = next(iter(running.items()))
        raise PortBusy(
            f"port {emulator.port} (destinations.{name}) already has an emulator: stop it first, "
            "or use the one running"
        )
    started: dict[tuple[str, int], Any] = {}
    by_destination: dict[str, Any] = dict(running)
    try:
        for dest in emulated_destinations(config):
            if dest.name in by_destination:
                continue
            assert dest.endpoint is not None
            port = endpoint_port(dest.endpoint)
            key = (dest.platform, port)
            if key not in started:
                started[key] = emulator_module(dest.platform).start_emulator(port=port)
            by_destination[dest.name] = started[key]
        yield by_destination
    finally:
        for emulator in started.values():
            emulator.stop()


def unreachable_emulator(dest: DestinationConfig) -> str | None:
    """For a loopback endpoint that refuses connections: what to say (the endpoint, and how to start
    its emulator), so the destination fails at once instead of retrying for minutes. None when the
    endpoint is not a loopback emulator or something listens there."""
    if dest.platform not in EMULATED_PLATFORMS or not dest.is_emulated or dest.endpoint is None:
        return None
    port = endpoint_port(dest.endpoint)
    host = urlsplit(dest.endpoint if "//" in dest.endpoint else f"//{dest.endpoint}").hostname or "127.0.0.1"
    try:
        with socket.create_connection((host, port), timeout=5.0):
            return None
    except ConnectionRefusedError:
        pass
    except OSError:
        return None  # slow or odd, not refused: the connector's retries judge it
    return (
        f"destinations.{dest.name}: nothing answers at {dest.endpoint} (connection refused); it is a loopback "
        f"endpoint, so start its emulator: `audience-sync emulator {dest.platform} --port {port}` "
        "(or `audience-sync emulator all --config FILE` for every one the config names)"
    )
