"""Crash points and fault mixes, then one clean run: nothing lost, nothing stale, no unintended
remove, no stuck target, on every platform emulator (Meta, TikTok, Google on both backends)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from scenarios import (
    DRIVER,
    FAULT_MIXES,
    PLATFORMS,
    Emulators,
    Figures,
    Scenario,
    crash_schedule,
    run_crash_point,
    run_fault_mix,
)

CRASH_SEED = 17
FULL_CRASH_POINTS = 56
SAMPLE_CRASH_POINTS = 2


def test_sigkill_at_seeded_points_then_one_clean_run_converges(
    tmp_path: Path, emulators: Emulators, figures: Figures, full: bool
) -> None:
    # The schedule is seeded; a scheduled kill lands only if the run gets that far (a run with two
    # batches has no third), so points are drawn until enough kills landed.
    wanted = FULL_CRASH_POINTS if full else SAMPLE_CRASH_POINTS
    schedule = crash_schedule(CRASH_SEED, 3 * wanted)
    before = (figures.lost, figures.stale, figures.unintended_removes, figures.stuck, len(figures.failures))
    landed = figures.crash_points
    for index, (platform, point, at) in enumerate(schedule):
        if figures.crash_points - landed >= wanted:
            break
        run_crash_point(tmp_path, emulators, figures, index, platform, point, at)
    after = (figures.lost, figures.stale, figures.unintended_removes, figures.stuck)
    assert after == before[:4], figures.failures[before[4] :]
    assert figures.crash_points - landed >= (50 if full else 1)


def _mixes(full: bool) -> list[tuple[str, dict[str, object]]]:
    every = [(p, mix) for p in PLATFORMS for mix in FAULT_MIXES[p]]
    # The sample: Meta transport faults (438 changes stayed queued before) and Meta's sampled
    # invalid entries, which report failures only as counts.
    return every if full else [("meta", {"server_error_rate": 0.3}), ("meta", {"reject_row_rate": 0.3})]


def test_every_fault_mix_converges_after_one_clean_run(
    tmp_path: Path, emulators: Emulators, figures: Figures, full: bool
) -> None:
    before = (figures.lost, figures.stale, figures.unintended_removes, figures.stuck, len(figures.failures))
    for index, (platform, mix) in enumerate(_mixes(full)):
        run_fault_mix(tmp_path, emulators, figures, index, platform, dict(mix))
    after = (figures.lost, figures.stale, figures.unintended_removes, figures.stuck)
    assert after == before[:4], figures.failures[before[4] :]


def test_two_syncs_and_a_daemon_at_once_on_one_state_file_lose_nothing(
    tmp_path: Path, emulators: Emulators, figures: Figures, full: bool
) -> None:
    """Two ``sync`` processes started together on one state file (cron overlapping a manual run),
    beside a daemon ticking every second on the same file: the target lease lets one push at a
    time; the others wait or skip, the daemon stops cleanly on SIGTERM, and a clean run then finds
    nothing lost or stale."""
    rounds = 4 if full else 1
    mark = (figures.lost, figures.stale, figures.stuck, len(figures.failures))
    for index in range(rounds):
        platform = PLATFORMS[index % len(PLATFORMS)]
        scenario = Scenario(tmp_path, emulators, platform, seed=9000 + index)
        command = [sys.executable, str(DRIVER), str(scenario.config), "none", "0", "40", *scenario.main]
        daemon = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("audience-sync")),
                "daemon",
                "--config",
                str(scenario.config),
            ],
            cwd=scenario.dir,
            env={**os.environ, "AUDIENCE_SYNC_TICK_SECONDS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        children = [
            subprocess.Popen(command, cwd=scenario.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        for child in children:
            _out, err = child.communicate(timeout=120)
            assert child.returncode in (0, 1), err.decode()[-2000:]
        deadline = time.monotonic() + 30  # let the daemon run at least once beside them
        while time.monotonic() < deadline and "daemon" not in _triggers(scenario.dir / "state.db"):
            assert daemon.poll() is None, daemon.stderr.read().decode()[-2000:] if daemon.stderr else ""
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, err.decode()[-2000:]
        assert b"Traceback" not in err, err.decode()[-2000:]
        assert "daemon" in _triggers(scenario.dir / "state.db")  # it ran beside the two syncs
        scenario.change_source(1)
        scenario.check(figures, {}, f"concurrent {platform}")
    assert (figures.lost, figures.stale, figures.stuck) == mark[:3], figures.failures[mark[3] :]


def _triggers(state: Path) -> set[str]:
    conn = sqlite3.connect(state)
    try:
        return {str(t) for (t,) in conn.execute("SELECT DISTINCT trigger FROM runs")}
    finally:
        conn.close()
