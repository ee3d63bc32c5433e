"""Meta custom audiences (Marketing API through the facebook-business SDK)."""

from __future__ import annotations

from audiencesync.connectors.contract import IDENTIFIER_KINDS, PlatformSpec

SPEC = PlatformSpec(
    name="meta",
    connector="audiencesync.connectors.meta.connector:MetaConnector",
    emulator="audiencesync.connectors.meta.emulator",
    identifier_kinds=frozenset(IDENTIFIER_KINDS),
    # MADID and EXTERN_ID go unhashed (docs/setup-meta.md; the reference's MADID rule).
    unhashed_kinds=frozenset({"maid", "external_id"}),
)
