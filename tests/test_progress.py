"""Progress of long work: the engine reports through a callback (rows read, changes planned, members
sent, requests), the CLI draws a bar on a terminal, logs periodic lines elsewhere, and stays quiet
under --json and -q."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.cli.progress_bar import ProgressBar
from audiencesync.sync.config import load_config
from audiencesync.sync.progress import ProgressEvent, ProgressLog
from audiencesync.sync.runner import sync_once
from click.testing import CliRunner
from rich.console import Console
from sample_configs import WriteConfig


def test_the_runner_reports_planning_and_pushing_per_target(write_config: WriteConfig, demo_db: Path) -> None:
    events: list[ProgressEvent] = []
    results = sync_once(load_config(write_config()), progress=events.append)
    for r in results:
        mine = [e for e in events if e.target == r.plan.key]
        planned = [e for e in mine if e.stage == "plan" and e.done]
        assert planned and planned[-1].rows_read == r.plan.source_members
        assert planned[-1].changes_planned == r.plan.total_adds + r.plan.total_removes
        pushed = [e for e in mine if e.stage == "push"]
        sent = [e.members_sent for e in pushed]
        assert sent == sorted(sent) and pushed[-1].done
        assert pushed[-1].members_sent == r.push.confirmed and pushed[-1].requests == r.push.requests


def test_progress_log_lines_come_at_most_once_per_interval_and_at_each_stage_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = iter([0.0, 1.0, 11.0, 12.0, 13.0])
    sink = ProgressLog(interval=10.0, clock=lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="audiencesync.progress"):
        for rows in (5_000, 10_000, 15_000, 20_000):
            sink(ProgressEvent("plan", "a@b", rows_read=rows))
        sink(ProgressEvent("plan", "a@b", rows_read=21_000, done=True))
    logged = [r.__dict__["rows_read"] for r in caplog.records]
    assert logged == [15_000, 21_000]


def test_a_terminal_shows_a_bar_with_rows_changes_and_requests() -> None:
    out = io.StringIO()
    bar = ProgressBar(Console(file=out, force_terminal=True, width=120), delay=0.0)
    bar(ProgressEvent("plan", "lapsed", rows_read=5_000))
    bar(ProgressEvent("plan", "lapsed", rows_read=7_500, changes_planned=1_200, done=True))
    bar(ProgressEvent("push", "lapsed@meta", members_sent=600, to_send=1_200, requests=3))
    bar.close()
    text = out.getvalue()
    assert "7,500 rows read, 1,200 changes planned" in text and "3 requests" in text and "600/1200" in text


def test_short_work_logs_no_progress_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = iter([0.0, 1.0, 2.0])
    sink = ProgressLog(interval=10.0, clock=lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="audiencesync.progress"):
        sink(ProgressEvent("plan", "a@b", rows_read=10))
        sink(ProgressEvent("plan", "a@b", rows_read=20))
        sink(ProgressEvent("plan", "a@b", rows_read=30, done=True))
    assert caplog.records == []


def test_json_logs_carry_progress_lines_and_json_output_and_quiet_do_not(
    write_config: WriteConfig, demo_db: Path
) -> None:
    config = str(write_config())
    runner = CliRunner()
    every_event = {"AUDIENCE_SYNC_PROGRESS_SECONDS": "0"}  # this plan is quicker than the default 10 s
    logged = runner.invoke(
        cli, ["--log-format", "json", "sync", "--config", config, "--dry-run"], env=every_event
    )
    lines = [json.loads(line) for line in logged.stderr.splitlines() if line.startswith("{")]
    progress = [line for line in lines if line["msg"] == "progress"]
    assert progress and {line["stage"] for line in progress} == {"plan"}
    assert all(line["rows_read"] >= 0 for line in progress)
    for quiet in (["--json"], ["-q"]):
        result = runner.invoke(
            cli, ["--log-format", "json", "sync", "--config", config, "--dry-run", *quiet], env=every_event
        )
        assert '"msg": "progress"' not in result.stderr
