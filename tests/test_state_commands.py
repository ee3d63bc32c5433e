"""``audience-sync state list`` and ``state forget TARGET``: the documented way to clear a target."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner
from sample_configs import WriteConfig


def count(state: Path, table: str, key: str) -> int:
    with closing(sqlite3.connect(state)) as conn:
        return int(
            conn.execute(
                f"SELECT count(*) FROM {table} x JOIN targets t ON t.id = x.target_id WHERE t.key = ?", [key]
            ).fetchone()[0]
        )


def test_state_list_shows_each_target_and_forget_clears_one(
    tmp_path: Path, demo_db: Path, write_config: WriteConfig
) -> None:
    config = str(write_config())
    runner = CliRunner()
    assert runner.invoke(cli, ["sync", "--config", config]).exit_code == 0
    listed = runner.invoke(cli, ["state", "list", "--json", "--config", config])
    assert listed.exit_code == 0, listed.output
    targets = {t["key"]: t for t in json.loads(listed.stdout)["targets"]}
    assert set(targets) == {"lapsed@files", "in_checkout@files", "vip@files"}
    assert targets["vip@files"]["members"] > 0 and targets["vip@files"]["last_status"] == "ok"
    table = runner.invoke(cli, ["state", "list", "--config", config])
    assert "vip@files" in table.stdout

    declined = runner.invoke(cli, ["state", "forget", "vip@files", "--config", config], input="n\n")
    assert declined.exit_code == 1
    assert count(tmp_path / "state.db", "members", "vip@files") > 0

    forgot = runner.invoke(cli, ["state", "forget", "vip@files", "--yes", "--config", config])
    assert forgot.exit_code == 0, forgot.output
    with closing(sqlite3.connect(tmp_path / "state.db")) as conn:
        assert conn.execute("SELECT count(*) FROM targets WHERE key = 'vip@files'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM targets").fetchone()[0] == 2
    assert count(tmp_path / "state.db", "members", "lapsed@files") > 0  # the others are untouched

    unknown = runner.invoke(cli, ["state", "forget", "nope@files", "--yes", "--config", config])
    assert unknown.exit_code == 2
    assert "no such target" in unknown.output and "lapsed@files" in unknown.output
