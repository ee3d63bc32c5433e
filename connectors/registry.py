"""Builds the connector for a destination. Platform modules are imported lazily: a user who only
syncs to Meta never pays for importing the Google clients."""

from __future__ import annotations

from audiencesync.connectors.contract import Connector
from audiencesync.sync.config import DestinationConfig


def build_connector(dest: DestinationConfig) -> Connector:
    """The connector for ``dest.platform``."""
    if dest.platform == "meta":
        from audiencesync.connectors.meta.connector import MetaConnector

        return MetaConnector(dest)
    if dest.platform == "google":
        from audiencesync.connectors.google.connector import GoogleConnector

        return GoogleConnector(dest)
    if dest.platform == "tiktok":
        from audiencesync.connectors.tiktok.connector import TikTokConnector

        return TikTokConnector(dest)
    if dest.platform == "file":
        from audiencesync.connectors.file.connector import FileConnector

        return FileConnector(dest)
    raise ValueError(f"no connector for platform {dest.platform!r}")
