"""The SQL source (kind = "sql") on real parts: a PostgreSQL server started for the session
(tests/postgres_server.py) and DuckDB files through duckdb-engine. Each syncs end to end to the Meta
emulator and the file destination with stage, flag and query audiences; the rows it reads are the
rows the SQLite source reads from the same profiles."""

from __future__ import annotations

import json
import string
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audiencesync.connectors.meta.emulator import MetaEmulator, start_emulator
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import SourceConfig, load_config
from audiencesync.sync.errors import ConfigError, SourceError
from audiencesync.sync.identity import ProfileHasher
from audiencesync.sync.source_load import member_key
from audiencesync.sync.sources import SourceRow, read_audience
from audiencesync.sync.sql_source import read_sql_audience
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from real_parts import need
from sample_configs import (
    FLAG_AUDIENCE,
    IDENTIFIERS,
    META_AND_FILES,
    SOURCE_COLUMNS,
    STAGE_AND_FLOW_AUDIENCES,
    syncs,
)
from source_audience import demo_rows, winback

sqlalchemy = need("sqlalchemy")

SQL_SOURCE = (
    """
state_path = "state.db"

[source]
kind = "sql"
url_env = "AUDIENCE_SYNC_SOURCE_URL"
table = "{table}"
yield_per = 500
"""
    + SOURCE_COLUMNS
    + IDENTIFIERS
    + STAGE_AND_FLOW_AUDIENCES
    + FLAG_AUDIENCE
    + """
[audiences.big_us]
query = "SELECT * FROM {table} WHERE stage = :stage AND country = :country"
params = {{ stage = "active_customer", country = "US" }}
"""
    + META_AND_FILES
    + syncs("big_us", destinations=("meta_main",))
)
AUDIENCES = ("lapsed", "in_checkout", "winback", "big_us")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def load_postgres(url: str, db: Path, schema: str) -> str:
    """The demo profiles as a Postgres table with Postgres types (boolean consent and flag, jsonb
    tags, timestamptz change time); returns its name."""
    engine = sqlalchemy.create_engine(url)
    rows = demo_rows(db)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
        conn.execute(
            sqlalchemy.text(
                f"""CREATE TABLE {schema}.profiles (
                profile_id text PRIMARY KEY, email text, phone text, first_name text, last_name text,
                postcode text, country text, stage text NOT NULL, in_flows jsonb NOT NULL,
                ads_consent boolean, stage_changed_at timestamptz NOT NULL, winback_eligible boolean)"""
            )
        )
        conn.execute(
            sqlalchemy.text(
                f"""INSERT INTO {schema}.profiles VALUES (:profile_id, :email, :phone, :first_name,
                :last_name, :postcode, :country, :stage, CAST(:in_flows AS jsonb), :consent,
                CAST(:stage_changed_at AS timestamptz), :winback)"""
            ),
            [
                {
                    **r,
                    "consent": None if r["ads_consent"] is None else bool(r["ads_consent"]),
                    "winback": winback(r),
                }
                for r in rows
            ],
        )
    engine.dispose()
    return f"{schema}.profiles"


def load_duckdb(path: Path, db: Path) -> str:
    import duckdb

    rows = demo_rows(db)
    conn = duckdb.connect(str(path))
    try:
        conn.execute(
            """CREATE TABLE profiles (profile_id VARCHAR PRIMARY KEY, email VARCHAR, phone VARCHAR,
            first_name VARCHAR, last_name VARCHAR, postcode VARCHAR, country VARCHAR, stage VARCHAR,
            in_flows VARCHAR, ads_consent BOOLEAN, stage_changed_at TIMESTAMPTZ, winback_eligible BOOLEAN)"""
        )
        conn.executemany(
            "INSERT INTO profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS TIMESTAMPTZ), ?)",
            [
                [
                    r["profile_id"], r["email"], r["phone"], r["first_name"], r["last_name"],
                    r["postcode"], r["country"], r["stage"], r["in_flows"],
                    None if r["ads_consent"] is None else bool(r["ads_consent"]),
                    r["stage_changed_at"], winback(r),
                ]
                for r in rows
            ],
        )  # fmt: skip
    finally:
        conn.close()
    return "profiles"


@pytest.fixture
def meta() -> Iterator[MetaEmulator]:
    emulator = start_emulator(port=0)
    yield emulator
    emulator.stop()


def emulator_members(emulator: MetaEmulator) -> dict[str, int]:
    with urllib.request.urlopen(f"{emulator.admin_url}/_emulator/state", timeout=5) as response:
        body = json.load(response)
    return {a["name"]: len(a["members"]) for a in body["audiences"]}


def expected_members(config_path: Path, audience: str) -> set[bytes]:
    """Who should be in the audience: profiles with a valid identifier and consent not denied."""
    config = load_config(config_path)
    src = config.source
    hasher = ProfileHasher("meta", list(src.identifiers), src.default_country, src.prehashed)
    return {
        member_key(r.profile_id)
        for r in read_audience(src, config.audiences[audience])
        if r.consent is not False and hasher(r.raw).identifiers
    }


