"""Google Customer Match, through the Data Manager API (default) or the Google Ads API's jobs."""

from __future__ import annotations

from audiencesync.connectors.contract import PlatformSpec

SPEC = PlatformSpec(
    name="google",
    connector="audiencesync.connectors.google.connector:GoogleConnector",
    emulator="audiencesync.connectors.google.emulator",
    # Customer Match takes contact info only; country and postal code go unhashed (Data Manager
    # formatting guide, docs/setup-google.md).
    identifier_kinds=frozenset({"email", "phone", "first_name", "last_name", "zip", "country"}),
    unhashed_kinds=frozenset({"country", "zip"}),
)
