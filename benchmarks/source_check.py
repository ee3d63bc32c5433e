"""What the up-front source check costs, which ``sync`` pays every run, against one full read.

Builds the demo SQLite database of N profiles, writes the same rows as CSV and Parquet (with DuckDB),
and for each kind measures:

- check_s: ``check_source`` for five audiences (stage, in-flow, flag-like where, query);
- read_s: reading every profile once through ``read_audience`` (what the check does not do).

    python benchmarks/source_check.py --members 1000000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
from audiencesync.sync.config import AudienceConfig, Config, load_config
from audiencesync.sync.demo.profiles import build_profiles
from audiencesync.sync.source_check import check_source
from audiencesync.sync.sources import read_audience

CONFIG = """
state_path = "state.db"
[source]
path = "profiles.db"
stage_column = "stage"
in_flow_column = "in_flows"
consent_column = "ads_consent"
changed_at_column = "stage_changed_at"
[source.identifiers]
email = "email"
phone = "phone"
[audiences.lapsed]
stage = "lapsed_customer"
[audiences.in_checkout]
in_flow = "abandoned_checkout"
[audiences.german]
where = "country = 'DE'"
[audiences.everyone]
query = "SELECT * FROM profiles"
[destinations.files]
platform = "file"
directory = "exports"
[[syncs]]
audience = "lapsed"
destinations = ["files"]
"""


def timed(config: Config) -> dict[str, float]:
    started = time.perf_counter()
    report = check_source(config)
    check_s = time.perf_counter() - started
    assert report.ok, report.errors
    everyone: AudienceConfig = config.audiences["everyone"]
    started = time.perf_counter()
    rows = sum(1 for _ in read_audience(config.source, everyone))
    read_s = time.perf_counter() - started
    assert rows == report.rows
    return {"check_s": round(check_s, 3), "read_s": round(read_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build_profiles(root / "profiles.db", args.members, seed=5)
        (root / "audience-sync.toml").write_text(CONFIG, encoding="utf-8")
        config = load_config(root / "audience-sync.toml", {})
        lite = sqlite3.connect(root / "profiles.db")
        duck = duckdb.connect(":memory:")
        columns = [r[1] for r in lite.execute("PRAGMA table_info(profiles)")]
        duck.execute(f"CREATE TABLE profiles ({', '.join(f'{c} VARCHAR' for c in columns)})")
        cursor = lite.execute("SELECT * FROM profiles")
        while batch := cursor.fetchmany(50_000):
            duck.executemany(f"INSERT INTO profiles VALUES ({', '.join('?' for _ in columns)})", batch)
        duck.execute(f"COPY profiles TO '{root / 'profiles.csv'}' (HEADER)")
        duck.execute(f"COPY profiles TO '{root / 'profiles.parquet'}' (FORMAT parquet)")
        duck.close()
        lite.close()
        figures: dict[str, Any] = {"members": args.members}
        for kind, name in (
            ("sqlite", "profiles.db"),
            ("csv", "profiles.csv"),
            ("parquet", "profiles.parquet"),
        ):
            source = replace(config.source, kind=kind, path=root / name)
            figures[kind] = timed(replace(config, source=source))
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