def as_set(rows: Iterator[SourceRow]) -> set[tuple[Any, ...]]:
    return {(r.profile_id, tuple(sorted(r.raw.items())), r.consent, r.changed_at) for r in rows}


def sync_end_to_end(config: Path, meta: MetaEmulator, tmp_path: Path) -> None:
    first = invoke("sync", "--config", str(config))
    assert first.exit_code == 0, first.output
    expected = {a: expected_members(config, a) for a in AUDIENCES}
    assert all(expected[a] for a in AUDIENCES), {a: len(v) for a, v in expected.items()}
    on_meta = emulator_members(meta)
    for audience in ("lapsed", "winback", "big_us"):
        assert on_meta[f"audience-sync: {audience}"] == len(expected[audience]), audience
    for audience in ("lapsed", "in_checkout", "winback"):
        exported = list((tmp_path / "exports").glob(f"audience-sync-{audience}/*-add-*.csv"))
        assert exported, audience
        lines = sum(len(p.read_text().splitlines()) - 1 for p in exported)
        assert lines == len(expected[audience]), audience
    again = invoke("sync", "--config", str(config), "--dry-run", "--json")
    assert again.exit_code == 0, again.output
    for target in json.loads(again.stdout)["targets"]:
        assert (target["adds"], target["removes"]) == (0, 0), target


@pytest.fixture
def pg_table(postgres_url: str, demo_db: Path, request: pytest.FixtureRequest) -> str:
    return load_postgres(postgres_url, demo_db, f"t_{abs(hash(request.node.name)) % 10**8}")


def write_sql_config(tmp_path: Path, table: str, endpoint: str) -> Path:
    path = tmp_path / "audience-sync.toml"
    path.write_text(SQL_SOURCE.format(table=table, endpoint=endpoint), encoding="utf-8")
    return path


