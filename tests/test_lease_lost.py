"""A push whose lease was lost (this process stalled past its expiry and another took the target
over) stops after the batch in flight instead of pushing on beside the new holder."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from audiencesync.connectors.contract import Capabilities, Change, PushResult, SessionInfo
from audiencesync.connectors.file.connector import FileConnector
from audiencesync.state import lease
from audiencesync.state.store import StateStore
from audiencesync.sync import runner as runner_module
from audiencesync.sync.config import load_config
from audiencesync.sync.runner import RunOptions, SyncRunner
from sample_configs import WriteConfig


def test_a_push_stops_once_its_lease_is_taken_over(
    tmp_path: Path, demo_db: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Renew every 0.1 s, so a takeover is noticed within the test's pause.
    monkeypatch.setattr(runner_module, "acquire", partial(lease.acquire, ttl=0.3))
    state = tmp_path / "state.db"
    sent: list[int] = []

    class TakenOverAfterOneBatch(FileConnector):
        def capabilities(self) -> Capabilities:
            return replace(super().capabilities(), max_batch=100)

        def add(self, audience_id: str, batch: Sequence[Change], session: SessionInfo | None) -> PushResult:
            sent.append(len(batch))
            if len(sent) == 1:
                with sqlite3.connect(state) as other:  # another process takes the lease over
                    other.execute("UPDATE leases SET holder = 'elsewhere:1:x', pid = 1")
                time.sleep(0.5)
            return super().add(audience_id, batch, session)

    config = load_config(write_config(), {})
    store = StateStore.open(state)
    try:
        options = RunOptions(
            only="lapsed", connector_factory=lambda target: TakenOverAfterOneBatch(target.destination)
        )
        [result] = SyncRunner(config, store, options).run()
        assert result.status == "stopped"
        assert result.error is not None and "lease was lost" in result.error
        assert len(sent) <= 2  # the batch in flight when it was noticed, and nothing after
        assert result.plan.total_adds > 300
        (status,) = store.db.execute("SELECT status FROM runs").fetchone()
        assert status == "stopped"
    finally:
        store.close()
