"""The bad-input corpus: state files, their folders and their disk. What every case must end with is in
bad_input_case.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from audiencesync.sync.demo.profiles import advance, build_profiles
from bad_input_case import Case, assert_one_line, assert_refused, run, state_digest

# --- state files --------------------------------------------------------------------------------


def _garbage(case: Case) -> None:
    case.state.write_bytes(os.urandom(8192))


def _truncated_header(case: Case) -> None:
    case.state.write_bytes(case.state.read_bytes()[:60])


def _truncated_pages(case: Case) -> None:
    case.state.write_bytes(case.state.read_bytes()[: 4096 * 3])


def _text(case: Case) -> None:
    case.state.write_text("members,outbox\n1,2\n", encoding="utf-8")


def _corrupt_middle(case: Case) -> None:
    raw = bytearray(case.state.read_bytes())
    raw[100 : 4096 * 4] = b"\x00" * (4096 * 4 - 100)
    case.state.write_bytes(bytes(raw))


def _newer_schema(case: Case) -> None:
    conn = sqlite3.connect(case.state)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    conn.commit()
    conn.close()


def _foreign_database(case: Case) -> None:
    case.state.unlink()
    shutil.copy(case.root / "profiles.db", case.state)


def _bad_key_file(case: Case) -> None:
    (case.root / "state.db.key").write_text("not a key\n", encoding="utf-8")


STATE_CASES: list[tuple[str, Callable[[Case], None], tuple[str, ...]]] = [
    ("garbage", _garbage, ("state.db", "corrupt")),
    ("truncated_header", _truncated_header, ("state.db", "truncated")),
    ("truncated_pages", _truncated_pages, ("state.db",)),
    ("text_file", _text, ("state.db",)),
    ("zeroed_pages", _corrupt_middle, ("state.db",)),
    ("newer_schema", _newer_schema, ("state.db", "999", "newer")),
    ("foreign_database", _foreign_database, ("state.db", "did not create")),
]


@pytest.mark.parametrize("name,damage,names", STATE_CASES, ids=[c[0] for c in STATE_CASES])
@pytest.mark.parametrize("command", ["sync", "dry-run", "runs", "lag"])
def test_state_cases(
    case: Case, name: str, damage: Callable[[Case], None], names: tuple[str, ...], command: str
) -> None:
    damage(case)
    before = state_digest(case.state)
    raw_before = case.state.read_bytes()
    args = ["sync", "--dry-run"] if command == "dry-run" else [command]
    result = run(case, *args, "--config", str(case.config))
    assert_one_line(assert_refused(result, *names))
    assert state_digest(case.state) == before
    assert case.state.read_bytes() == raw_before


def test_a_newer_schema_names_both_versions(case: Case) -> None:
    from audiencesync.state.db import MIGRATIONS

    _newer_schema(case)
    result = run(case, "sync", "--config", str(case.config))
    message = assert_refused(result, "999", f"({max(v for v, _, _ in MIGRATIONS)})")
    assert_one_line(message)


def test_a_key_file_that_is_not_a_key(case: Case) -> None:
    _bad_key_file(case)
    before = state_digest(case.state)
    assert advance(case.root / "profiles.db", share=0.2, seed=1).stage_moves
    result = run(case, "sync", "--config", str(case.config))
    assert_one_line(assert_refused(result, "state.db.key"))
    assert state_digest(case.state) == before


def test_a_state_path_that_is_a_directory(case: Case) -> None:
    case.replace_in_config('state_path = "state.db"', 'state_path = "statedir"')
    (case.root / "statedir").mkdir()
    result = run(case, "sync", "--config", str(case.config))
    assert_one_line(assert_refused(result, "statedir", "directory"))
    assert list((case.root / "statedir").iterdir()) == []


def test_a_state_path_under_a_file(case: Case) -> None:
    case.replace_in_config('state_path = "state.db"', 'state_path = "profiles.db/state.db"')
    before = (case.root / "profiles.db").read_bytes()
    result = run(case, "sync", "--config", str(case.config))
    assert_one_line(assert_refused(result, "profiles.db", "is a file"))
    assert (case.root / "profiles.db").read_bytes() == before


def test_a_locked_state_file(case: Case) -> None:
    assert advance(case.root / "profiles.db", share=0.2, seed=2).stage_moves
    before = state_digest(case.state)
    holder = sqlite3.connect(case.state, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run(
            case, "sync", "--config", str(case.config), env={"AUDIENCE_SYNC_STATE_BUSY_SECONDS": "0.2"}
        )
        assert_one_line(assert_refused(result, "state.db", "locked"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert state_digest(case.state) == before


def _require_root_mounts() -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (read-only or full filesystems)")


@contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``, unmounted afterwards."""
    _require_root_mounts()
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs failed here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_state_directory(case: Case) -> None:
    assert advance(case.root / "profiles.db", share=0.2, seed=3).stage_moves
    with small_filesystem(case.root / "ro", "8m") as mount:
        shutil.copy(case.state, mount / "state.db")
        shutil.copy(case.root / "state.db.key", mount / "state.db.key") if (
            case.root / "state.db.key"
        ).exists() else None
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        case.replace_in_config('state_path = "state.db"', 'state_path = "ro/state.db"')
        before = (mount / "state.db").read_bytes()
        result = run(case, "sync", "--config", str(case.config))
        assert_one_line(assert_refused(result, "ro/state.db", "read-only"))
        assert (mount / "state.db").read_bytes() == before


def test_a_full_disk_stops_cleanly_and_the_next_run_succeeds(case: Case) -> None:
    case.replace_in_config('state_path = "state.db"', 'state_path = "small/state.db"')
    build_profiles(case.root / "profiles.db", 4000, seed=9)
    with small_filesystem(case.root / "small", "160k") as mount:
        result = run(case, "sync", "--config", str(case.config))
        assert_one_line(assert_refused(result, "small/state.db", "disk is full"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        again = run(case, "sync", "--config", str(case.config))
        assert again.exit_code == 0, again.output
        conn = sqlite3.connect(mount / "state.db")
        try:
            assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM members").fetchone()[0] > 0
        finally:
            conn.close()


# --- a few as real processes ---------------------------------------------------------------------


@pytest.mark.parametrize("damage", [_garbage, _newer_schema], ids=["corrupt", "newer_schema"])
def test_as_a_subprocess(case: Case, damage: Callable[[Case], None]) -> None:
    damage(case)
    before = case.state.read_bytes()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("audience-sync")), "sync", "--config", str(case.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and "state.db" in done.stderr
    assert case.state.read_bytes() == before
