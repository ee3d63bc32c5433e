"""Parquet files and DuckDB database files as sources, read by DuckDB with their own column types
(boolean consent and flag, a list of in-flow tags, timestamptz change times). Both sync end to end
to the Meta emulator and the file destination with stage, in-flow, flag, where and query audiences,
and read the members the SQLite source reads from the same profiles."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest
from audiencesync.connectors.meta.emulator import MetaEmulator, start_emulator
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import Config, load_config
from audiencesync.sync.errors import SourceError
from audiencesync.sync.source_check import check_source
from audiencesync.sync.sources import SourceRow, read_audience
from click.testing import CliRunner, Result
from sample_configs import (
    FLAG_AUDIENCE,
    IDENTIFIERS,
    META_AND_FILES,
    SOURCE_COLUMNS,
    STAGE_AND_FLOW_AUDIENCES,
    syncs,
)
from source_audience import demo_rows, winback

CONFIG = (
    """
state_path = "state.db"

[source]
kind = "{kind}"
path = "{path}"
table = "{table}"
"""
    + SOURCE_COLUMNS
    + IDENTIFIERS
    + STAGE_AND_FLOW_AUDIENCES
    + FLAG_AUDIENCE
    + """
[audiences.german_active]
stage = "active_customer"
where = "country = 'DE'"

[audiences.big_us]
query = "SELECT * FROM {table} WHERE stage = 'active_customer' AND country = 'US'"
"""
    + META_AND_FILES
    + syncs("german_active")
    + syncs("big_us", destinations=("meta_main",))
)
AUDIENCES = ("lapsed", "in_checkout", "winback", "german_active", "big_us")
TYPED_TABLE = """CREATE TABLE {name} (profile_id VARCHAR, email VARCHAR, phone VARCHAR, first_name VARCHAR,
    last_name VARCHAR, postcode VARCHAR, country VARCHAR, stage VARCHAR, in_flows VARCHAR[],
    ads_consent BOOLEAN, stage_changed_at TIMESTAMPTZ, winback_eligible BOOLEAN)"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def typed_rows(db: Path) -> list[list[Any]]:
    return [
        [
            r["profile_id"], r["email"], r["phone"], r["first_name"], r["last_name"], r["postcode"],
            r["country"], r["stage"], json.loads(r["in_flows"]),
            None if r["ads_consent"] is None else bool(r["ads_consent"]), r["stage_changed_at"], winback(r),
        ]
        for r in demo_rows(db)
    ]  # fmt: skip


def fill(conn: duckdb.DuckDBPyConnection, name: str, db: Path) -> None:
    conn.execute(TYPED_TABLE.format(name=name))
    conn.executemany(
        f"INSERT INTO {name} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS TIMESTAMPTZ), ?)", typed_rows(db)
    )


def write_parquet(path: Path, db: Path) -> None:
    conn = duckdb.connect(":memory:")
    try:
        fill(conn, "profiles", db)
        conn.execute(f"COPY profiles TO '{path}' (FORMAT parquet)")
    finally:
        conn.close()


def write_duckdb(path: Path, db: Path) -> None:
    conn = duckdb.connect(str(path))
    try:
        conn.execute("CREATE SCHEMA crm")
        fill(conn, "crm.customers", db)
    finally:
        conn.close()


@pytest.fixture
def meta() -> Iterator[MetaEmulator]:
    emulator = start_emulator(port=0)
    yield emulator
    emulator.stop()


@pytest.fixture(params=["parquet", "duckdb"])
def source_config(request: pytest.FixtureRequest, demo_db: Path, tmp_path: Path, meta: MetaEmulator) -> Path:
    kind = str(request.param)
    if kind == "parquet":
        write_parquet(tmp_path / "profiles.parquet", demo_db)
        path, table = "profiles.parquet", "profiles"
    else:
        write_duckdb(tmp_path / "warehouse.duckdb", demo_db)
        path, table = "warehouse.duckdb", "crm.customers"
    config = tmp_path / "audience-sync.toml"
    config.write_text(CONFIG.format(kind=kind, path=path, table=table, endpoint=meta.url), encoding="utf-8")
    return config


def as_sqlite(config: Config, db: Path) -> Config:
    """The same audiences over the demo SQLite database the file was written from."""
    source = replace(config.source, kind="sqlite", path=db, table="profiles")
    query = "SELECT * FROM profiles WHERE stage = 'active_customer' AND country = 'US'"
    winback_where = "stage IN ('lapsed_customer', 'unengaged_subscriber') AND ads_consent = 1"
    audiences = {
        **config.audiences,
        "big_us": replace(config.audiences["big_us"], query=query),
        "winback": replace(config.audiences["winback"], flag=None, where=winback_where),
    }
    return replace(config, source=source, audiences=audiences)


