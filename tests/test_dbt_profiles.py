"""A dbt source reuses dbt's own connection from profiles.yml: the DuckDB file of the tiny dbt-duckdb
project and a Postgres target on the real server, with env_var() templates resolved and no secret
in any message. When a dbt executable is at hand (AUDIENCE_SYNC_DBT, or dbt on PATH), the tiny
project is built by dbt itself and synced from what it built."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from audiencesync.sync.config import load_config
from audiencesync.sync.dbt_profiles import ProfileError, output_url
from audiencesync.sync.errors import ConfigError
from audiencesync.sync.sources import read_audience
from real_parts import need
from sample_configs import file_syncs
from source_audience import demo_rows
from sqlalchemy.engine import make_url
from test_dbt import PROFILES, TINY
from test_sql_source import invoke, load_postgres

duckdb = need("duckdb")
need("duckdb_engine")
need("yaml")

CONFIG = """
state_path = "state.db"

[source]
kind = "sql"
dbt_project_dir = "project"
{extra}
id_column = "profile_id"
consent_column = "ads_consent"

[source.identifiers]
email = "email"

[audiences.lapsed]
model = "customers_lapsed"

[audiences.vip]
model = "customers_vip"
""" + file_syncs("lapsed", "vip")


def copy_project(tmp_path: Path) -> Path:
    """The tiny dbt project, with its artifacts in target/ as a dbt build leaves them."""
    project = tmp_path / "project"
    shutil.copytree(TINY, project, ignore=shutil.ignore_patterns("manifest.json", "run_results.json"))
    (project / "target").mkdir()
    for name in ("manifest.json", "run_results.json"):
        shutil.copy(TINY / name, project / "target" / name)
    return project


def build_like_dbt(database: Path) -> None:
    """The tables dbt builds from seeds/profiles.csv (catalog "tiny", named after the file)."""
    conn = duckdb.connect(str(database))
    try:
        conn.execute(f"CREATE TABLE profiles AS SELECT * FROM read_csv('{TINY / 'seeds' / 'profiles.csv'}')")
        conn.execute(
            "CREATE TABLE customers_lapsed AS SELECT * FROM profiles WHERE stage = 'lapsed_customer'"
        )
        conn.execute("CREATE TABLE vip_customers AS SELECT * FROM profiles WHERE stage = 'vip'")
    finally:
        conn.close()


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "audience-sync.toml"
    config.write_text(CONFIG.format(extra=extra), encoding="utf-8")
    return config


def model_members(config_path: Path, env: dict[str, str]) -> dict[str, dict[str, str | None]]:
    config = load_config(config_path, env)
    return {
        name: {r.profile_id: r.raw["email"] for r in read_audience(config.source, config.audiences[name])}
        for name in ("lapsed", "vip")
    }


def test_the_duckdb_target_of_the_project_profile_is_the_source(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    build_like_dbt(project / "tiny.duckdb")  # profiles.yml: path tiny.duckdb, beside the project
    config = write_config(tmp_path)
    assert model_members(config, {}) == {"lapsed": PROFILES["lapsed_customer"], "vip": PROFILES["vip"]}
    synced = invoke("sync", "--config", str(config))
    assert synced.exit_code == 0, synced.output
    assert {p.parent.name for p in (tmp_path / "exports").glob("*/*-add-*.csv")} == {
        "audience-sync-lapsed",
        "audience-sync-vip",
    }


def test_a_postgres_target_with_env_var_templates_is_the_source(
    postgres_url: str, demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = "dbt_prod"
    load_postgres(postgres_url, demo_db, schema)
    url = make_url(postgres_url)
    project = copy_project(tmp_path)
    (project / "profiles.yml").write_text(
        f"""tiny:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: tiny.duckdb
    prod:
      type: postgres
      host: "{{{{ env_var('PGHOST_TEST') }}}}"
      port: "{{{{ env_var('PGPORT_TEST') | as_number }}}}"
      user: {url.username}
      password: "{{{{ env_var('PG_PASSWORD_TEST') }}}}"
      dbname: "{{{{ env_var('PGDATABASE_TEST', '{url.database}') }}}}"
      schema: {schema}
      threads: 1
