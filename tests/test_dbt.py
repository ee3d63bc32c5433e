"""dbt models as audiences, on a real (trimmed) manifest and run results from the tiny dbt-duckdb
project in tests/fixtures/dbt_tiny, whose build fails on purpose: customers_broken errors and
customers_after_broken is skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import load_config
from audiencesync.sync.dbt import after_dbt, exposures_yaml, model_relation
from audiencesync.sync.errors import SourceError
from audiencesync.sync.sources import read_audience
from click.testing import CliRunner
from real_parts import need

duckdb = need("duckdb")
need("duckdb_engine")

TINY = Path(__file__).parent / "fixtures" / "dbt_tiny"
PROFILES = {  # seeds/profiles.csv, by stage
    "lapsed_customer": {"p1": "ann@example.com", "p2": "bob@example.com"},
    "vip": {"p3": "cat@example.com"},
}

CONFIG = """
state_path = "state.db"

[source]
kind = "sql"
url = "duckdb:///{db}"
dbt_project_dir = "project"
id_column = "profile_id"
consent_column = "ads_consent"

[source.identifiers]
email = "email"

[audiences.lapsed]
model = "customers_lapsed"
description = "Lapsed customers, from dbt"

[audiences.vip]
model = "customers_vip"

[audiences.broken]
model = "customers_broken"

[audiences.after_broken]
model = "customers_after_broken"

[destinations.files]
platform = "file"
directory = "exports"

[destinations.more_files]
platform = "file"
directory = "more"

[[syncs]]
audience = "lapsed"
destinations = ["files", "more_files"]

[[syncs]]
audience = "vip"
destinations = ["files"]

[[syncs]]
audience = "broken"
destinations = ["files"]

[[syncs]]
audience = "after_broken"
destinations = ["files"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The dbt project's artifacts, and the DuckDB file dbt would have built (catalog "tiny", the
    two models that succeeded), written here with DuckDB itself since CI does not run dbt."""
    (tmp_path / "project" / "target").mkdir(parents=True)
    for name in ("manifest.json", "run_results.json"):
        shutil.copy(TINY / name, tmp_path / "project" / "target" / name)
    conn = duckdb.connect(str(tmp_path / "tiny.duckdb"))
    try:
        conn.execute(f"CREATE TABLE profiles AS SELECT * FROM read_csv('{TINY / 'seeds' / 'profiles.csv'}')")
        conn.execute(
            "CREATE TABLE customers_lapsed AS SELECT * FROM profiles WHERE stage = 'lapsed_customer'"
        )
        conn.execute("CREATE TABLE vip_customers AS SELECT * FROM profiles WHERE stage = 'vip'")
    finally:
        conn.close()
    config = tmp_path / "audience-sync.toml"
    config.write_text(CONFIG.format(db=tmp_path / "tiny.duckdb"), encoding="utf-8")
    return config


def test_a_model_resolves_to_its_relation_from_the_manifest(project: Path) -> None:
    manifest = project.parent / "project" / "target" / "manifest.json"
    assert model_relation(manifest, "customers_lapsed") == ["tiny", "main", "customers_lapsed"]
    # An alias in the model's config is the table's name.
    assert model_relation(manifest, "customers_vip") == ["tiny", "main", "vip_customers"]
    assert model_relation(manifest, "model.tiny.customers_vip") == ["tiny", "main", "vip_customers"]
    with pytest.raises(SourceError, match="no dbt model named 'nope'"):
        model_relation(manifest, "nope")


def test_a_model_audience_reads_the_model_relation(project: Path) -> None:
    config = load_config(project, {})
    for audience, stage in (("lapsed", "lapsed_customer"), ("vip", "vip")):
        rows = list(read_audience(config.source, config.audiences[audience]))
        assert {r.profile_id: r.raw["email"] for r in rows} == PROFILES[stage]


def test_after_dbt_syncs_only_the_models_that_succeeded(project: Path) -> None:
    config = load_config(project, {})
    outcome = after_dbt(config, project.parent / "project" / "target" / "run_results.json")
    assert outcome.sync == ("lapsed", "vip")
    assert outcome.skipped == {
        "broken": "model customers_broken error in this run",
        "after_broken": "model customers_after_broken skipped in this run",
    }

    result = CliRunner().invoke(
        cli,
        [
            "sync",
            "--config",
            str(project),
            "--after-dbt",
            str(project.parent / "project/target/run_results.json"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "skipped broken: model customers_broken error in this run" in result.output
    exported = {p.parent.name for p in (project.parent / "exports").glob("*/*-add-*.csv")}
    assert exported == {"audience-sync-lapsed", "audience-sync-vip"}
    (vip_file,) = (project.parent / "exports" / "audience-sync-vip").glob("*-add-*.csv")
    assert len(vip_file.read_text().splitlines()) == 2  # header and cat@


def test_after_dbt_with_nothing_succeeded_syncs_nothing(project: Path, tmp_path: Path) -> None:
    results = tmp_path / "failed.json"
    results.write_text(
        json.dumps({"results": [{"unique_id": "model.tiny.customers_lapsed", "status": "error"}]})
    )
    result = CliRunner().invoke(
        cli, ["sync", "--config", str(project), "--after-dbt", str(results)], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert "skipped vip: model customers_vip not in this run" in result.output
    assert "nothing to sync" in result.output
    assert not (tmp_path / "exports").exists()


def test_exposures_are_one_per_audience_and_destination(project: Path, tmp_path: Path) -> None:
    text = exposures_yaml(load_config(project, {}))
    names = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("  - name: ")]
    assert names == [
        "audience_sync_lapsed_files",
        "audience_sync_lapsed_more_files",
        "audience_sync_vip_files",
        "audience_sync_broken_files",
        "audience_sync_after_broken_files",
    ]
    assert text.count("type: application") == 5
    assert "      - \"ref('customers_vip')\"" in text
    assert 'description: "Lapsed customers, from dbt"' in text
    yaml = pytest.importorskip("yaml")
    parsed = yaml.safe_load(text)
    assert parsed["version"] == 2
    assert parsed["exposures"][2]["depends_on"] == ["ref('customers_vip')"]
    assert parsed["exposures"][0]["owner"] == {"name": "audience-sync"}
    # dbt itself accepts this file (checked with dbt-duckdb 1.9's `dbt parse` on the tiny project).
    out = tmp_path / "exposures.yml"
    result = CliRunner().invoke(cli, ["dbt", "exposures", "--config", str(project), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == text