def members(rows: Iterator[SourceRow]) -> dict[str, tuple[Any, ...]]:
    return {r.profile_id: (tuple(sorted(r.raw.items())), r.consent, r.changed_at) for r in rows}


def emulator_members(emulator: MetaEmulator) -> dict[str, int]:
    with urllib.request.urlopen(f"{emulator.admin_url}/_emulator/state", timeout=5) as response:
        body = json.load(response)
    return {a["name"]: len(a["members"]) for a in body["audiences"]}


def test_a_typed_file_reads_the_members_sqlite_reads(source_config: Path, demo_db: Path) -> None:
    config = load_config(source_config, {})
    lite = as_sqlite(config, demo_db)
    for name in AUDIENCES:
        got = members(read_audience(config.source, config.audiences[name]))
        assert got and got == members(read_audience(lite.source, lite.audiences[name])), name


def test_a_typed_file_syncs_end_to_end_with_stage_flag_where_and_query_audiences(
    source_config: Path, meta: MetaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("META_TEST_TOKEN", "test-token")
    first = invoke("sync", "--config", str(source_config))
    assert first.exit_code == 0, first.output
    report = json.loads(invoke("validate", "--config", str(source_config), "--json").output)
    assert report["ok"] and report["rows"] == 3000
    on_meta = emulator_members(meta)
    for audience in ("lapsed", "winback", "big_us"):
        assert on_meta[f"audience-sync: {audience}"] > 0, audience
    for audience in ("lapsed", "in_checkout", "winback", "german_active"):
        exported = list((tmp_path / "exports").glob(f"audience-sync-{audience}/*-add-*.csv"))
        lines = sum(len(p.read_text().splitlines()) - 1 for p in exported)
        assert lines > 0, audience
    again = invoke("sync", "--config", str(source_config), "--dry-run", "--json")
    assert again.exit_code == 0, again.output
    for target in json.loads(again.stdout)["targets"]:
        assert (target["adds"], target["removes"]) == (0, 0), target


def test_the_check_counts_typed_values_in_the_engine(source_config: Path, demo_db: Path) -> None:
    report = check_source(load_config(source_config, {}))
    lite = check_source(as_sqlite(load_config(source_config, {}), demo_db))
    assert report.ok and lite.ok, (report.errors, lite.errors)
    assert report.rows == lite.rows == 3000
    assert report.stage_values == lite.stage_values
    assert report.in_flow_values == lite.in_flow_values
    assert report.consent == lite.consent
    assert report.audience_members == lite.audience_members
    assert report.unparseable_changed_at == 0


def test_a_misnamed_column_in_a_duckdb_file_is_refused_before_planning(
    demo_db: Path, tmp_path: Path, meta: MetaEmulator
) -> None:
    write_duckdb(tmp_path / "warehouse.duckdb", demo_db)
    text = CONFIG.format(kind="duckdb", path="warehouse.duckdb", table="crm.customers", endpoint=meta.url)
    config = tmp_path / "audience-sync.toml"
    config.write_text(text.replace('consent_column = "ads_consent"', 'consent_column = "ad_consent"'))
    result = invoke("sync", "--config", str(config))
    assert result.exit_code == 2
    assert "source.consent_column: no column 'ad_consent'" in result.output
    assert "did you mean 'ads_consent'?" in result.output
    # Nothing planned, nothing written: no target in state, no export.
    if (tmp_path / "state.db").exists():
        with sqlite3.connect(tmp_path / "state.db") as conn:
            assert conn.execute("SELECT count(*) FROM targets").fetchone() == (0,)
    assert not (tmp_path / "exports").exists()


def test_a_missing_table_or_a_file_that_is_not_parquet_is_one_line(demo_db: Path, tmp_path: Path) -> None:
    write_duckdb(tmp_path / "warehouse.duckdb", demo_db)
    (tmp_path / "not.parquet").write_text("id,email\n1,a@example.com\n")
    for kind, path, table, message in (
        ("duckdb", "warehouse.duckdb", "crm.nope", "no table 'crm.nope' in the database"),
        ("parquet", "not.parquet", "profiles", "cannot read the parquet file"),
    ):
        config = tmp_path / f"{kind}.toml"
        config.write_text(CONFIG.format(kind=kind, path=path, table=table, endpoint="http://127.0.0.1:1"))
        loaded = load_config(config, {})
        with pytest.raises(SourceError, match=message) as caught:
            list(read_audience(loaded.source, loaded.audiences["lapsed"]))
        assert "\n" not in str(caught.value)
