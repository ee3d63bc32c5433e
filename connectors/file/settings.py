"""The settings of a file destination: a folder, and the platform whose customer-list template the
files follow (and whose identity rules hash their rows)."""

from __future__ import annotations

from audiencesync.connectors.file.templates import HEADERS
from audiencesync.connectors.platform_spec import Setting, SettingsSchema, one_of, text

SETTINGS = SettingsSchema(
    keys={
        "directory": Setting(required=True, check=text, relative_path=True),
        "format": Setting(default="meta", check=one_of(*HEADERS)),
    },
    identity_from="format",
)
