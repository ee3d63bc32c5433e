"""Hashed CSV exports in a platform's customer-list template, for manual uploads."""

from __future__ import annotations

from audiencesync.connectors.contract import PlatformSpec

SPEC = PlatformSpec(
    name="file",
    connector="audiencesync.connectors.file.connector:FileConnector",
)
