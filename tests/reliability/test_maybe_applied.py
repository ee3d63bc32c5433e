"""Deterministic cases behind the crash suite: a change the platform applied whose answer never
arrived, a Meta session left behind by a killed push, and failures reported only as counts."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from audiencesync.state.store import StateStore
from scenarios import AUDIENCES, PLATFORMS, Emulators, Figures, Scenario, clear_faults, sync_in_process


def _move(scenario: Scenario, count: int, *, into: bool) -> list[tuple[str, str]]:
    """Move ``count`` profiles into the 'lapsed' stage (``into``) or out of it; returns (id, old stage)."""
    conn = sqlite3.connect(scenario.dir / "profiles.db")
    try:
        where = "stage != 'lapsed_customer'" if into else "stage = 'lapsed_customer'"
        rows = conn.execute(
            f"SELECT profile_id, stage FROM profiles WHERE {where} AND email IS NOT NULL "
            "AND (ads_consent IS NULL OR ads_consent = 1) ORDER BY profile_id LIMIT ?",
            [count],
        ).fetchall()
        new = "lapsed_customer" if into else "active_customer"
        conn.executemany("UPDATE profiles SET stage = ? WHERE profile_id = ?", [(new, r[0]) for r in rows])
        conn.commit()
        return [(str(r[0]), str(r[1])) for r in rows]
    finally:
        conn.close()


def _restore(scenario: Scenario, moved: list[tuple[str, str]]) -> None:
    conn = sqlite3.connect(scenario.dir / "profiles.db")
    try:
        conn.executemany("UPDATE profiles SET stage = ? WHERE profile_id = ?", [(s, p) for p, s in moved])
        conn.commit()
    finally:
        conn.close()


def _sample_or_full(platform: str, full: bool) -> None:
    # The CI sample keeps the two platforms where this was seen to fail (Meta, Google Data Manager).
    if not full and platform not in ("meta", "google_dm"):
        pytest.skip("in the full reliability suite only (--reliability-full)")


def _lost_answers(scenario: Scenario) -> None:
    """One run during which every member upload is applied and its answer lost."""
    scenario.emulator.faults.set({"lost_answer_rate": 1.0})
    try:
        results = sync_in_process(scenario.config, scenario.main[:1])
    finally:
        clear_faults(scenario.emulator)
    assert results[0].status == "partial"


def _lost_answer_then_undone(scenario: Scenario, figures: Figures, *, into: bool, label: str) -> None:
    """Three profiles move (into the audience or out of it), the run that pushes it loses every
    answer, and they move back before the next run: the clean run must leave the platform exact."""
    sync_in_process(scenario.config, scenario.main)
    moved = _move(scenario, 3, into=into)
    _lost_answers(scenario)
    _restore(scenario, moved)
    before = scenario.platform_members(scenario.main_prefix)
    mark = (figures.lost, figures.stale, figures.stuck, len(figures.failures))
    scenario.check(figures, before, label)
    assert (figures.lost, figures.stale, figures.stuck) == mark[:3], figures.failures[mark[3] :]


@pytest.mark.parametrize(
    ("into", "seed", "label"),
    [(True, 77, "add"), (False, 78, "remove")],
    ids=["an_add_is_removed_once_the_profile_leaves", "a_remove_is_reversed_when_the_profile_returns"],
)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_applied_change_whose_answer_was_lost_is_undone_when_the_profile_moves_back(
    tmp_path: Path,
    emulators: Emulators,
    figures: Figures,
    platform: str,
    full: bool,
    into: bool,
    seed: int,
    label: str,
) -> None:
    _sample_or_full(platform, full)
    scenario = Scenario(tmp_path, emulators, platform, seed=seed)
    _lost_answer_then_undone(scenario, figures, into=into, label=f"lost answer {label} {platform}")


def test_a_meta_session_left_by_a_killed_push_does_not_block_the_target(
    tmp_path: Path, emulators: Emulators, figures: Figures
) -> None:
    scenario = Scenario(tmp_path, emulators, "meta", seed=79)
    sync_in_process(scenario.config, scenario.main)
    # A push killed after reserving batch_seq 7 of a session Meta never saw batch 1..6 of.
    store = StateStore.open(scenario.dir / "state.db")
    try:
        row = store.find_target(scenario.main[0])
        assert row is not None
        store.db.execute(
            "INSERT OR REPLACE INTO push_sessions (target_id, op, session_id, next_seq, started_at) "
            "VALUES (?, 'add', 4242, 7, ?)",
            [row.id, time.time()],
        )
        store.db.conn.commit() if store.db.conn.in_transaction else None
    finally:
        store.close()
    _move(scenario, 5, into=True)
    results = sync_in_process(scenario.config, scenario.main)
    assert [r.status for r in results] == ["ok"] * len(AUDIENCES), [r.error for r in results]
    scenario.check(figures, {}, "meta stale session")


def test_meta_failures_reported_only_as_counts_are_not_called_synced_until_a_clean_resend(
    tmp_path: Path, emulators: Emulators, figures: Figures
) -> None:
    """Meta samples at most 100 invalid rows per request: with 30 % of a large batch refused, most
    failures cannot be named, so no unnamed row may be called synced."""
    scenario = Scenario(tmp_path, emulators, "meta", seed=80, profiles=4000)
    scenario.emulator.faults.set({"reject_row_rate": 0.3, "seed": 3})
    try:
        [result] = sync_in_process(scenario.config, scenario.main[:1], max_batch=10_000)
    finally:
        clear_faults(scenario.emulator)
    assert result.plan.total_adds > 400
    # The rows the <= 100 samples name (a sampled value may be shared by several rows) are rejected;
    # the rest are unverified, none confirmed.
    assert result.push.rejected >= 100
    assert result.push.confirmed == 0
    assert result.push.unverified == result.plan.total_adds - result.push.rejected
    assert result.at_risk == {"unverified": result.push.unverified}
    assert result.notice is not None and "not confirmed synced" in result.notice
    on_platform = len(scenario.platform_members(scenario.main_prefix)["lapsed"])
    assert on_platform < result.push.unverified  # some of them really failed
    # Faults over: one clean run resends them and settles every member.
    scenario.check(figures, {}, "meta count-only failures")
    store = StateStore.open(scenario.dir / "state.db")
    try:
        row = store.find_target(scenario.main[0])
        assert row is not None
        states = dict(
            store.db.execute(
                "SELECT confirmation, count(*) FROM members WHERE target_id = ? GROUP BY confirmation",
                [row.id],
            ).fetchall()
        )
    finally:
        store.close()
    assert set(states) == {"synced"}
    assert states["synced"] == len(scenario.platform_members(scenario.main_prefix)["lapsed"])
