"""The settings of a TikTok destination (docs/setup-tiktok.md)."""

from __future__ import annotations

from audiencesync.connectors.platform_spec import (
    EmulatorDefaults,
    Setting,
    SettingsSchema,
    matching,
    one_of,
    whole_number,
)

SETTINGS = SettingsSchema(
    keys={
        "advertiser_id": Setting(
            required=True, check=matching(r"\d{1,25}", "must be the numeric advertiser id")
        ),
        "access_token_env": Setting(required=True, secret="access_token"),
        # TikTok publishes no mapping batch limit: a setting, with the peers' 10,000 as default.
        "batch_size": Setting(default=10_000, check=whole_number(1, 100_000)),
        "flow": Setting(default="segment", check=one_of("segment", "file")),
        # AAID is the Android advertising id, sent as GAID_SHA256: TikTok has no AAID type.
        "maid_type": Setting(default="GAID", check=one_of("IDFA", "GAID", "AAID")),
    },
    account_key="advertiser_id",
    emulator=EmulatorDefaults(port=8802),
)
