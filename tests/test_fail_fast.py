"""Failing loudly and fast: a loopback endpoint that refuses connections fails its destination at
once, naming the endpoint and how to start the emulator; a retry logs a line as it happens."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audiencesync.connectors.meta.emulator import start_emulator
from sample_configs import WriteConfig, meta_main, syncs

CLI = Path(sys.executable).parent / "audience-sync"


def meta_vip(port: int, max_wait_seconds: int = 600) -> str:
    return meta_main(f"http://127.0.0.1:{port}", max_wait_seconds) + syncs("vip", destinations=("meta_main",))


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_loopback_endpoint_fails_at_once_saying_how_to_start_the_emulator(
    tmp_path: Path, demo_db: Path, write_config: WriteConfig
) -> None:
    port = unused_port()
    config = write_config(meta_vip(port))
    started = time.monotonic()
    proc = subprocess.run(
        [str(CLI), "sync", "--config", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - started < 20  # not ten minutes of silent retries
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert f"127.0.0.1:{port}" in out
    assert f"audience-sync emulator meta --port {port}" in out.replace("\n", " ")
    assert "Traceback" not in out


def test_each_retry_logs_what_why_and_the_next_try(
    tmp_path: Path, demo_db: Path, write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    from audiencesync.sync.config import load_config
    from audiencesync.sync.runner import sync_once

    emulator = start_emulator(port=0, server_error_rate=1.0)
    # Attached to the logger itself: the CLI's log set-up (run by other tests) stops propagation.
    retry_log = logging.getLogger("audiencesync.connectors.retry")
    retry_log.addHandler(caplog.handler)
    try:
        config = load_config(write_config(meta_vip(emulator.port, max_wait_seconds=2)), {})
        [result] = sync_once(config)
    finally:
        retry_log.removeHandler(caplog.handler)
        emulator.stop()
    assert result.status == "partial", result.error
    retries = [r.getMessage() for r in caplog.records if r.name == "audiencesync.connectors.retry"]
    assert retries, "no retry was logged"
    assert all(m.startswith("meta: ") and "failed (" in m and "; try " in m and "s" in m for m in retries)
    assert any("try 2 in" in m for m in retries)
