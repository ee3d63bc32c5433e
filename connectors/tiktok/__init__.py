"""TikTok custom audiences (Business API v1.3: segment mapping or customer files)."""

from __future__ import annotations

from audiencesync.connectors.contract import PlatformSpec

SPEC = PlatformSpec(
    name="tiktok",
    connector="audiencesync.connectors.tiktok.connector:TikTokConnector",
    emulator="audiencesync.connectors.tiktok.emulator",
    identifier_kinds=frozenset({"email", "phone", "maid"}),
)