def test_a_postgres_table_syncs_end_to_end_with_stage_flag_and_query_audiences(
    postgres_url: str, pg_table: str, meta: MetaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIENCE_SYNC_SOURCE_URL", postgres_url)
    monkeypatch.setenv("META_TEST_TOKEN", "test-token")
    config = write_sql_config(tmp_path, pg_table, meta.url)
    sync_end_to_end(config, meta, tmp_path)

    # Ten lapsed customers come back: the next plan removes exactly them.
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.begin() as conn:
        moved = conn.execute(
            sqlalchemy.text(
                f"UPDATE {pg_table} SET stage = 'active_customer' WHERE profile_id IN (SELECT profile_id "
                f"FROM {pg_table} WHERE stage = 'lapsed_customer' AND ads_consent ORDER BY profile_id LIMIT 10)"
            )
        ).rowcount
    engine.dispose()
    assert moved == 10
    plan = invoke("sync", "--config", str(config), "--dry-run", "--json", "--only", "lapsed@meta_main")
    (target,) = json.loads(plan.stdout)["targets"]
    assert (target["adds"], target["removes"]) == (0, 10)


def test_postgres_reads_the_rows_sqlite_reads_from_the_same_profiles(
    postgres_url: str, pg_table: str, demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIENCE_SYNC_SOURCE_URL", postgres_url)
    pg = load_config(write_sql_config(tmp_path, pg_table, "http://127.0.0.1:1"))
    lite = pg.source.__class__(
        **{**pg.source.__dict__, "kind": "sqlite", "path": demo_db, "table": "profiles"}
    )
    for name in ("lapsed", "in_checkout"):
        from_pg = as_set(read_audience(pg.source, pg.audiences[name]))
        assert from_pg and from_pg == as_set(read_audience(lite, pg.audiences[name])), name
    everyone = demo_rows(demo_db)
    flagged = {r.profile_id for r in read_audience(pg.source, pg.audiences["winback"])}
    assert flagged == {r["profile_id"] for r in everyone if winback(r)}
    queried = {r.profile_id for r in read_audience(pg.source, pg.audiences["big_us"])}
    assert queried == {
        r["profile_id"] for r in everyone if r["stage"] == "active_customer" and r["country"] == "US"
    }


def test_postgres_streams_from_a_server_side_cursor(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The first rows of a 20M-row query arrive at once and the read stops when dropped: the client
    never buffers the result (it would take minutes and gigabytes)."""
    monkeypatch.setenv("AUDIENCE_SYNC_SOURCE_URL", postgres_url)
    huge = "SELECT 'p' || g AS profile_id, 'u' || g || '@example.com' AS email FROM (SELECT generate_series(1, 20000000) AS g) s"
    path = tmp_path / "c.toml"
    path.write_text(
        f'[source]\nkind = "sql"\nurl_env = "AUDIENCE_SYNC_SOURCE_URL"\nyield_per = 1000\n'
        f'[source.identifiers]\nemail = "email"\n[audiences.all]\nquery = "{huge}"\n'
        '[destinations.f]\nplatform = "file"\ndirectory = "x"\n[[syncs]]\naudience = "all"\ndestinations = ["f"]\n',
        encoding="utf-8",
    )
    config = load_config(path)
    started = time.monotonic()
    rows = read_sql_audience(config.source, config.audiences["all"])
    first = [next(rows) for _ in range(5000)]
    rows.close()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 5
    assert first[0].profile_id == "p1" and first[-1].raw["email"] == "u5000@example.com"


def test_a_duckdb_file_syncs_end_to_end_with_stage_flag_and_query_audiences(
    demo_db: Path, meta: MetaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("duckdb_engine")
    table = load_duckdb(tmp_path / "warehouse.duckdb", demo_db)
    monkeypatch.setenv("AUDIENCE_SYNC_SOURCE_URL", f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    monkeypatch.setenv("META_TEST_TOKEN", "test-token")
    config = write_sql_config(tmp_path, table, meta.url)
    sync_end_to_end(config, meta, tmp_path)
    loaded = load_config(config)
    lite = SourceConfig(**{**loaded.source.__dict__, "kind": "sqlite", "path": demo_db})
    assert as_set(read_audience(loaded.source, loaded.audiences["lapsed"])) == as_set(
        read_audience(lite, loaded.audiences["lapsed"])
    )


# --- configuration and errors ------------------------------------------------------------------------


def sql_config(tmp_path: Path, source_extra: str, audience: str = 'stage = "vip"') -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[source]\nkind = "sql"\nstage_column = "stage"\n{source_extra}\n[source.identifiers]\nemail = "email"\n'
        f"[audiences.a]\n{audience}\n"
        '[destinations.f]\nplatform = "file"\ndirectory = "x"\n[[syncs]]\naudience = "a"\ndestinations = ["f"]\n',
        encoding="utf-8",
    )
    return path


def test_a_literal_url_with_a_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = sql_config(tmp_path, 'url = "postgresql://app:s3cr3t-pw@db.internal/crm"')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert "source.url: holds a password" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


def test_the_url_comes_from_the_environment_variable_named_in_config(tmp_path: Path) -> None:
    path = sql_config(tmp_path, 'url_env = "CRM_URL"')
    with pytest.raises(ConfigError, match=r"source\.url_env: environment variable CRM_URL is not set"):
        load_config(path, {})
    config = load_config(path, {"CRM_URL": "postgresql://app:pw@db/crm"})
    assert config.source.sql is not None and config.source.sql.url == "postgresql://app:pw@db/crm"
    # A literal URL without a password (a local DuckDB file) may stay in the file.
    assert load_config(sql_config(tmp_path, 'url = "duckdb:///w.duckdb"'), {}).source.sql is not None


def test_a_missing_driver_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    path = sql_config(tmp_path, 'url_env = "U"')
    config = load_config(path, {"U": "snowflake://me:pw@account/db/schema"})
    with pytest.raises(SourceError) as caught:
        list(read_audience(config.source, config.audiences["a"]))
    message = str(caught.value)
    assert "pip install 'audience-sync[snowflake]'" in message
    assert "\n" not in message and "pw" not in message


def test_a_sql_error_names_the_audience_and_not_the_url(postgres_url: str, tmp_path: Path) -> None:
    path = sql_config(tmp_path, 'url_env = "U"', 'query = "SELECT nope FROM nowhere"')
    config = load_config(path, {"U": postgres_url})
    with pytest.raises(SourceError) as caught:
        list(read_audience(config.source, config.audiences["a"]))
    assert "(audiences.a.query): SQL error:" in str(caught.value)
    assert "nowhere" in str(caught.value) and "127.0.0.1" not in str(caught.value)


@pytest.mark.parametrize(
    ("audience", "message"),
    [
        ('query = "SELECT 1"\nparams = 3', "audiences.a.params: must be a table"),
        ('stage = "vip"\nparams = { x = 1 }', "audiences.a.params: only a query takes bound parameters"),
        ("flag = 7", "audiences.a.flag: must be a non-empty string"),
    ],
)
def test_sql_audience_keys_are_checked(tmp_path: Path, audience: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(sql_config(tmp_path, 'url = "duckdb:///w.duckdb"', audience), {})


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    password=st.text(alphabet=string.ascii_letters + string.digits + "-._~", min_size=6, max_size=40),
    backend=st.sampled_from(["postgresql", "mysql+pymysql", "snowflake", "redshift+redshift_connector"]),
)
def test_no_password_in_a_literal_url_ever_reaches_the_message(
    tmp_path: Path, password: str, backend: str
) -> None:
    path = sql_config(tmp_path, f'url = "{backend}://app:{password}@db.internal:5432/crm"')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert "source.url: holds a password" in str(caught.value)
    assert password not in str(caught.value)
