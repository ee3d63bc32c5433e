"""TikTok custom audiences (Business API v1.3: segment mapping or customer files)."""

from __future__ import annotations

from audiencesync.connectors.contract import PlatformSpec
from audiencesync.connectors.tiktok.identity import IDENTITY
from audiencesync.connectors.tiktok.settings import SETTINGS

SPEC = PlatformSpec(
    name="tiktok",
    connector="audiencesync.connectors.tiktok.connector:TikTokConnector",
    emulator="audiencesync.connectors.tiktok.emulator",
    settings=SETTINGS,
    identity=IDENTITY,
)
