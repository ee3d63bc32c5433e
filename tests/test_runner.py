"""The runner as cron drives it (``audience-sync sync``): what it records after a push, and what it
does with the connectors it built."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from audiencesync.connectors.contract import (
    AudienceSpec,
    Capabilities,
    Change,
    Connector,
    PlatformStatus,
    PushResult,
    SessionInfo,
)
from audiencesync.connectors.errors import FatalError
from audiencesync.connectors.file.connector import FileConnector
from audiencesync.state.store import StateStore
from audiencesync.sync import daemon as daemon_module
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import Target, load_config
from audiencesync.sync.daemon import Daemon, DaemonOptions
from audiencesync.sync.errors import SourceError
from audiencesync.sync.runner import RunOptions, SyncRunner, TargetResult
from click.testing import CliRunner
from sample_configs import FILE_DESTINATION, WriteConfig

TWO_FILE_DESTINATIONS = """
[destinations.files]
platform = "file"
directory = "exports"

[destinations.archive]
platform = "file"
directory = "archive"

[[syncs]]
audience = "lapsed"
destinations = ["files", "archive"]

[[syncs]]
audience = "vip"
destinations = ["files"]
"""


class StaleContentFile(FileConnector):
    """The file destination, reporting ready with a content time from before the push (as Meta's
    ``time_content_updated`` can be)."""

    def read_back(self, audience_id: str) -> PlatformStatus:
        return PlatformStatus(state="Normal", ready=True, updated_at=time.time() - 3600)


def run(config_path: Path, store: StateStore, factory: type[FileConnector]) -> None:
    config = load_config(config_path, {})

    def build(target: Target) -> Connector:
        return factory(target.destination)

    SyncRunner(config, store, RunOptions(connector_factory=build)).run()


def test_a_cron_sync_stamps_ready_at_on_the_lag_records_it_confirmed(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = write_config()
    before = time.time()
    result = CliRunner().invoke(cli, ["sync", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = StateStore.open(tmp_path / "state.db")
    try:
        rows = store.db.execute("SELECT confirmed_at, ready_at FROM lag").fetchall()
        assert rows
        assert all(ready is not None and confirmed <= ready for confirmed, ready in rows)
        assert all(before <= ready <= time.time() for _, ready in rows)
    finally:
        store.close()


def test_ready_at_is_when_readiness_was_observed_not_the_platforms_content_time(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    store = StateStore.open(tmp_path / "state.db")
    try:
        started = time.time()
        run(write_config(), store, StaleContentFile)
        rows = store.db.execute("SELECT confirmed_at, ready_at FROM lag").fetchall()
        assert rows
        assert all(ready is not None and started <= confirmed <= ready for confirmed, ready in rows)
    finally:
        store.close()


class ClosingFile(FileConnector):
    """The file destination with a ``close`` that counts its calls in ``closed``."""

    closed: list[str]

    def close(self) -> None:
        self.closed.append(self.dest.name)


def closing(closed: list[str], broken: Callable[[], None] | None = None) -> type[ClosingFile]:
    class Connector(ClosingFile):
        def ensure_audience(self, spec: AudienceSpec) -> str:
            if broken is not None:
                broken()
            return super().ensure_audience(spec)

    Connector.closed = closed
    return Connector


def runner_for(config_path: Path, store: StateStore, factory: type[FileConnector]) -> SyncRunner:
    config = load_config(config_path, {})
    return SyncRunner(config, store, RunOptions(connector_factory=lambda t: factory(t.destination)))


def test_a_run_closes_every_connector_it_built_once(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    closed: list[str] = []
    store = StateStore.open(tmp_path / "state.db")
    try:
        results = runner_for(write_config(TWO_FILE_DESTINATIONS), store, closing(closed)).run()
    finally:
        store.close()
    assert {r.status for r in results} == {"ok"}
    assert sorted(closed) == ["archive", "files"]


def test_a_destination_error_still_closes_the_connectors(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    def refuse() -> None:
        raise FatalError("token revoked")

    closed: list[str] = []
    store = StateStore.open(tmp_path / "state.db")
    try:
        results = runner_for(write_config(), store, closing(closed, refuse)).run()
    finally:
        store.close()
    assert {r.status for r in results} == {"error"}
    assert closed == ["files"]


def test_an_exception_out_of_the_run_still_closes_the_connectors(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    # A lapsed profile without an id: the source check passes (the columns are all there), and
    # planning fails on that row after the connector was built for its capabilities.
    with sqlite3.connect(demo_db) as conn:
        conn.execute(
            "UPDATE profiles SET profile_id = '' WHERE rowid = "
            "(SELECT min(rowid) FROM profiles WHERE stage = 'lapsed_customer')"
        )
    closed: list[str] = []
    store = StateStore.open(tmp_path / "state.db")
    try:
        with pytest.raises(SourceError):
            runner_for(write_config(), store, closing(closed)).run()
    finally:
        store.close()
    assert closed == ["files"]


def test_a_saved_plan_push_closes_the_connectors(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = write_config()
    plan = tmp_path / "plan.jsonl"
    made = CliRunner().invoke(cli, ["sync", "--config", str(config), "--dry-run", "--plan-out", str(plan)])
    assert made.exit_code == 0, made.output
    closed: list[str] = []
    store = StateStore.open(tmp_path / "state.db")
    try:
        results = runner_for(config, store, closing(closed)).apply_plan(plan)
    finally:
        store.close()
    assert {r.status for r in results} == {"ok"}
    assert closed == ["files"]


def test_a_failing_close_is_logged_and_does_not_change_how_the_run_ended(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenClose(FileConnector):
        def close(self) -> None:
            raise OSError("already gone")

    built: dict[str, type[FileConnector]] = {"files": FileConnector, "archive": BrokenClose}
    config = load_config(write_config(TWO_FILE_DESTINATIONS), {})
    store = StateStore.open(tmp_path / "state.db")
    try:
        options = RunOptions(connector_factory=lambda t: built[t.destination.name](t.destination))
        with caplog.at_level(logging.WARNING, logger="audiencesync.runner"):
            results: list[TargetResult] = SyncRunner(config, store, options).run()
    finally:
        store.close()
    assert {r.status for r in results} == {"ok"}
    failed = [r for r in caplog.records if r.getMessage() == "closing a connector failed"]
    assert [getattr(r, "connector", None) for r in failed] == ["BrokenClose"]


def test_the_daemon_follow_tick_closes_the_connectors_it_built(
    write_config: WriteConfig, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = write_config(FILE_DESTINATION)
    assert CliRunner().invoke(cli, ["sync", "--config", str(config_path)]).exit_code == 0
    closed: list[str] = []
    factory = closing(closed)
    monkeypatch.setattr(daemon_module, "build_connector", factory)
    Daemon(load_config(config_path, {}), DaemonOptions()).follow_tick()
    assert closed == ["files"]


def test_a_stop_requested_while_a_batch_is_on_the_wire_saves_it_and_sends_nothing_new(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    """The runner sends the next batch while it commits the previous one; a stop (SIGTERM) must still
    mean: the batch on the wire is saved, no new batch starts, the rest stays queued."""
    stop = {"requested": False}
    sent: list[int] = []

    class StopAfterTwoBatches(FileConnector):
        def capabilities(self) -> Capabilities:
            return replace(super().capabilities(), max_batch=100)

        def add(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
            sent.append(len(batch))
            if len(sent) == 2:
                stop["requested"] = True  # SIGTERM arrives while the second batch is on the wire
            return super().add(audience_id, batch, session)

    config = load_config(write_config(), {})
    store = StateStore.open(tmp_path / "state.db")
    try:
        options = RunOptions(
            only="lapsed",
            connector_factory=lambda target: StopAfterTwoBatches(target.destination),
            should_stop=lambda: stop["requested"],
        )
        [result] = SyncRunner(config, store, options).run()
        assert len(sent) == 2
        assert result.push.confirmed == sum(sent) == 200
        members = store.db.execute("SELECT count(*) FROM members").fetchone()[0]
        queued = store.db.execute("SELECT count(*) FROM outbox WHERE status = 'queued'").fetchone()[0]
        assert members == 200
        assert queued == result.plan.total_adds - 200 > 0
    finally:
        store.close()


def test_a_refused_upload_session_is_abandoned_and_its_batches_resent_in_a_new_one(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    """Meta may refuse a session (closed, expired, a batch_seq it never saw): the runner starts a new
    session and resends the refused batch and the rest, in the same run, instead of failing the target."""
    sessions: list[tuple[int, int]] = []

    class RefusesTheSecondBatchOnce(FileConnector):
        def capabilities(self) -> Capabilities:
            return replace(super().capabilities(), max_batch=100, uses_sessions=True)

        def add(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
            assert session is not None
            sessions.append((session.session_id, session.batch_seq))
            if len(sessions) == 2:
                return PushResult(retry=[c.member_key for c in batch], detail={"session_refused": "100"})
            return super().add(audience_id, batch, session)

    config = load_config(write_config(), {})
    store = StateStore.open(tmp_path / "state.db")
    try:
        options = RunOptions(
            only="lapsed", connector_factory=lambda target: RefusesTheSecondBatchOnce(target.destination)
        )
        [result] = SyncRunner(config, store, options).run()
        assert result.status == "ok"
        assert result.push.confirmed == result.plan.total_adds
        assert store.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        first, refused, *rest = sessions
        assert refused == (first[0], 2)
        # The resend opens a new session at batch_seq 1.
        assert rest[0][0] != first[0] and rest[0][1] == 1
    finally:
        store.close()
