"""The (connector, emulator) pairs the conformance suite runs over, one ``Platform`` entry each.

A new platform is one entry in ``PLATFORMS``: how to start its emulator, how to build its connector
against it with a recording ``sleep``, which fault switches make it throttle, fail transiently or
refuse one member, and how its admin state names members. Everything else lives in
``test_contract.py`` and is the same for every platform.

Every emulator serves the same admin surface (``GET /_emulator/state``, ``POST /_emulator/faults``,
``POST /_emulator/reset``), so the suite drives faults and reads membership over HTTP only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
from audiencesync.connectors.contract import Change, Connector, DestinationConfig

Sleep = Callable[[float], None]
ADVERTISER = "7000000000000000042"
GOOGLE_CUSTOMER = "1234567890"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def person(i: int) -> Change:
    """Member ``i``: an email and a phone, hashed as every platform takes them."""
    return Change(
        member_key=f"m{i}".encode(),
        identifiers={"email": sha(f"user{i}@example.com"), "phone": sha(f"+1555{i:07d}")},
        consent=True,
    )


class Running:
    """A started emulator as the suite sees it: where to point a connector, and its admin surface."""

    def __init__(self, endpoint: str, admin_url: str) -> None:
        self.endpoint = endpoint
        self.admin_url = admin_url

    def reset(self) -> None:
        requests.post(f"{self.admin_url}/_emulator/reset", timeout=10).raise_for_status()

    def faults(self, **switches: Any) -> None:
        requests.post(f"{self.admin_url}/_emulator/faults", json=switches, timeout=10).raise_for_status()

    def audiences(self) -> list[dict[str, Any]]:
        state = requests.get(f"{self.admin_url}/_emulator/state", timeout=30).json()
        return list(state["audiences"])


def _values(member: Any) -> frozenset[str]:
    """A member as the set of identifier values it carries: Meta and TikTok list values in schema
    order (empty or null for a missing one), Google lists ``kind:value`` strings."""
    return frozenset(str(v).split(":", 1)[-1] for v in member if v)


@dataclass(frozen=True)
class Platform:
    """One (connector, emulator) pair and the few facts about it the contract needs."""

    name: str
    start: Callable[[], AbstractContextManager[Running]]
    connect: Callable[[Running, Sleep, float], Connector]
    """Build a connector on the emulator with the given sleep and retry budget (seconds)."""
    transient: dict[str, Any]
    """Fault switches that make every call fail transiently."""
    throttle: dict[str, Any]
    """Fault switches that throttle a share of calls (the rest go through)."""
    min_asked_wait: float = 0.0
    """The least wait the throttling answer asks for (Meta's regain-access header), 0 if it asks none."""
    refuse: Callable[[Running, Change], Change] = field(default=lambda _emu, c: c)
    """Arrange for the platform (or the connector's own screen of what the platform refuses) to reject
    this member; returns the change to send."""
    population: int = 5
    """Members an audience needs for adds and removes to go through (TikTok's file flow: 1,000)."""
    close: Callable[[Connector], None] = field(default=lambda _c: None)

    def members(
        self, emulator: Running, audience_id: str | None = None, name: str | None = None
    ) -> set[frozenset[str]]:
        """The members the emulator holds for the audience with this id or name."""
        found = [a for a in emulator.audiences() if a["id"] == audience_id or a["name"] == name]
        assert len(found) == 1, f"expected one audience, found {len(found)}"
        return {_values(m) for m in found[0]["members"]}


def expected(changes: list[Change]) -> set[frozenset[str]]:
    return {frozenset(v for v in c.identifiers.values() if v) for c in changes}


def _truncated_email(_emulator: Running, change: Change) -> Change:
    # 63 hex digits are not the 64-digit SHA-256 hex both platforms take (Meta's /users reference,
    # TikTok's SDK schema files); Meta's emulator refuses the row, TikTok's connector screens it out.
    return replace(change, identifiers={"email": change.identifiers["email"][:63]})


# --- Meta -------------------------------------------------------------------------------------------


@contextmanager
def _meta() -> Iterator[Running]:
    from audiencesync.connectors.meta.emulator import start_emulator

    emulator = start_emulator()
    try:
        yield Running(emulator.url, emulator.admin_url)
    finally:
        emulator.stop()


def _meta_connector(emulator: Running, sleep: Sleep, max_wait: float) -> Connector:
    from audiencesync.connectors.meta.connector import MetaConnector

    settings = {
        "platform": "meta",
        "ad_account_id": "act_1234567890",
        "access_token_env": "META_TOKEN",
        "max_wait_seconds": max_wait,
        "endpoint": emulator.endpoint,
    }
    dest = DestinationConfig(
        "meta_main", "meta", settings, {"access_token": "t"}, "audience-sync: ", Path(".")
    )
    return MetaConnector(dest, backoff_initial=0.01, backoff_max=0.1, timeout_seconds=5.0, sleep=sleep)


# --- TikTok -----------------------------------------------------------------------------------------


@contextmanager
def _tiktok() -> Iterator[Running]:
    from audiencesync.connectors.tiktok.emulator import start_emulator

    emulator = start_emulator(advertisers=(ADVERTISER,))
    try:
        yield Running(emulator.url, emulator.admin_url)
    finally:
        emulator.stop()


def _tiktok_connector(flow: str) -> Callable[[Running, Sleep, float], Connector]:
    def connect(emulator: Running, sleep: Sleep, max_wait: float) -> Connector:
        from audiencesync.connectors.tiktok.connector import RetryPolicy, TikTokConnector

        settings = {
            "platform": "tiktok",
            "advertiser_id": ADVERTISER,
            "access_token_env": "TIKTOK_ACCESS_TOKEN",
            "flow": flow,
            "max_wait_seconds": max_wait,
            "endpoint": emulator.endpoint,
        }
        dest = DestinationConfig(
            "tiktok_main", "tiktok", settings, {"access_token": "t"}, "audience-sync: ", Path(".")
        )
        policy = RetryPolicy(initial_wait=0.01, max_single_wait=0.1, connect_timeout=2.0, read_timeout=5.0)
        return TikTokConnector(dest, policy, sleep=sleep)

    return connect


def _tiktok_close(connector: Connector) -> None:
    connector.close()


# --- Google -----------------------------------------------------------------------------------------


@contextmanager
def _google() -> Iterator[Running]:
    from audiencesync.connectors.google.emulator import start_emulator

    with start_emulator() as emulator:
        yield Running(emulator.endpoint, emulator.admin_url)


def _google_connector(backend: str) -> Callable[[Running, Sleep, float], Connector]:
    def connect(emulator: Running, sleep: Sleep, max_wait: float) -> Connector:
        from audiencesync.connectors.google.connector import GoogleConnector

        settings: dict[str, Any] = {
            "platform": "google",
            "backend": backend,
            "customer_id": GOOGLE_CUSTOMER,
            "endpoint": emulator.endpoint,
            "max_wait_seconds": max_wait,
        }
        if backend == "data_manager":
            # Google's Customer Match terms, which every Data Manager ingest must carry as ACCEPTED
            # (datamanager_v1 terms_of_service.py); the user declares acceptance in config.
            settings["accept_customer_match_terms"] = True
        dest = DestinationConfig("google_main", "google", settings, {}, "audience-sync: ", Path("."))
        return GoogleConnector(
            dest, backoff_initial=0.01, backoff_max=0.1, timeout_seconds=10.0, poll_interval=0.01, sleep=sleep
        )

    return connect


def _google_refuse(emulator: Running, change: Change) -> Change:
    # The emulator's switch for identifiers Google finds invalid: an Ads per-operation error (partial
    # failure), a Data Manager error whose field path names the member.
    emulator.faults(reject_identifiers=[change.identifiers["email"]])
    return change


def _google_close(connector: Connector) -> None:
    connector.close()


def _tiktok_platform(upload: str, population: int = 5) -> Platform:
    """TikTok through one upload flow (``segment`` or ``file``)."""
    return Platform(
        name=f"tiktok-{upload}",
        start=_tiktok,
        connect=_tiktok_connector(upload),
        transient={"server_error_rate": 1.0},
        throttle={"rate_limit_rate": 0.5},
        refuse=_truncated_email,
        population=population,
        close=_tiktok_close,
    )


def _google_platform(name: str, backend: str, throttle: dict[str, Any]) -> Platform:
    """Google through one backend; each throttles with its own API's quota error."""
    return Platform(
        name=name,
        start=_google,
        connect=_google_connector(backend),
        transient={"unavailable_rate": 1.0},
        throttle=throttle,
        refuse=_google_refuse,
        close=_google_close,
    )


PLATFORMS: tuple[Platform, ...] = (
    Platform(
        name="meta",
        start=_meta,
        connect=_meta_connector,
        transient={"server_error_rate": 1.0},
        throttle={"throttle_rate": 0.5, "throttle_code": 80004, "regain_minutes": 1},
        min_asked_wait=60.0,
        refuse=_truncated_email,
    ),
    _tiktok_platform("segment"),
    # TikTok's SDK docs (CustomAudienceUpdateBody.md): a file update fails when the audience would
    # hold fewer than 1,000 members after it.
    _tiktok_platform("file", population=1_010),
    _google_platform("google-data-manager", "data_manager", throttle={"resource_exhausted_rate": 0.5}),
    _google_platform("google-ads", "google_ads", throttle={"resource_temporarily_exhausted_rate": 0.5}),
)
