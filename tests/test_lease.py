"""The cross-process lease: one holder per target, renewed while held, taken over once it expired or
its holder died (SIGKILL), and honoured by a one-shot ``sync``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from audiencesync.state.db import connect
from audiencesync.state.lease import LeaseBusy, acquire, held, read_lease
from audiencesync.state.store import StateStore
from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner
from sample_configs import WriteConfig

HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from audiencesync.state.db import connect
    from audiencesync.state.lease import acquire
    db = connect(Path(sys.argv[1]))
    lease = acquire(db, int(sys.argv[2]), ttl=float(sys.argv[3]))
    print("held", flush=True)
    time.sleep(60)
    """
)


def _target(path: Path, key: str = "lapsed@files") -> int:
    store = StateStore.open(path)
    try:
        return store.ensure_target(key, "lapsed", "files", "file").id
    finally:
        store.close()


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _hold_in_subprocess(path: Path, target_id: int, ttl: float = 600.0) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(path), str(target_id), str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_waits_then_gives_up_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    tid = _target(path)
    first, second = connect(path), connect(path)
    with held(first, tid):
        started = time.monotonic()
        with pytest.raises(LeaseBusy) as busy:
            acquire(second, tid, wait=0.5)
        assert 0.45 <= time.monotonic() - started < 2.0
        assert f"pid {os.getpid()}" in str(busy.value)
    # Released: the next one gets it at once.
    with held(second, tid):
        row = read_lease(second, tid)
        assert row is not None and row.pid == os.getpid()
    assert read_lease(second, tid) is None


def test_a_waiting_holder_gets_the_lease_when_the_first_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    tid = _target(path)
    proc = _hold_in_subprocess(path, tid, ttl=600.0)
    try:
        db = connect(path)
        with pytest.raises(LeaseBusy):
            acquire(db, tid, wait=0.3)
        proc.terminate()  # SIGTERM: the lease row stays, but its pid is gone
        proc.wait(5)
        with held(db, tid, wait=2.0) as lease:
            assert not lease.lost
    finally:
        _stop(proc)


def test_the_lease_of_a_killed_holder_is_taken_over_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    tid = _target(path)
    proc = _hold_in_subprocess(path, tid, ttl=600.0)
    db = connect(path)
    row = read_lease(db, tid)
    assert row is not None and row.pid == proc.pid and row.expires_at > time.time() + 500
    with pytest.raises(LeaseBusy):
        acquire(db, tid, wait=0.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped: a zombie would still answer kill(pid, 0)
    _stop(proc)
    started = time.monotonic()
    with held(db, tid, wait=0.0):
        assert read_lease(db, tid).pid == os.getpid()  # type: ignore[union-attr]
    assert time.monotonic() - started < 1.0


def test_an_expired_lease_is_taken_over_even_if_its_holder_lives(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    tid = _target(path)
    db = connect(path)
    # A holder on another machine that stopped renewing: only expiry frees it.
    db.execute(
        "INSERT INTO leases (target_id, holder, pid, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        [tid, "other-host:1:abcd", 1, time.time() - 120, time.time() + 0.4],
    )
    with pytest.raises(LeaseBusy):
        acquire(db, tid, wait=0.0)
    with held(db, tid, wait=2.0):
        row = read_lease(db, tid)
        assert row is not None and row.pid == os.getpid()


def test_a_held_lease_is_renewed_past_its_ttl(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    tid = _target(path)
    first, second = connect(path), connect(path)
    with held(first, tid, ttl=0.6) as lease:
        time.sleep(1.5)  # well past one ttl: only renewal keeps it
        with pytest.raises(LeaseBusy):
            acquire(second, tid, wait=0.0)
        assert not lease.lost


def test_sync_skips_a_target_another_live_process_is_pushing(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config()
    runner = CliRunner()
    assert runner.invoke(cli, ["sync", "--config", str(config)], catch_exceptions=False).exit_code == 0
    store = StateStore.open(tmp_path / "state.db")
    tid = store.find_target("lapsed@files").id  # type: ignore[union-attr]
    store.close()
    proc = _hold_in_subprocess(tmp_path / "state.db", tid)
    try:
        monkeypatch.setenv("AUDIENCE_SYNC_LEASE_WAIT_SECONDS", "0.3")
        result = runner.invoke(cli, ["sync", "--config", str(config), "--json"], catch_exceptions=False)
        by_target = {t["target"]: t for t in json.loads(result.stdout)["targets"]}
        assert by_target["lapsed@files"]["status"] == "busy"
        assert f"pid {proc.pid}" in by_target["lapsed@files"]["error"]
        assert by_target["vip@files"]["status"] == "ok"
    finally:
        _stop(proc)
    # Holder gone: the next sync pushes the target again.
    result = runner.invoke(cli, ["sync", "--config", str(config), "--json"], catch_exceptions=False)
    assert {t["status"] for t in json.loads(result.stdout)["targets"]} == {"ok"}
