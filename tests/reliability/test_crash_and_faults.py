"""Crash points and fault mixes, then one clean run: nothing lost, nothing stale, no unintended
remove, no stuck target, on every platform emulator (Meta, TikTok, Google on both backends)."""

from __future__ import annotations

from pathlib import Path

from scenarios import (
    FAULT_MIXES,
    PLATFORMS,
    Emulators,
    Figures,
    crash_schedule,
    run_crash_point,
    run_fault_mix,
)

CRASH_SEED = 17
FULL_CRASH_POINTS = 56
SAMPLE_CRASH_POINTS = 3


def test_sigkill_at_seeded_points_then_one_clean_run_converges(
    tmp_path: Path, emulators: Emulators, figures: Figures, full: bool
) -> None:
    schedule = crash_schedule(CRASH_SEED, FULL_CRASH_POINTS if full else SAMPLE_CRASH_POINTS)
    before = (figures.lost, figures.stale, figures.unintended_removes, figures.stuck, len(figures.failures))
    for index, (platform, point, at) in enumerate(schedule):
        run_crash_point(tmp_path, emulators, figures, index, platform, point, at)
    after = (figures.lost, figures.stale, figures.unintended_removes, figures.stuck)
    assert after == before[:4], figures.failures[before[4] :]
    assert figures.crash_points >= (50 if full else 1)


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
