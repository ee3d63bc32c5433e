"""Never sync blind: `validate` and `sync` check the config against the real source (SQLite, CSV and
JSONL files, CSV and JSONL read by DuckDB), and audiences use the source's own vocabulary."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import load_config
from audiencesync.sync.source_check import check_source
from audiencesync.sync.sources import read_audience
from click.testing import CliRunner, Result

HEADER = "id,email,lifecycle,flows,ads_ok,in_abandoned_checkout,lifetime_value,changed\n"
ROWS = [
    "1,a@example.com,lapsed,,yes,true,900,2026-01-01T00:00:00Z",
    "2,b@example.com,lapsed,,no,false,100,2026-01-02T00:00:00Z",
    "3,c@example.com,lapsed,welcome,no,true,50,2026-01-03T00:00:00Z",
    "4,d@example.com,vip,abandoned_checkout,yes,false,700,2026-01-04T00:00:00Z",
]


def write_csv(tmp_path: Path, rows: list[str] = ROWS, *, bom: bool = False) -> Path:
    path = tmp_path / "profiles.csv"
    path.write_text(("\ufeff" if bom else "") + HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def write_config(
    tmp_path: Path,
    *,
    kind: str = "csv",
    path: str = "profiles.csv",
    source_extra: str = "",
    audiences: str = '[audiences.lapsed]\nstage = "lapsed"\n',
    consent: str = "ads_ok",
    stage: str = "lifecycle",
) -> Path:
    text = f"""
        state_path = "state.db"

        [source]
        kind = "{kind}"
        path = "{path}"
        id_column = "id"
        stage_column = "{stage}"
        in_flow_column = "flows"
        consent_column = "{consent}"
        changed_at_column = "changed"
        {source_extra}

        [source.identifiers]
        email = "email"

        [destinations.files]
        platform = "file"
        directory = "exports"
        format = "meta"
    """
    config = tmp_path / "audience-sync.toml"
    names = [line.split(".", 1)[1].rstrip("]") for line in audiences.splitlines() if line.startswith("[aud")]
    syncs = "".join(f'\n[[syncs]]\naudience = "{n}"\ndestinations = ["files"]\n' for n in names)
    config.write_text(textwrap.dedent(text) + "\n" + audiences + syncs, encoding="utf-8")
    return config


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_misspelled_consent_column_is_an_error_and_sync_changes_nothing(tmp_path: Path) -> None:
    write_csv(tmp_path)
    config = write_config(tmp_path, consent="ads_consent")
    checked = invoke("validate", "--config", str(config))
    assert checked.exit_code == 2
    assert "source.consent_column: no column 'ads_consent'" in checked.output
    assert "it has id, email, lifecycle" in checked.output
    synced = invoke("sync", "--config", str(config))
    assert synced.exit_code == 2
    assert "source.consent_column" in synced.output
    # Nothing planned, nothing written: no state file, no export holding the two who said no.
    assert not (tmp_path / "state.db").exists() or _targets(tmp_path / "state.db") == 0
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())


def _targets(state: Path) -> int:
    with sqlite3.connect(state) as conn:
        return int(conn.execute("SELECT count(*) FROM targets").fetchone()[0])


def test_an_unknown_consent_value_is_counted_and_refused_until_listed(tmp_path: Path) -> None:
    rows = [
        *ROWS,
        "5,e@example.com,lapsed,,opted_out,false,10,",
        "6,f@example.com,lapsed,,opted_out,false,10,",
    ]
    write_csv(tmp_path, rows)
    config = write_config(tmp_path)
    report = check_source(load_config(config, {}))
    assert not report.ok
    assert report.unrecognised_consent == {"opted_out": 2}
    assert report.consent == {"granted": 2, "denied": 2, "unknown": 0, "unrecognised": 2}
    assert invoke("sync", "--config", str(config), "--dry-run").exit_code == 2

    config = write_config(tmp_path, source_extra='consent_denied_values = ["opted_out"]')
    assert check_source(load_config(config, {})).ok
    planned = json.loads(invoke("sync", "--config", str(config), "--dry-run", "--json").output)
    [target] = planned["targets"]
    # Profiles 1..3 and 5, 6 are lapsed; only 1 granted; 2, 3 said no, 5 and 6 opted out.
    assert target["consent_denied"] == 4
    assert target["adds"] == 1


def test_a_wrong_stage_column_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    write_csv(tmp_path)
    config = write_config(tmp_path, stage="lifecycel")
    result = invoke("validate", "--config", str(config))
    assert result.exit_code == 2
    assert "source.stage_column: no column 'lifecycel'" in result.output
    assert "did you mean 'lifecycle'?" in result.output


def test_every_missing_column_is_reported_at_once(tmp_path: Path) -> None:
    write_csv(tmp_path)
    config = write_config(tmp_path, stage="stage", consent="consent")
    report = check_source(load_config(config, {}))
    assert [e.split(":")[0] for e in report.errors] == ["source.stage_column", "source.consent_column"]


def test_a_boolean_flag_audience_on_csv(tmp_path: Path) -> None:
    write_csv(tmp_path)
    config = load_config(
        write_config(tmp_path, audiences='[audiences.checkout]\nflag = "in_abandoned_checkout"\n'), {}
    )
    members = list(read_audience(config.source, config.audiences["checkout"]))
    assert [m.profile_id for m in members] == ["1", "3"]
    report = check_source(config)
    assert report.ok and report.audience_members == {"checkout": 2}


def test_a_where_expression_compares_numbers_in_csv_and_sqlite(tmp_path: Path) -> None:
    write_csv(tmp_path)
    audience = "[audiences.big]\nwhere = \"lifetime_value > 500 AND lifecycle = 'lapsed'\"\n"
    config = load_config(write_config(tmp_path, audiences=audience), {})
    assert [m.profile_id for m in read_audience(config.source, config.audiences["big"])] == ["1"]

    db = tmp_path / "profiles.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE profiles (id TEXT, email TEXT, lifecycle TEXT, flows TEXT, ads_ok TEXT, "
            "in_abandoned_checkout INTEGER, lifetime_value REAL, changed TEXT)"
        )
        conn.executemany(
            "INSERT INTO profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [r.split(",") for r in ROWS],
        )
    config = load_config(write_config(tmp_path, kind="sqlite", path="profiles.db", audiences=audience), {})
    assert [m.profile_id for m in read_audience(config.source, config.audiences["big"])] == ["1"]


def test_a_query_runs_on_jsonl_with_a_bom(tmp_path: Path) -> None:
    lines = [
        {
            "id": 1,
            "email": "a@example.com",
            "lifecycle": "lapsed",
            "flows": ["welcome"],
            "ads_ok": True,
            "changed": 1,
        },
        {"id": 2, "email": "b@example.com", "lifecycle": "vip", "flows": "abandoned_checkout", "ads_ok": 0},
    ]
    path = tmp_path / "profiles.jsonl"
    path.write_text("\ufeff" + "\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    audiences = (
        "[audiences.vips]\nquery = \"SELECT * FROM profiles WHERE lifecycle = 'vip'\"\n"
        '[audiences.welcome]\nin_flow = "welcome"\n'
    )
    config = load_config(
        write_config(tmp_path, kind="jsonl", path="profiles.jsonl", audiences=audiences, source_extra=""), {}
    )
    [vip] = read_audience(config.source, config.audiences["vips"])
    assert (vip.profile_id, vip.raw["email"], vip.consent) == ("2", "b@example.com", False)
    [welcome] = read_audience(config.source, config.audiences["welcome"])
    assert (welcome.profile_id, welcome.consent) == ("1", True)
    report = check_source(config)
    assert report.ok, report.errors
    assert report.in_flow_values == {"welcome": 1, "abandoned_checkout": 1}


def test_a_csv_with_a_bom_reads_its_first_column(tmp_path: Path) -> None:
    write_csv(tmp_path, bom=True)
    config = load_config(write_config(tmp_path), {})
    assert [m.profile_id for m in read_audience(config.source, config.audiences["lapsed"])] == ["1", "2", "3"]


def test_validate_counts_values_duplicates_and_bad_times(tmp_path: Path) -> None:
    rows = [*ROWS, "4,d2@example.com,vip,,yes,false,1,last tuesday"]
    write_csv(tmp_path, rows)
    audiences = '[audiences.lapsed]\nstage = "lapsed"\n[audiences.lapsd]\nstage = "lapsd"\n'
    result = invoke("validate", "--config", str(write_config(tmp_path, audiences=audiences)), "--json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["stage_values"] == {"lapsed": 3, "vip": 2}
    assert report["in_flow_values"] == {"welcome": 1, "abandoned_checkout": 1}
    assert report["duplicate_ids"] == 1 and report["unparseable_changed_at"] == 1
    assert report["audience_members"] == {"lapsed": 3, "lapsd": 0}
    assert "audiences.lapsd.stage: no profile has 'lapsd'; did you mean 'lapsed'?" in report["warnings"]


def test_validate_offline_does_not_open_the_source(tmp_path: Path) -> None:
    config = write_config(tmp_path)  # no profiles.csv written
    assert invoke("validate", "--config", str(config), "--offline").exit_code == 0
    missing = invoke("validate", "--config", str(config))
    assert missing.exit_code == 2 and "source file not found" in missing.output


@pytest.mark.parametrize("value", ["lapsed", "churn-risk", "Kunde (aktiv)"])
def test_stage_names_are_the_users_own(tmp_path: Path, value: str) -> None:
    write_csv(tmp_path, [f"1,a@example.com,{value},,yes,true,1,"])
    config = load_config(write_config(tmp_path, audiences=f'[audiences.a]\nstage = "{value}"\n'), {})
    assert [m.profile_id for m in read_audience(config.source, config.audiences["a"])] == ["1"]
