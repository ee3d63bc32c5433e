"""The runner as cron drives it (``audience-sync sync``): what it records after a push, and what it
does with the connectors it built."""

from __future__ import annotations

import time
from pathlib import Path

from audiencesync.connectors.contract import Connector, PlatformStatus
from audiencesync.connectors.file import FileConnector
from audiencesync.state.store import StateStore
from audiencesync.sync.cli import cli
from audiencesync.sync.config import Target, load_config
from audiencesync.sync.runner import RunOptions, SyncRunner
from click.testing import CliRunner
from sample_configs import WriteConfig


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
