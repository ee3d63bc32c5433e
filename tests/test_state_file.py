"""The state file across versions and its transactions: a file written before migrations moved to
sqlite-utils' ``Migrations`` opens with its recorded versions honoured, a file from a newer release
is refused untouched, and ``atomic`` locks first and nests as savepoints."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from audiencesync.state.db import StateFileError, atomic, connect
from audiencesync.state.schema import VERSIONS
from audiencesync.state.sealed import sealer_for
from audiencesync.state.store import StateStore

# Written by state/db.py at commit 889d7a6, which recorded versions 1-7 in schema_migrations only,
# with one target holding a member (its zip sealed), a queued add, a run, a rejection, a lag record
# and a firing alert. Its sealing key is this passphrase.
LEGACY = Path(__file__).parent / "fixtures" / "state_v7.db"
LEGACY_KEY = "fixture passphrase"


@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUDIENCE_SYNC_STATE_KEY", LEGACY_KEY)
    path = tmp_path / "state.db"
    shutil.copy(LEGACY, path)
    return path


def applied(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [n for (n,) in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]


def versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_a_file_from_before_the_migrations_library_keeps_its_rows_and_is_not_migrated_again(
    legacy: Path,
) -> None:
    store = StateStore.open(legacy)
    try:
        target = store.find_target("vip@meta_main")
        assert target is not None and target.platform_audience_id == "2384"
        (summary,) = store.target_summaries()
        assert (summary["members"], summary["queued"], summary["last_status"]) == (1, 1, "ok")
        assert store.runs.totals()["vip@meta_main"].confirmed == 1
        assert store.runs.rejection_totals() == {"vip@meta_main": {"invalid email": 1}}
        assert store.alerts.known(target.id)["drift"].firing is True
        assert store.lag.stats("to_confirmed", since=0)[target.id].count == 1
        # The member's postal code, sealed by the old release, still opens with the same key.
        (payload,) = store.db.execute("SELECT payload FROM members").fetchone()
        assert sealer_for(store.db.conn).open_json(payload) != payload
    finally:
        store.close()
    assert applied(legacy) == [v.name for v in VERSIONS]
    assert versions(legacy) == [v.version for v in VERSIONS]


def test_opening_a_file_twice_applies_nothing_the_second_time(legacy: Path) -> None:
    connect(legacy).close()
    with sqlite3.connect(legacy) as conn:
        before = conn.execute("SELECT id, name, applied_at FROM _sqlite_migrations").fetchall()
    connect(legacy).close()
    with sqlite3.connect(legacy) as conn:
        assert conn.execute("SELECT id, name, applied_at FROM _sqlite_migrations").fetchall() == before


def test_a_new_file_records_each_migration_for_this_release_and_for_older_ones(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    connect(path).close()
    assert applied(path) == [v.name for v in VERSIONS]
    # Older releases read schema_migrations to refuse a file newer than they know.
    assert versions(path) == [v.version for v in VERSIONS]


def test_a_migration_this_release_does_not_know_is_refused_and_the_file_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    connect(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
            "VALUES ('audience-sync', '0099_from_the_future', 'later')"
        )
    before = path.read_bytes()
    with pytest.raises(StateFileError, match="0099_from_the_future"):
        connect(path)
    assert path.read_bytes() == before


def test_a_failing_nested_block_undoes_only_itself(tmp_path: Path) -> None:
    db = connect(tmp_path / "state.db")
    try:
        with atomic(db) as conn:
            conn.execute(
                "INSERT INTO targets (key, audience, destination, platform, created_at) VALUES ('kept', 'a', 'd', 'file', 0)"
            )
            with pytest.raises(ZeroDivisionError), atomic(db) as inner:
                inner.execute(
                    "INSERT INTO targets (key, audience, destination, platform, created_at) VALUES ('undone', 'a', 'd', 'file', 0)"
                )
                raise ZeroDivisionError
        assert [k for (k,) in db.execute("SELECT key FROM targets")] == ["kept"]
    finally:
        db.conn.close()


def test_a_failing_outer_block_undoes_its_nested_blocks_too(tmp_path: Path) -> None:
    db = connect(tmp_path / "state.db")
    try:
        with pytest.raises(ZeroDivisionError), atomic(db):
            with atomic(db) as inner:
                inner.execute(
                    "INSERT INTO targets (key, audience, destination, platform, created_at) VALUES ('x', 'a', 'd', 'file', 0)"
                )
            raise ZeroDivisionError
        assert db.execute("SELECT count(*) FROM targets").fetchone()[0] == 0
        assert not db.conn.in_transaction
    finally:
        db.conn.close()


def test_a_writer_waits_for_the_lock_before_its_block_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    monkeypatch.setenv("AUDIENCE_SYNC_STATE_BUSY_SECONDS", "0.2")
    first, second = connect(path), connect(path)
    entered = threading.Event()
    try:
        # BEGIN IMMEDIATE: the second writer is refused at the start, before it reads or writes.
        with atomic(first), pytest.raises(sqlite3.OperationalError, match="locked"), atomic(second):
            entered.set()
        assert not entered.is_set()
        with atomic(second) as conn:  # free again once the first committed
            conn.execute(
                "INSERT INTO targets (key, audience, destination, platform, created_at) VALUES ('k', 'a', 'd', 'file', 0)"
            )
    finally:
        first.conn.close()
        second.conn.close()
