"""The daemon runs what it schedules: its own follow step between runs never makes a scheduled push
skip as busy; the push waits for the follow step of its target and then runs."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from audiencesync.sync import daemon as daemon_module
from audiencesync.sync.config import load_config
from audiencesync.sync.daemon import Daemon, DaemonOptions
from audiencesync.sync.follow import FollowReport, FollowStep
from audiencesync.sync.runner import sync_once
from sample_configs import WriteConfig


def runs_of(state: Path, key: str) -> list[str]:
    with closing(sqlite3.connect(state)) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT r.status FROM runs r JOIN targets t ON t.id = r.target_id WHERE t.key = ? ORDER BY r.id",
                [key],
            )
        ]


def test_a_scheduled_run_that_lands_during_the_follow_step_waits_and_runs(
    demo_db: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write_config())
    sync_once(config)  # every target now has a platform audience to follow
    key = config.targets()[0].key  # the follow step starts with it
    following, release = threading.Event(), threading.Event()

    class SlowFollow(FollowStep):
        def follow(self, *_args: Any, **_kwargs: Any) -> FollowReport:
            following.set()
            release.wait(5)
            return FollowReport()

    monkeypatch.setattr(daemon_module, "FollowStep", SlowFollow)
    daemon = Daemon(config, DaemonOptions(jitter_seconds=0))
    follow = threading.Thread(target=daemon.follow_tick)
    follow.start()
    try:
        assert following.wait(5)
        threading.Timer(0.5, release.set).start()
        started = time.monotonic()
        daemon.run_target(key)
        waited = time.monotonic() - started
    finally:
        release.set()
        follow.join(10)
    assert runs_of(config.state_path, key) == ["ok", "ok"]
    assert waited >= 0.4  # it waited for the follow step rather than skipping
