"""The README's walkthrough, end to end, as a user types it: emulators running in another terminal
(``audience-sync emulator all``), then demo, demo advance, sync --dry-run, sync, lag; every step
exits 0. Also: a port taken by another program ends ``demo`` with one line and its exit code,
before anything is written."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.demo.emulation import listening
from click.testing import CliRunner, Result
from loopback import free_ports

CLI = Path(sys.executable).parent / "audience-sync"
PACKAGED = Path(__file__).parent.parent / "sync" / "config.example.toml"


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    """The packaged example config, on free ports."""
    text = PACKAGED.read_text(encoding="utf-8")
    for default, port in zip(("8801", "8802", "8803"), free_ports(3), strict=True):
        text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    path = tmp_path / "config.example.toml"
    path.write_text(text, encoding="utf-8")
    return path


def ports_of(config: Path) -> list[int]:
    text = config.read_text(encoding="utf-8")
    return [int(line.split(":")[-1].rstrip('"')) for line in text.splitlines() if line.startswith("endpoint")]


@pytest.fixture
def emulators(demo_config: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [str(CLI), "emulator", "all", "--config", str(demo_config)],
        cwd=demo_config.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not all(listening(p, timeout=0.3) for p in ports_of(demo_config)):
            assert proc.poll() is None, "the emulators exited"
            assert time.monotonic() < deadline, "the emulators did not start"
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(15)


def step(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_readme_walkthrough_works_end_to_end(
    demo_config: Path, emulators: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(demo_config.parent)
    cfg = str(demo_config)
    demo = step("demo", "--config", cfg, "--profiles", "2000")
    assert demo.exit_code == 0, demo.output
    assert "already running" in demo.output
    advanced = step("demo", "advance", "--config", cfg, "--seed", "1")
    assert advanced.exit_code == 0, advanced.output
    dry = step("sync", "--dry-run", "--json", "--config", cfg)
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)["targets"]
    assert sum(t["adds"] + t["removes"] for t in planned) > 0
    # Only the day's changes: nothing like a first sync of every member.
    assert all(t["adds"] < t["source_members"] for t in planned if t["source_members"])
    synced = step("sync", "--json", "--config", cfg)
    assert synced.exit_code == 0, synced.output
    results = json.loads(synced.stdout)["targets"]
    assert {t["status"] for t in results} == {"ok"}, [t["error"] for t in results]
    lag = step("lag", "--json", "--config", cfg)
    assert lag.exit_code == 0, lag.output
    assert all(t["last_success_at"] for t in json.loads(lag.stdout)["targets"])


def test_a_busy_port_ends_the_demo_with_one_line_before_anything_is_written(
    demo_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(demo_config.parent)
    port = ports_of(demo_config)[0]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        proc = subprocess.run(
            [str(CLI), "demo", "--config", str(demo_config), "--profiles", "500"],
            cwd=demo_config.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 6
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0], proc.stderr
    assert not (demo_config.parent / "demo").exists()  # no profiles, no state
