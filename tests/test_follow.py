"""The one follow step, as the runner takes it around a push and the daemon between runs: what a
platform that confirms later settles is counted the same way by both, and a read-back the platform
does not answer is one warning for both, never a failed run or a lost settlement."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from audiencesync.connectors.contract import (
    Capabilities,
    Change,
    DestinationConfig,
    HandleStatus,
    PlatformStatus,
    PushResult,
    SessionInfo,
)
from audiencesync.connectors.errors import TransientError
from audiencesync.connectors.file.connector import FileConnector
from audiencesync.state.outbox import OutboxStore
from audiencesync.state.store import StateStore
from audiencesync.sync import daemon as daemon_module
from audiencesync.sync.config import Config, load_config
from audiencesync.sync.daemon import Daemon, DaemonOptions
from audiencesync.sync.runner import RunOptions, SyncRunner, TargetResult
from sample_configs import WriteConfig, file_syncs

LAPSED_TO_FILES = file_syncs("lapsed")

_jobs = itertools.count(1)


class ConfirmsLater(FileConnector):
    """The file destination as a platform that takes each batch as a job and says how it went only
    when followed (as Google does): ``answer`` is what every follow says."""

    answer = "confirmed"
    rejected_count = 0
    asynchronous = True
    read_back_fails = False

    def __init__(self, dest: DestinationConfig) -> None:
        super().__init__(dest)
        self.followed: list[list[str]] = []

    def capabilities(self) -> Capabilities:
        return replace(super().capabilities(), asynchronous=self.asynchronous)

    def add(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        super().add(audience_id, batch, session)
        return PushResult(pending={f"job-{next(_jobs)}": [c.member_key for c in batch]}, requests=1)

    def remove(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
        super().remove(audience_id, batch, session)
        return PushResult(pending={f"job-{next(_jobs)}": [c.member_key for c in batch]}, requests=1)

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, HandleStatus]:
        self.followed.append(list(handles))
        return {h: HandleStatus(self.answer, rejected_count=self.rejected_count) for h in handles}

    def read_back(self, audience_id: str) -> PlatformStatus:
        if self.read_back_fails:
            raise TransientError("read-back timed out")
        return super().read_back(audience_id)


def run_once(config: Config, connector: FileConnector) -> TargetResult:
    with closing(StateStore.open(config.state_path)) as store:
        options = RunOptions(connector_factory=lambda _target: connector, lease_wait=0)
        [result] = SyncRunner(config, store, options).run()
        return result


def pending_run(config: Config) -> int:
    """One run whose every batch the platform leaves pending; returns how many members it sent."""
    waiting = ConfirmsLater(config.targets()[0].destination)
    waiting.answer = "pending"
    return run_once(config, waiting).push.pending


def in_flight(config: Config) -> int:
    with closing(StateStore.open(config.state_path)) as store:
        return int(store.db.execute("SELECT count(*) FROM outbox WHERE status = 'in_flight'").fetchone()[0])


def synced(config: Config) -> int:
    with closing(StateStore.open(config.state_path)) as store:
        return int(store.db.execute("SELECT count(*) FROM members").fetchone()[0])


def at_risk(config: Config) -> dict[str, int]:
    with closing(StateStore.open(config.state_path)) as store:
        row = store.find_target(config.targets()[0].key)
        assert row is not None
        return OutboxStore(store.db).unsettled_members(row.id)


def follow_errors(daemon: Daemon, config: Config) -> float | None:
    target = config.targets()[0]
    labels = {
        "audience": target.audience.name,
        "destination": target.destination.name,
        "platform": target.destination.platform,
    }
    return daemon.metrics.registry.get_sample_value("audience_sync_follow_errors_total", labels)


def follow_between_runs(config: Config, connector: FileConnector, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    monkeypatch.setattr(daemon_module, "build_connector", lambda _dest: connector)
    daemon = Daemon(config, DaemonOptions())
    daemon.follow_tick()
    return daemon


def test_a_platform_that_confirms_later_is_followed_in_the_run_that_pushed(
    write_config: WriteConfig, demo_db: Path
) -> None:
    config = load_config(write_config(LAPSED_TO_FILES), {})
    connector = ConfirmsLater(config.targets()[0].destination)
    result = run_once(config, connector)
    assert result.status == "ok", result.error
    assert result.push.confirmed == result.plan.total_adds > 0
    assert result.push.pending == 0 and result.push.settled == result.plan.total_adds
    assert in_flight(config) == 0


def test_work_left_in_flight_is_followed_whatever_the_platform_now_declares(
    write_config: WriteConfig, demo_db: Path
) -> None:
    config = load_config(write_config(LAPSED_TO_FILES), {})
    waiting = ConfirmsLater(config.targets()[0].destination)
    waiting.answer = "pending"
    first = run_once(config, waiting)
    assert first.push.pending == first.plan.total_adds > 0
    assert in_flight(config) == first.plan.total_adds

    settles = ConfirmsLater(config.targets()[0].destination)
    settles.asynchronous = False
    second = run_once(config, settles)
    assert second.status == "ok", second.error
    assert settles.followed and in_flight(config) == 0


def test_what_the_daemon_follows_between_runs_is_settled_as_a_run_settles_it(
    write_config: WriteConfig, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write_config(LAPSED_TO_FILES), {})
    sent = pending_run(config)

    follow_between_runs(config, ConfirmsLater(config.targets()[0].destination), monkeypatch)
    assert in_flight(config) == 0
    assert synced(config) == sent
    assert at_risk(config) == {}


def test_members_of_a_job_with_failures_only_counted_are_at_risk_after_the_daemon_follows_it(
    write_config: WriteConfig, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write_config(LAPSED_TO_FILES), {})
    sent = pending_run(config)

    partial = ConfirmsLater(config.targets()[0].destination)
    partial.rejected_count = 3
    follow_between_runs(config, partial, monkeypatch)
    assert in_flight(config) == 0
    assert at_risk(config) == {"unverified": sent}


def test_an_unanswered_read_back_is_a_warning_for_a_run_and_its_push_stands(
    write_config: WriteConfig, demo_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(write_config(LAPSED_TO_FILES), {})
    connector = ConfirmsLater(config.targets()[0].destination)
    connector.read_back_fails = True
    with caplog.at_level(logging.WARNING, logger="audiencesync.follow"):
        result = run_once(config, connector)
    assert result.status == "ok", result.error
    assert result.platform_size is None
    assert result.push.confirmed == result.plan.total_adds
    assert [r.getMessage() for r in caplog.records] == ["read-back failed"]


def test_an_unanswered_read_back_between_runs_keeps_what_the_follow_settled(
    write_config: WriteConfig,
    demo_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = load_config(write_config(LAPSED_TO_FILES), {})
    sent = pending_run(config)

    settles = ConfirmsLater(config.targets()[0].destination)
    settles.read_back_fails = True
    with caplog.at_level(logging.WARNING, logger="audiencesync.follow"):
        daemon = follow_between_runs(config, settles, monkeypatch)
    assert in_flight(config) == 0
    assert synced(config) == sent
    assert follow_errors(daemon, config) == 1
    assert "read-back failed" in [r.getMessage() for r in caplog.records]
