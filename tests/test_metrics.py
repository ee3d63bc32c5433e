"""The daemon's /metrics, /healthz and status page over a real socket: every series from start-up,
parsed with prometheus_client's own parser, full-precision timestamps, and totals that agree with
``audience-sync runs``."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import load_config
from audiencesync.sync.daemon import Daemon, DaemonOptions
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sample_configs import WriteConfig

TARGETS = {
    "lapsed@files": ("lapsed", "files", "file"),
    "in_checkout@files": ("in_checkout", "files", "file"),
    "vip@files": ("vip", "files", "file"),
}


def get(port: int, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> labels -> value, parsed by prometheus_client."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(get(port, "/metrics")[2]):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def labels(key: str, **extra: str) -> tuple[tuple[str, str], ...]:
    audience, destination, platform = TARGETS[key]
    return tuple(
        sorted({"audience": audience, "destination": destination, "platform": platform, **extra}.items())
    )


@pytest.fixture
def daemon(write_config: WriteConfig, demo_db: Path) -> Iterator[tuple[Daemon, int, Path]]:
    path = write_config()
    # A schedule that never fires during the test: the test drives runs itself.
    d = Daemon(load_config(path), DaemonOptions(metrics_port=0, jitter_seconds=0))
    d.start()
    try:
        assert d._metrics_server is not None
        yield d, d._metrics_server.port, path
    finally:
        d.shutdown()


def test_every_series_is_there_from_start_up_before_any_run(daemon: tuple[Daemon, int, Path]) -> None:
    _, port, _ = daemon
    samples = scrape(port)
    for key in TARGETS:
        for name in (
            "audience_sync_members",
            "audience_sync_pending_adds",
            "audience_sync_pending_removes",
            "audience_sync_oldest_pending_age_seconds",
            "audience_sync_last_success_timestamp_seconds",
            "audience_sync_changes_confirmed_total",
            "audience_sync_changes_rejected_total",
            "audience_sync_run_errors_total",
            "audience_sync_lag_to_confirmed_seconds_count",
            "audience_sync_lag_to_ready_seconds_count",
        ):
            assert samples[name][labels(key)] == 0, (name, key)
        assert samples["audience_sync_runs_total"][labels(key, status="ok")] == 0
        assert samples["audience_sync_lag_to_confirmed_seconds_bucket"][labels(key, le="+Inf")] == 0
    assert samples["audience_sync_inflow_at_risk"][labels("in_checkout@files", reason="consent denied")] > 0
    version = next(iter(samples["audience_sync_build_info"]))
    assert dict(version)["version"] and samples["audience_sync_build_info"][version] == 1


def test_a_scrape_after_runs_agrees_with_the_state_and_the_run_history(
    daemon: tuple[Daemon, int, Path],
) -> None:
    d, port, config = daemon
    runner = CliRunner()
    assert runner.invoke(cli, ["sync", "--config", str(config)]).exit_code == 0
    assert runner.invoke(cli, ["demo", "advance", "--config", str(config), "--seed", "4"]).exit_code == 0
    assert runner.invoke(cli, ["sync", "--config", str(config)]).exit_code == 0
    d.refresh_status()
    samples = scrape(port)
    runs: list[dict[str, Any]] = json.loads(
        runner.invoke(cli, ["runs", "--config", str(config), "--json", "--limit", "100"]).stdout
    )["runs"]
    report = {
        t["target"]: t
        for t in json.loads(runner.invoke(cli, ["lag", "--config", str(config), "--json"]).stdout)["targets"]
    }
    for key in TARGETS:
        mine = [r for r in runs if r["target"] == key]
        assert samples["audience_sync_changes_confirmed_total"][labels(key)] == sum(
            r["confirmed"] for r in mine
        )
        assert samples["audience_sync_changes_rejected_total"][labels(key)] == sum(
            r["rejected"] for r in mine
        )
        assert samples["audience_sync_members"][labels(key)] == report[key]["members"]
        # Full precision: the timestamp is the state's own, not rounded to six digits.
        stamp = samples["audience_sync_last_success_timestamp_seconds"][labels(key)]
        assert int(stamp) == int(report[key]["last_success_at"]) and stamp > 1e9
        count = samples["audience_sync_lag_to_confirmed_seconds_count"][labels(key)]
        assert count > 0
        assert samples["audience_sync_lag_to_confirmed_seconds_bucket"][labels(key, le="+Inf")] == count
        buckets = [
            v
            for lbl, v in samples["audience_sync_lag_to_confirmed_seconds_bucket"].items()
            if dict(lbl)["audience"] == TARGETS[key][0]
        ]
        assert buckets == sorted(buckets)
    coverage = report["in_checkout@files"]["coverage"]
    assert samples["audience_sync_inflow_coverage_ratio"][labels("in_checkout@files")] == pytest.approx(
        coverage["share"]
    )


def test_healthz_answers_json_and_the_status_page_is_served_at_the_root(
    daemon: tuple[Daemon, int, Path],
) -> None:
    _, port, _ = daemon
    code, ctype, body = get(port, "/healthz")
    health = json.loads(body)
    assert code == 200 and ctype == "application/json"
    assert health["ok"] is True and health["state"] == "running" and health["problems"] == []
    code, ctype, body = get(port, "/")
    assert code == 200 and ctype.startswith("text/html")
    assert '<table id="lag-table">' in body and "daemon: running" in body
    assert "None" not in body and "nan" not in body.replace("in_checkout", "")


def test_rejected_changes_by_reason_add_up_to_the_runs_total(tmp_path: Path) -> None:
    from audiencesync.state.store import StateStore

    store = StateStore.open(tmp_path / "state.db")
    try:
        target = store.ensure_target("vip@meta_main", "vip", "meta_main", "meta")
        reasons = {"invalid_entry: email": 2, "invalid_entry: phone": 1}
        run = store.runs.start(target.id, "cli")
        store.runs.finish(run, "ok", {"rejected": 3}, None, reasons)
        # A run recorded before reasons were kept: its rejections count as unrecorded.
        old = store.runs.start(target.id, "cli")
        store.runs.finish(old, "ok", {"rejected": 2}, None)
        by_reason = store.runs.rejection_totals()["vip@meta_main"]
        assert by_reason == {**reasons, "unrecorded": 2}
        assert sum(by_reason.values()) == store.runs.totals()["vip@meta_main"].rejected == 5
        store.forget_target("vip@meta_main")
        assert store.runs.rejection_totals() == {}
        assert store.db.execute("SELECT count(*) FROM run_rejections").fetchone()[0] == 0
    finally:
        store.close()
