"""``audience-sync sync`` as a real subprocess, stopped by SIGTERM or SIGINT while it pushes to the
Meta emulator: it saves the batch in flight, records the run as ``stopped``, leaves no run
``running`` and no lease behind, and exits 143 or 130."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audiencesync.connectors.meta.emulator import MetaEmulator, start_emulator
from meta_emulator_admin import set_faults
from sample_configs import WriteConfig, meta_main, syncs

CLI = Path(sys.executable).parent / "audience-sync"


def meta_syncs(endpoint: str) -> str:
    return meta_main(endpoint) + syncs("lapsed", "in_checkout", "vip", destinations=("meta_main",))


@pytest.fixture
def meta() -> Iterator[MetaEmulator]:
    emulator = start_emulator(port=0)
    yield emulator
    emulator.stop()


def state_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_sync_stops_it_cleanly_with_a_documented_exit_code(
    sig: signal.Signals,
    code: int,
    tmp_path: Path,
    demo_db: Path,
    meta: MetaEmulator,
    write_config: WriteConfig,
) -> None:
    config = write_config(meta_syncs(meta.url))
    state = tmp_path / "state.db"
    set_faults(meta, slow_rate=1.0, slow_seconds=0.5)  # every Graph call takes 0.5 s
    proc = subprocess.Popen(
        [str(CLI), "sync", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job ignores SIGINT; start this one as a foreground one would be.
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not state_rows(state, "SELECT 1 FROM runs WHERE status = 'running'"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no run started"
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert time.monotonic() - started < 15
    assert "Traceback" not in err
    assert "stop requested" in err
    statuses = [s for (s,) in state_rows(state, "SELECT status FROM runs ORDER BY id")]
    assert statuses and "running" not in statuses
    assert statuses[-1] == "stopped"
    assert len(statuses) < 3, "targets after the stop must not start"
    assert state_rows(state, "SELECT count(*) FROM leases") == [(0,)]
    assert "stopped" in out
