"""The advertiser, people, destination and error check the TikTok connector tests share."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from audiencesync.connectors.contract import AudienceSpec, Change, DestinationConfig
from audiencesync.connectors.errors import ConnectorError
from audiencesync.connectors.tiktok.connector import RetryPolicy

ADVERTISER = "7000000000000000042"
TOKEN = "tok-very-secret-0123456789"
FAST = RetryPolicy(initial_wait=0.001, max_single_wait=0.005, connect_timeout=2.0, read_timeout=2.0)
API = "https://business-api.tiktok.com/open_api/v1.3/"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def person(i: int, *, phone: bool = True) -> Change:
    ids = {"email": sha(f"user{i}@example.com")}
    if phone:
        ids["phone"] = sha(f"+1555{i:07d}")
    return Change(member_key=f"m{i}".encode(), identifiers=ids)


def people(start: int, stop: int) -> list[Change]:
    return [person(i, phone=i % 3 != 0) for i in range(start, stop)]


def row_of(change: Change) -> list[str | None]:
    return [change.identifiers.get("email"), change.identifiers.get("phone")]


def destination(endpoint: str, **settings: Any) -> DestinationConfig:
    values: dict[str, Any] = {
        "platform": "tiktok",
        "advertiser_id": ADVERTISER,
        "access_token_env": "TIKTOK_ACCESS_TOKEN",
        "batch_size": 10_000,
        "flow": "segment",
        "maid_type": "GAID",
        "name_prefix": "audience-sync: ",
        "max_wait_seconds": 5,
        "endpoint": endpoint,
    }
    values.update(settings)
    return DestinationConfig(
        name="tiktok_main",
        platform="tiktok",
        settings=values,
        secrets={"access_token": TOKEN},
        name_prefix="audience-sync: ",
        base_dir=Path("."),
    )


SPEC = AudienceSpec(
    target="vip@tiktok_main",
    name="audience-sync: vip",
    description="",
    identifier_kinds=("email", "phone"),
)


def assert_actionable(error: ConnectorError, *words: str) -> None:
    text = str(error)
    assert error.request_id and error.request_id in text
    assert TOKEN not in text
    assert "http" not in text.lower()
    for word in words:
        assert word in text
