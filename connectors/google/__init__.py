"""Google Customer Match, through the Data Manager API (default) or the Google Ads API's jobs."""

from __future__ import annotations

from audiencesync.connectors.contract import PlatformSpec
from audiencesync.connectors.google.identity import IDENTITY
from audiencesync.connectors.google.settings import SETTINGS

SPEC = PlatformSpec(
    name="google",
    connector="audiencesync.connectors.google.connector:GoogleConnector",
    emulator="audiencesync.connectors.google.emulator",
    settings=SETTINGS,
    identity=IDENTITY,
)
