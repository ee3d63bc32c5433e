"""The spine end to end on the embedded default: a real sync to the file destination, `demo advance`,
then a dry run that shows exactly the changes the advance made. Also the breaker, saved plans, and
that no plaintext PII reaches the state file or the logs."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner, Result
from sample_configs import WriteConfig
from source_audience import meta_ready_members


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def dry_run(config: Path) -> dict[str, dict[str, object]]:
    result = invoke("sync", "--config", str(config), "--dry-run", "--json")
    assert result.exit_code in (0, 3), result.output
    return {t["target"]: t for t in json.loads(result.stdout)["targets"]}


def hashed_members(config_path: Path, audience: str) -> dict[bytes, str]:
    """What the source says the audience is now: member key -> hashed payload (profiles with a valid
    identifier and ads consent not denied)."""
    members = meta_ready_members(config_path, audience)
    return {key: json.dumps(ids, sort_keys=True) for key, ids in members.items()}


def test_sync_then_advance_then_dry_run_shows_exactly_the_advance(
    write_config: WriteConfig, demo_db: Path
) -> None:
    config = write_config()
    first = invoke("sync", "--config", str(config))
    assert first.exit_code == 0, first.output
    assert "Left out for denied ads consent: " in first.output  # the demo data has some

    before = {a: hashed_members(config, a) for a in ("lapsed", "in_checkout", "vip")}
    advanced = invoke("demo", "advance", "--config", str(config), "--seed", "3")
    assert advanced.exit_code == 0, advanced.output
    after = {a: hashed_members(config, a) for a in ("lapsed", "in_checkout", "vip")}

    plan = dry_run(config)
    for audience in ("lapsed", "in_checkout", "vip"):
        old, new = before[audience], after[audience]
        target = plan[f"{audience}@files"]
        assert target["adds"] == len(new.keys() - old.keys()), audience
        assert target["removes"] == len(old.keys() - new.keys()), audience
        changed = {k for k in old.keys() & new.keys() if old[k] != new[k]}
        assert target["identity_changes"] == len(changed), audience
        assert target["synced"] == len(old) and target["source_members"] == len(new)
        assert target["adds"] + target["removes"] + target["identity_changes"] > 0
    # The dry run wrote nothing: a second one plans the same.
    assert dry_run(config) == plan


def test_the_file_destination_writes_hashed_csvs_and_a_second_sync_is_a_no_op(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = write_config()
    assert invoke("sync", "--config", str(config)).exit_code == 0
    files = sorted((tmp_path / "exports").rglob("*-add-*.csv"))
    assert files
    with files[0].open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:2] == ["email", "phone"]
    assert all(len(v) in (0, 64) for row in rows[1:] for v in row[:2])

    plan = dry_run(config)
    assert all(
        t["adds"] == t["removes"] == t["identity_changes"] == t["requests"] == 0 for t in plan.values()
    )


def test_no_plaintext_email_reaches_the_state_file_or_the_logs(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = write_config()
    result = CliRunner().invoke(cli, ["--log-format", "json", "-v", "sync", "--config", str(config)])
    assert result.exit_code == 0
    with sqlite3.connect(demo_db) as conn:
        emails = [
            r[0].strip().lower() for r in conn.execute("SELECT email FROM profiles WHERE email LIKE '%@%.%'")
        ]
        phones = [r[0] for r in conn.execute("SELECT phone FROM profiles WHERE length(phone) > 8 LIMIT 200")]
    state = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*")).lower()
    exports = b"".join(p.read_bytes() for p in (tmp_path / "exports").rglob("*.csv")).lower()
    for email in emails[:500]:
        needle = email.encode()
        assert needle not in state and needle not in exports
        assert email not in result.output.lower()
    for phone in phones:
        assert phone.encode() not in state


def test_the_breaker_refuses_a_mass_removal_and_leaves_state_untouched(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = write_config()
    assert invoke("sync", "--config", str(config)).exit_code == 0
    with sqlite3.connect(demo_db) as conn:
        conn.execute(
            "UPDATE profiles SET stage = 'active_customer' WHERE stage = 'lapsed_customer' AND rowid % 2 = 0"
        )
    plan = dry_run(config)
    assert "over max_remove_share 20%" in str(plan["lapsed@files"]["breaker"])

    refused = invoke("sync", "--config", str(config))
    assert refused.exit_code == 3
    assert not list((tmp_path / "exports").rglob("*-remove-*.csv"))
    assert dry_run(config)["lapsed@files"]["removes"] == plan["lapsed@files"]["removes"]

    allowed = invoke("sync", "--config", str(config), "--allow-mass-remove")
    assert allowed.exit_code == 0, allowed.output
    assert list((tmp_path / "exports").rglob("*-remove-*.csv"))


def test_an_empty_source_trips_the_breaker(write_config: WriteConfig, demo_db: Path) -> None:
    config = write_config()
    assert invoke("sync", "--config", str(config)).exit_code == 0
    with sqlite3.connect(demo_db) as conn:
        conn.execute("UPDATE profiles SET stage = 'engaged_subscriber' WHERE stage = 'vip'")
    assert "the source returned no members" in str(dry_run(config)["vip@files"]["breaker"])


def test_a_saved_plan_is_pushed_exactly_and_refused_once_state_moved(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = write_config()
    plan_file = tmp_path / "plan.jsonl"
    saved = invoke("sync", "--config", str(config), "--dry-run", "--plan-out", str(plan_file))
    assert saved.exit_code == 0, saved.output
    with sqlite3.connect(demo_db) as conn:
        emails = [
            r[0].strip().lower().encode()
            for r in conn.execute("SELECT email FROM profiles WHERE email LIKE '%@%.%'")
        ]
    saved_bytes = plan_file.read_bytes().lower()
    assert not [e for e in emails if e in saved_bytes]  # hashed rows only

    applied = invoke("sync", "--config", str(config), "--apply-plan", str(plan_file))
    assert applied.exit_code == 0, applied.output
    assert all(t["adds"] == 0 for t in dry_run(config).values())

    stale = invoke("sync", "--config", str(config), "--apply-plan", str(plan_file))
    assert stale.exit_code == 2
    assert "has moved on since the plan was made" in stale.output


def test_a_sql_error_in_an_audience_query_names_the_audience(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = write_config(
        '[audiences.broken]\nquery = "SELECT * FROM profilez"\n[destinations.files]\nplatform = "file"\n'
        'directory = "exports"\n[[syncs]]\naudience = "broken"\ndestinations = ["files"]\n'
    )
    result = invoke("sync", "--config", str(config))
    assert result.exit_code == 2
    assert "audiences.broken.query" in result.output and "no such table: profilez" in result.output
    assert not (tmp_path / "exports").exists()


def test_a_missing_source_file_is_a_clear_error(write_config: WriteConfig) -> None:
    result = invoke("sync", "--config", str(write_config()), "--dry-run")
    assert result.exit_code == 2
    assert "profiles.db: source file not found" in result.output


def test_invalid_identifiers_are_counted_once_per_target_when_a_new_target_joins(
    write_config: WriteConfig, demo_db: Path
) -> None:
    two = """
    [destinations.files]
    platform = "file"
    directory = "exports"
    format = "meta"

    [destinations.later]
    platform = "file"
    directory = "exports-later"
    format = "meta"

    [[syncs]]
    audience = "lapsed"
    destinations = ["files", "later"]
    """
    config = write_config(two)
    assert invoke("sync", "--config", str(config), "--only", "files").exit_code == 0
    # "files" is synced, "later" is new: profiles are hashed for "later" only, and "files" reads
    # its invalid values back from state. Both must count the same source the same way.
    plan = dry_run(config)
    assert plan["lapsed@files"]["invalid"] == plan["lapsed@later"]["invalid"]
    assert sum(plan["lapsed@files"]["invalid"].values()) > 0
