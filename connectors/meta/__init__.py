"""Meta custom audiences (Marketing API through the facebook-business SDK)."""

from __future__ import annotations

from audiencesync.connectors.contract import PlatformSpec
from audiencesync.connectors.meta.identity import IDENTITY
from audiencesync.connectors.meta.settings import SETTINGS

SPEC = PlatformSpec(
    name="meta",
    connector="audiencesync.connectors.meta.connector:MetaConnector",
    emulator="audiencesync.connectors.meta.emulator",
    settings=SETTINGS,
    identity=IDENTITY,
)
