"""``audience-sync sync`` as a real subprocess, stopped by SIGTERM or SIGINT while it pushes to the
Meta emulator: it saves the batch in flight, records the run as ``stopped``, leaves no run
``running`` and no lease behind, and exits 143 or 130."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audiencesync.connectors.meta.emulator import MetaEmulator, start_emulator
from sample_configs import WriteConfig

CLI = Path(sys.executable).parent / "audience-sync"

META = """
[destinations.meta_main]
platform = "meta"
ad_account_id = "act_1234567890"
access_token_env = "META_TEST_TOKEN"
endpoint = "{endpoint}"
max_wait_seconds = 5

[[syncs]]
audience = "lapsed"
destinations = ["meta_main"]

[[syncs]]
audience = "in_checkout"
destinations = ["meta_main"]

[[syncs]]
audience = "vip"
destinations = ["meta_main"]
"""


@pytest.fixture
def meta() -> Iterator[MetaEmulator]:
    emulator = start_emulator(port=0)
    yield emulator
    emulator.stop()


def set_faults(emulator: MetaEmulator, **faults: Any) -> None:
    request = urllib.request.Request(
        f"{emulator.admin_url}/_emulator/faults",
        data=json.dumps(faults).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


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
    config = write_config(META.format(endpoint=meta.url))
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
