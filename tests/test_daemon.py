"""The daemon as a real subprocess (``.venv/bin/audience-sync daemon``) against the Meta emulator and
the file destination, on a schedule of seconds (``AUDIENCE_SYNC_TICK_SECONDS``): it converges while
``demo advance`` changes the source, reports lag that matches the emulator's processing delay, stops
cleanly on SIGTERM mid-push, and two daemons on one state file never push one target together."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from audiencesync.connectors.contract import Change
from audiencesync.connectors.meta import payload as mp
from audiencesync.connectors.meta.emulator import MetaEmulator, start_emulator
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import load_config
from audiencesync.sync.demo.profiles import advance, build_profiles
from audiencesync.sync.source_load import member_key
from audiencesync.sync.sources import read_audience
from click.testing import CliRunner
from meta_emulator_admin import set_faults
from sample_configs import FILES, WriteConfig, meta_main, syncs
from source_audience import meta_ready_members

CLI = Path(sys.executable).parent / "audience-sync"
TARGETS = ("lapsed@meta_main", "lapsed@files", "in_checkout@meta_main", "in_checkout@files")


def destinations(endpoint: str) -> str:
    """Added to the standard source and audiences (sample_configs.SOURCE): the Meta emulator and files."""
    return (
        meta_main(endpoint)
        + FILES
        + syncs("lapsed", "in_checkout", destinations=("meta_main", "files"), max_lag="1h")
    )


@pytest.fixture
def meta() -> Iterator[MetaEmulator]:
    emulator = start_emulator(port=0)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def profiles_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("daemon") / "profiles.db"
    build_profiles(path, 2000, seed=3)
    return path


@pytest.fixture
def workdir(tmp_path: Path, profiles_template: Path, meta: MetaEmulator, write_config: WriteConfig) -> Path:
    (tmp_path / "profiles.db").write_bytes(profiles_template.read_bytes())
    write_config(destinations(meta.url))
    return tmp_path


def source_rows(workdir: Path, audience: str) -> dict[bytes, dict[str, str]]:
    return meta_ready_members(workdir / "audience-sync.toml", audience)


def emulator_state(emulator: MetaEmulator) -> dict[str, set[tuple[str, ...]]]:
    """Audience name -> its members, from the admin surface."""
    with urllib.request.urlopen(f"{emulator.admin_url}/_emulator/state", timeout=5) as response:
        body = json.load(response)
    return {a["name"]: {tuple(m) for m in a["members"]} for a in body["audiences"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DaemonProcess:
    def __init__(self, workdir: Path, *extra: str, tick: float = 2.0, name: str = "daemon") -> None:
        env = {**os.environ, "AUDIENCE_SYNC_TICK_SECONDS": str(tick)}
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                str(CLI),
                "--log-format",
                "json",
                "daemon",
                "--config",
                "audience-sync.toml",
                "--jitter",
                "0",
                *extra,
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def stop(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def state_rows(workdir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(workdir / "state.db", timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        conn.close()


def meta_schema(workdir: Path, audience: str) -> list[str]:
    rows = state_rows(workdir, "SELECT schema FROM targets WHERE key = ?", (f"{audience}@meta_main",))
    return list(json.loads(rows[0][0]))


def expected_on_meta(workdir: Path, audience: str) -> set[tuple[str, ...]]:
    kinds = meta_schema(workdir, audience)
    return {tuple(mp.row_for(Change(k, ids), kinds)) for k, ids in source_rows(workdir, audience).items()}


def converged(workdir: Path, emulator: MetaEmulator) -> bool:
    if len(state_rows(workdir, "SELECT 1 FROM targets WHERE schema IS NOT NULL")) < 4:
        return False
    on_meta = emulator_state(emulator)
    for audience in ("lapsed", "in_checkout"):
        if on_meta.get(f"audience-sync: {audience}") != expected_on_meta(workdir, audience):
            return False
        in_state = {
            r[0]
            for r in state_rows(
                workdir,
                "SELECT m.member_key FROM members m JOIN targets t ON t.id = m.target_id WHERE t.key = ?",
                (f"{audience}@files",),
            )
        }
        if in_state != set(source_rows(workdir, audience)):
            return False
    return not state_rows(workdir, "SELECT 1 FROM outbox")


def lag_report(workdir: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    result = CliRunner().invoke(
        cli, ["lag", "--config", str(workdir / "audience-sync.toml"), "--json"], catch_exceptions=False
    )
    return result.exit_code, {t["target"]: t for t in json.loads(result.stdout)["targets"]}


PROCESSING_S = 1.0
FOLLOW_S = 0.25
# Ready is stamped when a read-back observes it: at most one follow interval late, plus scheduling.
READY_TOLERANCE_S = FOLLOW_S + 0.75


def test_the_daemon_converges_while_the_source_changes_and_reports_the_platforms_processing_delay(
    workdir: Path, meta: MetaEmulator
) -> None:
    set_faults(meta, processing_seconds=PROCESSING_S)
    metrics_port = free_port()
    daemon = DaemonProcess(
        workdir, "--follow-interval", str(FOLLOW_S), "--metrics-port", str(metrics_port), tick=3.0
    )
    try:
        wait_until(lambda: converged(workdir, meta), 30, "the first sync to converge")
        advance(workdir / "profiles.db", share=0.05, seed=9)
        assert not converged(workdir, meta)
        wait_until(lambda: converged(workdir, meta), 30, "the daemon to converge after demo advance")
        wait_until(
            lambda: not state_rows(workdir, "SELECT 1 FROM lag WHERE ready_at IS NULL"),
            10,
            "every change to be reported ready",
        )

        code, report = lag_report(workdir)
        assert code == 0
        for key in TARGETS:
            entry = report[key]
            assert entry["slo"] == "ok" and entry["pending_adds"] == entry["pending_removes"] == 0
            assert entry["to_ready"]["count"] == entry["to_confirmed"]["count"] > 0
        for audience in ("lapsed", "in_checkout"):
            processing = report[f"{audience}@meta_main"]["processing"]
            assert PROCESSING_S - 0.05 <= processing["p50"] <= PROCESSING_S + READY_TOLERANCE_S, processing
            assert PROCESSING_S - 0.05 <= processing["max"] <= PROCESSING_S + READY_TOLERANCE_S, processing
            assert report[f"{audience}@files"]["processing"]["max"] <= READY_TOLERANCE_S
            size = report[f"{audience}@meta_main"]["platform_size"]
            assert size == [report[f"{audience}@meta_main"]["members"]] * 2

        # Coverage of the in-flow audience, against the source and what the emulator holds.
        in_flow = {member_key(r.profile_id) for r in read_audience(*_source_and_audience(workdir))}
        kinds = meta_schema(workdir, "in_checkout")
        on_meta = emulator_state(meta)["audience-sync: in_checkout"]
        usable = source_rows(workdir, "in_checkout")
        excluded = {
            k for k in in_flow if k in usable and tuple(mp.row_for(Change(k, usable[k]), kinds)) in on_meta
        }
        coverage = report["in_checkout@meta_main"]["coverage"]
        assert coverage["in_flow"] == len(in_flow)
        assert coverage["confirmed"] == len(excluded)
        assert coverage["at_risk"] == len(in_flow) - len(excluded)

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert (
            'audience_sync_runs_total{audience="lapsed",destination="meta_main",platform="meta",status="ok"}'
            in metrics
        )
        assert "# TYPE audience_sync_runs_total counter" in metrics
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        code = daemon.stop()
    assert code == 0
    messages = [line["msg"] for line in daemon.logs()]
    assert "daemon started" in messages and messages[-1] == "daemon stopped"


def _source_and_audience(workdir: Path) -> tuple[Any, Any]:
    config = load_config(workdir / "audience-sync.toml", {})
    return config.source, config.audiences["in_checkout"]


def test_sigterm_during_a_push_leaves_state_consistent_and_the_next_run_finishes_the_outbox(
    workdir: Path, meta: MetaEmulator
) -> None:
    # Every Graph call takes 0.6 s, so a push is in flight for seconds.
    set_faults(meta, slow_rate=1.0, slow_seconds=0.6)
    daemon = DaemonProcess(workdir, "--follow-interval", "5", tick=1.0)
    try:
        wait_until(
            lambda: bool(
                state_rows(
                    workdir,
                    "SELECT 1 FROM leases l JOIN targets t ON t.id = l.target_id "
                    "WHERE t.key LIKE '%@meta_main'",
                )
            ),
            20,
            "a push to Meta to be under way",
        )
        started = time.monotonic()
        code = daemon.stop(timeout=30)
    finally:
        daemon.kill()
    assert code == 0
    assert time.monotonic() - started < 15
    assert state_rows(workdir, "SELECT count(*) FROM leases") == [(0,)]
    assert state_rows(workdir, "SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]
    # The daemon's log says the status `runs` shows, for every run (the stopped one included).
    logged = sorted(
        (line["target"], line["status"]) for line in daemon.logs() if line["msg"] == "target synced"
    )
    recorded = sorted(
        state_rows(workdir, "SELECT t.key, r.status FROM runs r JOIN targets t ON t.id = r.target_id")
    )
    assert logged == recorded
    # State holds exactly what Meta holds: nothing confirmed that was not sent, nothing sent and lost.
    on_meta = emulator_state(meta)
    for audience in ("lapsed", "in_checkout"):
        rows = state_rows(
            workdir,
            "SELECT m.payload, t.schema FROM members m JOIN targets t ON t.id = m.target_id WHERE t.key = ?",
            (f"{audience}@meta_main",),
        )
        in_state = {tuple(mp.row_for(Change(b"", json.loads(p)), json.loads(s))) for p, s in rows}
        assert on_meta.get(f"audience-sync: {audience}", set()) == in_state
    assert state_rows(workdir, "SELECT count(*) FROM outbox")[0][0] > 0 or not converged(workdir, meta)

    set_faults(meta, slow_rate=0.0)
    result = CliRunner().invoke(
        cli, ["sync", "--config", str(workdir / "audience-sync.toml")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert converged(workdir, meta)


def test_two_daemons_on_one_state_file_never_push_one_target_at_once(
    workdir: Path, meta: MetaEmulator
) -> None:
    set_faults(meta, slow_rate=1.0, slow_seconds=0.3)
    first = DaemonProcess(workdir, "--follow-interval", "0.5", tick=1.0, name="first")
    second = DaemonProcess(workdir, "--follow-interval", "0.5", tick=1.0, name="second")
    try:
        time.sleep(2.0)
        advance(workdir / "profiles.db", share=0.05, seed=1)
        time.sleep(4.0)
    finally:
        codes = (first.stop(), second.stop())
    assert codes == (0, 0)
    runs = state_rows(
        workdir,
        "SELECT t.key, r.started_at, r.finished_at FROM runs r JOIN targets t ON t.id = r.target_id "
        "ORDER BY t.key, r.started_at",
    )
    by_target: dict[str, list[tuple[float, float]]] = {}
    for key, start, end in runs:
        by_target.setdefault(key, []).append((start, end))
    assert set(by_target) == set(TARGETS)
    for key, spans in by_target.items():
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end, f"{key}: two runs overlapped"
    busy = [line for d in (first, second) for line in d.logs() if line["msg"] == "target busy"]
    assert busy, "the daemons never contended for a target"

    set_faults(meta, slow_rate=0.0)
    result = CliRunner().invoke(
        cli, ["sync", "--config", str(workdir / "audience-sync.toml")], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert converged(workdir, meta)


def test_an_unusable_state_file_is_one_logged_line_and_the_file_is_left_as_it_was(
    write_config: WriteConfig, demo_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from audiencesync.sync.config import load_config
    from audiencesync.sync.daemon import Daemon, DaemonOptions

    config = load_config(write_config())
    config.state_path.write_bytes(b"not a sqlite database, but somebody's notes" * 100)
    before = config.state_path.read_bytes()
    daemon = Daemon(config, DaemonOptions(metrics_port=None, jitter_seconds=0))
    with caplog.at_level(logging.ERROR, logger="audiencesync"):
        daemon.run_target(config.targets()[0].key)  # must not raise into the scheduler
    (record,) = [r for r in caplog.records if r.getMessage() == "run refused"]
    assert "state file" in record.__dict__["error"] and record.exc_info is None
    assert config.state_path.read_bytes() == before