""",
        encoding="utf-8",
    )
    config = tmp_path / "audience-sync.toml"
    config.write_text(
        'state_path = "state.db"\n[source]\nkind = "sql"\ndbt_project_dir = "project"\ndbt_target = "prod"\n'
        'table = "profiles"\nstage_column = "stage"\nconsent_column = "ads_consent"\n'
        '[source.identifiers]\nemail = "email"\n[audiences.lapsed]\nstage = "lapsed_customer"\n'
        '[destinations.files]\nplatform = "file"\ndirectory = "exports"\n'
        '[[syncs]]\naudience = "lapsed"\ndestinations = ["files"]\n',
        encoding="utf-8",
    )
    secret = "s3cr3t-Pg-passw0rd"
    env = {"PGHOST_TEST": str(url.host), "PGPORT_TEST": str(url.port), "PG_PASSWORD_TEST": secret}
    loaded = load_config(config, env)
    assert loaded.source.sql is not None and secret not in repr(loaded)
    # The unqualified table is found in the target's schema, as dbt finds it.
    lapsed = {r.profile_id for r in read_audience(loaded.source, loaded.audiences["lapsed"])}
    assert lapsed == {r["profile_id"] for r in demo_rows(demo_db) if r["stage"] == "lapsed_customer"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    validated = invoke("validate", "--config", str(config), "--json")
    assert validated.exit_code == 0, validated.output
    assert secret not in validated.output
    config.write_text(config.read_text().replace('table = "profiles"', 'table = "no_such_table"'))
    failed = invoke("sync", "--config", str(config))
    assert failed.exit_code == 2 and "no_such_table" in failed.output
    assert secret not in failed.output


def test_an_unset_variable_or_unknown_template_names_the_key_and_no_value(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    profiles = project / "profiles.yml"
    profiles.write_text(
        "tiny:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n      host: db\n"
        "      user: app\n      password: \"{{ env_var('DBT_PW') }}\"\n      dbname: crm\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path), {})
    assert "tiny.outputs.dev.password: environment variable DBT_PW is not set" in str(caught.value)
    profiles.write_text(profiles.read_text().replace("env_var('DBT_PW')", "var('pw')"))
    with pytest.raises(ConfigError, match=r"password: only \{\{ env_var\('NAME'\) \}\}"):
        load_config(write_config(tmp_path), {})
    profiles.write_text(profiles.read_text().replace("\"{{ var('pw') }}\"", "hunter2-secret"))
    with pytest.raises(ConfigError, match=r"source\.dbt_target: .* has no output 'nope'") as caught:
        load_config(write_config(tmp_path, 'dbt_target = "nope"'), {})
    assert "hunter2" not in str(caught.value)


def test_the_profile_comes_from_dbt_project_yml_and_the_target_from_dbt_target(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    # Another folder, same file name: DuckDB names the catalog after the file, and the manifest says "tiny".
    (project / "other").mkdir()
    build_like_dbt(project / "other" / "tiny.duckdb")
    with (project / "profiles.yml").open("a") as handle:
        handle.write("    other:\n      type: duckdb\n      path: other/tiny.duckdb\n")
    config = write_config(tmp_path)
    # DBT_TARGET picks the output as `dbt --target` would; the default target's file does not exist.
    assert model_members(config, {"DBT_TARGET": "other"})["vip"] == PROFILES["vip"]
    with pytest.raises(ConfigError, match=r"source\.dbt_profile: .* has no profile 'elsewhere'"):
        load_config(write_config(tmp_path, 'dbt_profile = "elsewhere"'), {})


@pytest.mark.parametrize(
    ("output", "url"),
    [
        (
            {"type": "snowflake", "account": "ab12345.eu-west-1", "user": "svc", "password": "p@ss/word",
             "database": "ANALYTICS", "schema": "MARTS", "warehouse": "WH", "role": "REPORTER"},
            "snowflake://svc:p%40ss%2Fword@ab12345.eu-west-1/ANALYTICS/MARTS?warehouse=WH&role=REPORTER",
        ),
        (
            {"type": "bigquery", "method": "service-account", "project": "acme", "dataset": "marts",
             "keyfile": "/keys/sa.json"},
            "bigquery://acme/marts?credentials_path=%2Fkeys%2Fsa.json",
        ),
        (
            {"type": "databricks", "host": "dbc-1.cloud.databricks.com", "http_path": "/sql/1.0/warehouses/x",
             "token": "dapi123", "catalog": "main", "schema": "marts"},
            "databricks://token:dapi123@dbc-1.cloud.databricks.com?http_path=%2Fsql%2F1.0%2Fwarehouses%2Fx&catalog=main&schema=marts",
        ),
        (
            {"type": "redshift", "host": "rs.example.com", "user": "u", "password": "pw", "dbname": "dev"},
            "redshift+redshift_connector://u:pw@rs.example.com:5439/dev",
        ),
        (
            {"type": "mysql", "server": "db", "username": "u", "password": "pw", "schema": "crm"},
            "mysql+pymysql://u:pw@db:3306/crm",
        ),
    ],
)  # fmt: skip
def test_each_documented_adapter_becomes_its_sqlalchemy_url(output: dict[str, str], url: str) -> None:
    assert output_url(output, "profiles.yml x.outputs.dev", Path("/project")) == url


def test_an_adapter_without_a_driver_here_is_refused_naming_it() -> None:
    with pytest.raises(ProfileError, match="dbt adapter type 'spark' is not read here; set url_env"):
        output_url({"type": "spark", "host": "h"}, "profiles.yml x.outputs.dev", Path("/project"))


def dbt_executable() -> str | None:
    return os.environ.get("AUDIENCE_SYNC_DBT") or shutil.which("dbt")


@pytest.mark.skipif(dbt_executable() is None, reason="no dbt executable (set AUDIENCE_SYNC_DBT)")
def test_a_real_dbt_build_is_synced_from_its_own_artifacts_and_connection(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(TINY, project, ignore=shutil.ignore_patterns("manifest.json", "run_results.json"))
    built = subprocess.run(
        [str(dbt_executable()), "build", "--no-use-colors"],
        cwd=project,
        env={**os.environ, "DBT_PROFILES_DIR": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 1, built.stdout  # customers_broken fails on purpose
    config = write_config(tmp_path)
    config.write_text(
        config.read_text() + '\n[audiences.broken]\nmodel = "customers_broken"\n'
        '[[syncs]]\naudience = "broken"\ndestinations = ["files"]\n'
    )
    result = invoke(
        "sync", "--config", str(config), "--after-dbt", str(project / "target" / "run_results.json")
    )
    assert result.exit_code == 0, result.output
    assert "skipped broken: model customers_broken error in this run" in result.output
    assert {p.parent.name for p in (tmp_path / "exports").glob("*/*-add-*.csv")} == {
        "audience-sync-lapsed",
        "audience-sync-vip",
    }
