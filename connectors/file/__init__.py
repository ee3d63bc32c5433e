"""Hashed CSV exports in a platform's customer-list template, for manual uploads."""

from __future__ import annotations

from audiencesync.connectors.contract import PlatformSpec
from audiencesync.connectors.file.settings import SETTINGS

SPEC = PlatformSpec(
    name="file",
    connector="audiencesync.connectors.file.connector:FileConnector",
    settings=SETTINGS,
    needs_account=False,
)
