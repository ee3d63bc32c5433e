"""StateStore bookkeeping that no end-to-end test reaches on its own."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from audiencesync.connectors.contract import PlatformStatus
from audiencesync.state.store import RUN_COUNTS, StateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def test_forget_target_clears_its_alert_state_so_a_new_target_starts_quiet(store: StateStore) -> None:
    kept = store.ensure_target("vip@files", "vip", "files", "file").id
    gone = store.ensure_target("lapsed@files", "lapsed", "files", "file").id
    for tid in (kept, gone):
        store.db.execute(
            "INSERT INTO alert_state (target_id, kind, firing, detail, changed_at, notified_at) "
            "VALUES (?, 'drift', 1, 'x', ?, ?)",
            [tid, time.time(), time.time()],
        )
    store.db.conn.commit()

    store.forget_target("lapsed@files")

    rows = store.db.execute("SELECT target_id FROM alert_state").fetchall()
    assert rows == [(kept,)]
    # The id is free again; the target that takes it inherits no firing alert.
    reborn = store.ensure_target("lapsed@files", "lapsed", "files", "file").id
    assert store.db.execute("SELECT 1 FROM alert_state WHERE target_id = ?", [reborn]).fetchall() == []


def test_run_history_shows_every_count_finish_run_records(store: StateStore) -> None:
    tid = store.ensure_target("vip@files", "vip", "files", "file").id
    counts = {name: number for number, name in enumerate(RUN_COUNTS, start=1)}
    counts["invalid"] = {"email_no_at": 2}
    run_id = store.runs.start(tid, "cli")
    store.runs.finish(run_id, "ok", {**counts, "not_a_count": 7}, None)
    (row,) = store.runs.history(10)
    assert {name: row[name] for name in RUN_COUNTS} == counts
    assert (row["id"], row["target"], row["trigger"], row["status"], row["error"]) == (
        run_id,
        "vip@files",
        "cli",
        "ok",
        None,
    )
    assert "not_a_count" not in row
    assert store.runs.history(10, ["lapsed@files"]) == []


def test_the_run_log_names_the_newest_run_and_how_the_newest_finished_one_ended(store: StateStore) -> None:
    tid = store.ensure_target("vip@files", "vip", "files", "file").id
    assert store.runs.latest_id(tid) == 0 and store.runs.last_finished("vip@files") is None
    failed = store.runs.start(tid, "cli")
    store.runs.finish(failed, "error", {}, "PlatformError: 500")
    running = store.runs.start(tid, "daemon")
    assert store.runs.latest_id(tid) == running
    # The run under way has not ended: the newest finished one is the failure.
    last = store.runs.last_finished("vip@files")
    assert last is not None and (last.status, last.error) == ("error", "PlatformError: 500")


def test_a_read_back_stamps_lag_and_keeps_the_platform_view_together(store: StateStore) -> None:
    tid = store.ensure_target("vip@files", "vip", "files", "file").id
    store.db.execute(
        "INSERT INTO lag (target_id, op, observed_at, confirmed_at) VALUES (?, 'add', 1, 2)", [tid]
    )
    with pytest.raises(sqlite3.Error):
        # A platform view that cannot be saved leaves the lag records unstamped too.
        store.record_read_back(tid, PlatformStatus(object(), 1, "Normal", ready=True), read_at=5.0)  # type: ignore[arg-type]
    assert store.db.execute("SELECT ready_at FROM lag").fetchone()[0] is None
    store.record_read_back(tid, PlatformStatus(1, 1, "Normal", ready=True), read_at=5.0)
    assert store.db.execute("SELECT ready_at FROM lag").fetchone()[0] == 5.0
