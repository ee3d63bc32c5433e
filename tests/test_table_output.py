"""Every table command at a fixed 80-column width: whole audience names and whole verdicts, nothing
cut with an ellipsis, in the table layout and in the plain (log) layout; TSV and CSV parse."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner, Result
from sample_configs import SOURCE, WriteConfig, file_syncs

LONG = "lapsed_customers_winback_fourth_quarter"
CONFIG = f"""
[audiences.{LONG}]
stage = "lapsed_customer"
""" + file_syncs(LONG, "in_checkout", max_lag="1h")
NAMES = (f"{LONG} → files (file)", "in_checkout → files (file)")


def at_80(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "80"}, catch_exceptions=False)


@pytest.fixture
def config(write_config: WriteConfig, demo_db: Path) -> Path:
    path = write_config(CONFIG, source=SOURCE)
    assert at_80("sync", "--config", str(path)).exit_code == 0
    return path


@pytest.mark.parametrize("fmt", ["table", "plain"])
def test_each_table_command_at_80_columns_shows_whole_names_and_verdicts(config: Path, fmt: str) -> None:
    c = str(config)
    outputs = {
        "plan": at_80("sync", "--config", c, "--dry-run", "--format", fmt),
        "sync": at_80("sync", "--config", c, "--format", fmt),
        "runs": at_80("runs", "--config", c, "--format", fmt),
        "lag": at_80("lag", "--config", c, "--format", fmt),
    }
    for command, result in outputs.items():
        assert result.exit_code == 0, (command, result.output)
        assert "…" not in result.stdout, (command, result.stdout)
    for command in ("plan", "sync", "lag"):
        for name in NAMES:
            assert name in outputs[command].stdout, (command, name, outputs[command].stdout)
    assert "ok" in outputs["plan"].stdout  # the breaker verdict
    assert "ok nothing to send" in outputs["sync"].stdout or "ok " in outputs["sync"].stdout
    assert outputs["lag"].stdout.count("ok ≤60m") == 2
    assert f"{LONG}@files" in outputs["runs"].stdout and "in_checkout@files" in outputs["runs"].stdout
    if fmt == "table":
        assert all(len(line) <= 80 for line in outputs["lag"].stdout.splitlines()), outputs["lag"].stdout


def test_non_tty_output_defaults_to_one_line_per_row(config: Path) -> None:
    lines = at_80("lag", "--config", str(config)).stdout.splitlines()
    rows = [line for line in lines if line.startswith(NAMES)]
    assert len(rows) == 2 and all("SLO=ok ≤60m" in row for row in rows)


@pytest.mark.parametrize("fmt,delimiter", [("tsv", "\t"), ("csv", ",")])
def test_tsv_and_csv_have_a_header_and_one_record_per_target(config: Path, fmt: str, delimiter: str) -> None:
    for command in (["lag"], ["runs"], ["sync", "--dry-run"]):
        out = at_80(*command, "--config", str(config), "--format", fmt).stdout
        records = list(csv.DictReader(io.StringIO(out), delimiter=delimiter))
        assert len(records) == 2, (command, out)
    lag = list(
        csv.DictReader(
            io.StringIO(at_80("lag", "--config", str(config), "--format", fmt).stdout), delimiter=delimiter
        )
    )
    assert {r["audience → destination"] for r in lag} == set(NAMES)
    assert {r["SLO"] for r in lag} == {"ok ≤60m"}


def test_format_json_is_the_json_output(config: Path) -> None:
    body = json.loads(at_80("runs", "--config", str(config), "--format", "json").stdout)
    assert len(body["runs"]) == 2
