"""A new platform is one folder and one registry line: a platform declared only as a ``PlatformSpec``
(settings schema, identity profile, connector) and added to the registry is configured, validated,
hashed by its own rules and synced end to end, with no change anywhere in the engine."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from audiencesync.connectors import registry
from audiencesync.connectors.contract import (
    AudienceSpec,
    Capabilities,
    Change,
    DestinationConfig,
    HandleStatus,
    PlatformSpec,
    PlatformStatus,
    PushResult,
    SessionInfo,
)
from audiencesync.connectors.platform_spec import (
    IdentityProfile,
    Rule,
    Setting,
    SettingsSchema,
    matching,
    one_of,
)
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import load_config
from audiencesync.sync.errors import ConfigError
from audiencesync.sync.identity import InvalidIdentifier, normalize, sha256_hex
from audiencesync.sync.sources import read_audience
from click.testing import CliRunner
from sample_configs import WriteConfig


class PinboardConnector:
    """An in-memory platform: every batch is confirmed, and what it was sent is kept for the test."""

    audiences: ClassVar[dict[str, dict[bytes, Mapping[str, str]]]] = {}

    def __init__(self, dest: DestinationConfig) -> None:
        self.dest = dest

    def capabilities(self) -> Capabilities:
        return Capabilities(max_batch=500, identifier_kinds=frozenset({"email", "phone"}))

    def ensure_audience(self, spec: AudienceSpec) -> str:
        audience_id = f"{self.dest.settings['board_id']}/{spec.name}"
        self.audiences.setdefault(audience_id, {})
        return audience_id

    def add(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        self.audiences[audience_id].update({c.member_key: c.identifiers for c in batch})
        return PushResult.all_confirmed(batch)

    def remove(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        for change in batch:
            self.audiences[audience_id].pop(change.member_key, None)
        return PushResult.all_confirmed(batch)

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, HandleStatus]:
        return {}

    def read_back(self, audience_id: str) -> PlatformStatus:
        size = len(self.audiences[audience_id])
        return PlatformStatus(size_lower=size, size_upper=size, ready=True)

    def refresh_due_seconds(self) -> float | None:
        return None

    def close(self) -> None:
        """Nothing held open."""


# All of the platform the engine sees: what connectors/pinboard/__init__.py would declare.
PINBOARD = PlatformSpec(
    name="pinboard",
    connector=f"{__name__}:PinboardConnector",
    settings=SettingsSchema(
        keys={
            "board_id": Setting(required=True, check=matching(r"\d+", "must be the numeric board id")),
            "token_env": Setting(required=True, secret="token"),
            "region": Setting(default="eu", check=one_of("eu", "us")),
        },
        account_key="board_id",
    ),
    identity=IdentityProfile(rules={"email": Rule.EMAIL_NO_PLUS_TAG, "phone": Rule.PHONE_E164_DIGITS}),
)

DESTINATION = """
[destinations.pins]
platform = "pinboard"
board_id = "42"
token_env = "PINBOARD_TOKEN"

[[syncs]]
audience = "vip"
destinations = ["pins"]
"""


@pytest.fixture
def pinboard(monkeypatch: pytest.MonkeyPatch) -> PlatformSpec:
    """The one registry line."""
    monkeypatch.setitem(registry.PLATFORMS, PINBOARD.name, PINBOARD)
    monkeypatch.setattr(PinboardConnector, "audiences", {})
    return PINBOARD


def test_its_settings_are_parsed_by_its_schema(pinboard: PlatformSpec, write_config: WriteConfig) -> None:
    config = load_config(write_config(DESTINATION), {"PINBOARD_TOKEN": "t0ken"})
    dest = config.destinations["pins"]
    assert dest.platform == "pinboard"
    assert dest.settings["region"] == "eu"  # its default, filled in
    assert dest.secrets == {"token": "t0ken"}


def test_its_keys_are_checked_with_the_engines_messages(
    pinboard: PlatformSpec, write_config: WriteConfig
) -> None:
    bad = DESTINATION.replace('board_id = "42"', 'board_id = "forty-two"\nregion = "mars"\napi_token = "x"')
    with pytest.raises(ConfigError) as info:
        load_config(write_config(bad), {})
    assert info.value.problems == [
        "destinations.pins.board_id: must be the numeric board id",
        "destinations.pins.region: must be one of eu, us",
        "destinations.pins.api_token: secrets are never read from the config file: put the value in an "
        "environment variable and name it with api_token_env",
        "destinations.pins.token_env: environment variable PINBOARD_TOKEN is not set",
    ]


def test_two_destinations_on_one_board_may_not_share_an_audience(
    pinboard: PlatformSpec, write_config: WriteConfig
) -> None:
    twice = DESTINATION + DESTINATION.replace("[destinations.pins]", "[destinations.pins2]").replace(
        '["pins"]', '["pins2"]'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write_config(twice), {"PINBOARD_TOKEN": "t"})
    assert any("have the same board_id and name_prefix" in p for p in info.value.problems)


def test_it_syncs_members_hashed_by_its_own_identity_profile(
    pinboard: PlatformSpec, write_config: WriteConfig, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(DESTINATION)
    monkeypatch.setenv("PINBOARD_TOKEN", "t0ken")
    result = CliRunner().invoke(cli, ["sync", "--config", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (target,) = json.loads(result.stdout)["targets"]
    assert target["target"] == "vip@pins" and target["adds"] > 0

    (members,) = PinboardConnector.audiences.values()
    assert len(members) == target["adds"]
    config = load_config(path, {"PINBOARD_TOKEN": "t0ken"})
    expected = set()
    for row in read_audience(config.source, config.audiences["vip"]):
        email = row.raw.get("email")
        if row.consent is False or not email:
            continue
        with contextlib.suppress(InvalidIdentifier):
            expected.add(sha256_hex(normalize("pinboard", "email", email)))
    # Only the kinds its profile takes reach it, each hashed by the rule the profile names.
    assert {key for ids in members.values() for key in ids} <= {"email", "phone"}
    assert {ids["email"] for ids in members.values() if "email" in ids} == expected


def test_its_rules_are_the_ones_its_profile_names(pinboard: PlatformSpec) -> None:
    assert normalize("pinboard", "email", " Ann+News@Example.com ") == "ann@example.com"
    assert normalize("pinboard", "phone", "+1 650 555 0100") == "16505550100"
