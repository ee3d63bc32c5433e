"""What the source says an audience is now, as the platform should hold it: the oracle of the tests
that sync the demo source and compare."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from audiencesync.sync.config import load_config
from audiencesync.sync.identity import ProfileHasher
from audiencesync.sync.source_load import member_key
from audiencesync.sync.sources import read_audience


def meta_ready_members(config_path: Path, audience: str) -> dict[bytes, dict[str, str]]:
    """Member key -> Meta-ready hashed identifiers, for every profile of ``audience`` with a valid
    identifier (profiles that denied ads consent are never uploaded)."""
    config = load_config(config_path, {})
    src = config.source
    hasher = ProfileHasher("meta", list(src.identifiers), src.default_country, src.prehashed)
    out = {}
    for row in read_audience(src, config.audiences[audience]):
        if row.consent is False:
            continue
        profile = hasher(row.raw)
        if profile.identifiers:
            out[member_key(row.profile_id)] = dict(profile.identifiers)
    return out


def demo_rows(db: Path) -> list[dict[str, Any]]:
    """Every profile of a demo database, by profile id, as column -> value."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM profiles ORDER BY profile_id")]
    finally:
        conn.close()


def winback(row: dict[str, Any]) -> bool:
    """The flag column a warehouse would compute: lapsed or unengaged, with consent."""
    return row["stage"] in ("lapsed_customer", "unengaged_subscriber") and row["ads_consent"] == 1
