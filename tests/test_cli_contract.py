"""The CLI's contract: the breaker says why (figures and thresholds) in the table, the JSON and the
message; ``hash`` exits 5 on an invalid value; ``--only`` that matches nothing exits 2 in every
command that takes it; ``-v`` adds debug lines."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner, Result
from sample_configs import WriteConfig


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_tripped_breaker_gives_its_figures_and_thresholds_everywhere(
    write_config: WriteConfig, demo_db: Path
) -> None:
    config = str(write_config())
    assert invoke("sync", "--config", config).exit_code == 0
    with sqlite3.connect(demo_db) as conn:
        conn.execute(
            "UPDATE profiles SET stage = 'active_customer' WHERE stage = 'lapsed_customer' AND rowid % 2 = 0"
        )
    as_json = invoke("sync", "--dry-run", "--json", "--config", config)
    lapsed = {t["target"]: t for t in json.loads(as_json.stdout)["targets"]}["lapsed@files"]
    check = lapsed["breaker_check"]
    assert check["tripped"] and check["max_remove_share"] == 0.2
    assert check["removes"] == lapsed["removes"] and check["synced"] > 0
    assert check["remove_share"] == pytest.approx(check["removes"] / check["synced"], abs=1e-4)

    refused = CliRunner().invoke(cli, ["sync", "--config", config], env={"COLUMNS": "250"})
    assert refused.exit_code == 3
    share = f"{check['remove_share']:.0%}"
    assert f"TRIPPED {check['removes']:,} removes = {share} > 20%" in refused.stdout  # the table
    message = " ".join(refused.stdout.split())
    assert f"lapsed@files: circuit breaker tripped: {check['removes']} removes are {share}" in message
    assert "over max_remove_share 20%" in message


def test_hash_exits_5_on_an_invalid_value_and_0_on_valid_ones() -> None:
    good = invoke("hash", "--platform", "meta", "--field", "email", "a@example.com")
    assert good.exit_code == 0
    bad = invoke("hash", "--platform", "meta", "--field", "email", "a@example.com", "not-an-email")
    assert bad.exit_code == 5
    assert "'not-an-email': invalid" in bad.stdout


@pytest.mark.parametrize(
    "command", [["sync"], ["sync", "--dry-run"], ["lag"], ["runs"]], ids=lambda c: " ".join(c)
)
def test_only_that_matches_nothing_exits_2(
    command: list[str], write_config: WriteConfig, demo_db: Path
) -> None:
    config = str(write_config())
    assert invoke("sync", "--config", config).exit_code == 0
    result = invoke(*command, "--only", "no_such_audience", "--config", config)
    assert result.exit_code == 2
    assert "--only no_such_audience: no sync target matches" in result.output


def test_verbose_adds_debug_lines(write_config: WriteConfig, demo_db: Path) -> None:
    config = str(write_config())
    quiet = invoke("sync", "--config", config)
    loud = invoke("-v", "sync", "--only", "vip", "--config", config)
    assert quiet.exit_code == loud.exit_code == 0
    assert " debug " not in quiet.stderr
    assert " debug   planned" in loud.stderr
