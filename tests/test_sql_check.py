"""The up-front check of a SQL source, on a real PostgreSQL server and a DuckDB file through
duckdb-engine: the same report the file sources get (missing columns with a suggestion, value
counts, duplicates, unparseable change times), computed by the database; a failed check stops
`sync` before anything is planned."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from audiencesync.sync.config import load_config
from audiencesync.sync.source_check import check_source
from real_parts import need
from test_sql_source import invoke, load_duckdb, load_postgres, write_sql_config

sqlalchemy = need("sqlalchemy")


@pytest.fixture
def pg_table(postgres_url: str, demo_db: Path, request: pytest.FixtureRequest) -> str:
    return load_postgres(postgres_url, demo_db, f"c_{abs(hash(request.node.name)) % 10**8}")


def execute(url: str, *statements: str) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sqlalchemy.text(statement))
    engine.dispose()


def test_postgres_is_counted_as_the_sqlite_source_is(
    postgres_url: str, pg_table: str, demo_db: Path, tmp_path: Path
) -> None:
    config = load_config(
        write_sql_config(tmp_path, pg_table, "http://127.0.0.1:1"), {"AUDIENCE_SYNC_SOURCE_URL": postgres_url}
    )
    report = check_source(config)
    lite_source = replace(config.source, kind="sqlite", path=demo_db, table="profiles")
    lite = check_source(
        replace(config, source=lite_source), [config.audiences["lapsed"], config.audiences["in_checkout"]]
    )
    assert report.ok and lite.ok, (report.errors, lite.errors)
    assert report.source == "postgresql:// source" and "127.0.0.1" not in json.dumps(report.as_dict())
    assert report.rows == lite.rows == 3000
    assert report.stage_values == lite.stage_values
    # jsonb tags and boolean consent, counted as the text and integers of the SQLite file are.
    assert report.in_flow_values == lite.in_flow_values
    assert report.consent == lite.consent
    assert report.duplicate_ids == 0 and report.unparseable_changed_at == 0
    assert {a: report.audience_members[a] for a in ("lapsed", "in_checkout")} == lite.audience_members
    with sqlite3.connect(demo_db) as conn:
        (winback,) = conn.execute(
            "SELECT count(*) FROM profiles WHERE stage IN ('lapsed_customer', 'unengaged_subscriber') AND ads_consent = 1"
        ).fetchone()
        (big_us,) = conn.execute(
            "SELECT count(*) FROM profiles WHERE stage = 'active_customer' AND country = 'US'"
        ).fetchone()
    assert report.audience_members["winback"] == winback and report.audience_members["big_us"] == big_us


def test_a_misnamed_postgres_column_stops_sync_before_anything_is_planned(
    postgres_url: str, pg_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIENCE_SYNC_SOURCE_URL", postgres_url)
    monkeypatch.setenv("META_TEST_TOKEN", "test-token")
    config = write_sql_config(tmp_path, pg_table, "http://127.0.0.1:1")
    config.write_text(config.read_text().replace('stage_column = "stage"', 'stage_column = "stages"'))
    checked = invoke("validate", "--config", str(config))
    assert checked.exit_code == 2
    assert "source.stage_column: no column 'stages'" in checked.output
    assert "did you mean 'stage'?" in checked.output
    synced = invoke("sync", "--config", str(config))
    assert synced.exit_code == 2 and "source.stage_column" in synced.output
    # The Meta endpoint is a closed port: a plan that got as far as pushing would have failed there.
    assert "127.0.0.1:1" not in synced.output
    if (tmp_path / "state.db").exists():
        with sqlite3.connect(tmp_path / "state.db") as conn:
            assert conn.execute("SELECT count(*) FROM targets").fetchone() == (0,)
    assert not (tmp_path / "exports").exists()


def test_postgres_values_of_unknown_meaning_duplicates_and_bad_times_are_found(
    postgres_url: str, pg_table: str, tmp_path: Path
) -> None:
    schema = pg_table.split(".")[0]
    execute(
        postgres_url,
        f"ALTER TABLE {pg_table} ALTER COLUMN ads_consent TYPE text USING ads_consent::text",
        f"ALTER TABLE {pg_table} ALTER COLUMN stage_changed_at TYPE text USING stage_changed_at::text",
        f"ALTER TABLE {pg_table} DROP CONSTRAINT profiles_pkey",
        f"INSERT INTO {pg_table} SELECT * FROM {pg_table} WHERE profile_id IN "
        f"(SELECT profile_id FROM {pg_table} ORDER BY profile_id LIMIT 2)",
        f"UPDATE {pg_table} SET ads_consent = 'maybe' WHERE profile_id IN "
        f"(SELECT profile_id FROM {pg_table} ORDER BY profile_id DESC LIMIT 3)",
        f"UPDATE {pg_table} SET stage_changed_at = 'last tuesday' WHERE profile_id IN "
        f"(SELECT profile_id FROM {pg_table} ORDER BY profile_id DESC LIMIT 4 OFFSET 10)",
        f"UPDATE {pg_table} SET stage_changed_at = '2026-01-02T03:04' WHERE profile_id IN "
        f"(SELECT profile_id FROM {pg_table} ORDER BY profile_id DESC LIMIT 5 OFFSET 20)",
    )
    config = load_config(
        write_sql_config(tmp_path, pg_table, "http://127.0.0.1:1"), {"AUDIENCE_SYNC_SOURCE_URL": postgres_url}
    )
    report = check_source(config)
    assert report.duplicate_ids == 2
    assert report.unparseable_changed_at == 4
    assert report.unrecognised_consent == {"maybe": 3}
    assert any(e.startswith("source.consent_column: 3 profile(s)") for e in report.errors)
    assert schema in report.warnings[0]  # the duplicates warning names the table


def test_a_query_audience_must_return_the_id_identifier_and_consent_columns(
    postgres_url: str, pg_table: str, tmp_path: Path
) -> None:
    config = load_config(
        write_sql_config(tmp_path, pg_table, "http://127.0.0.1:1"), {"AUDIENCE_SYNC_SOURCE_URL": postgres_url}
    )
    narrow = replace(config.audiences["big_us"], query=f"SELECT profile_id, email FROM {pg_table}", params={})
    report = check_source(config, [narrow])
    assert not report.ok
    assert [e.split(":")[0] for e in report.errors] == [
        "source.consent_column",
        "source.identifiers.phone",
        "source.identifiers.first_name",
        "source.identifiers.last_name",
        "source.identifiers.zip",
        "source.identifiers.country",
    ]
    assert "(audiences.big_us.query)" in report.errors[0]


def test_a_duckdb_database_through_sqlalchemy_is_counted_in_the_engine(demo_db: Path, tmp_path: Path) -> None:
    need("duckdb_engine")
    table = load_duckdb(tmp_path / "warehouse.duckdb", demo_db)
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    config = load_config(
        write_sql_config(tmp_path, table, "http://127.0.0.1:1"), {"AUDIENCE_SYNC_SOURCE_URL": url}
    )
    report = check_source(config)
    lite_source = replace(config.source, kind="sqlite", path=demo_db, table="profiles")
    lite = check_source(replace(config, source=lite_source), [config.audiences["lapsed"]])
    assert report.ok, report.errors
    assert (report.rows, report.stage_values, report.in_flow_values, report.consent) == (
        lite.rows,
        lite.stage_values,
        lite.in_flow_values,
        lite.consent,
    )
    assert report.unparseable_changed_at == 0
