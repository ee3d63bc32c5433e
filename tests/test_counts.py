"""Counts that add up: what a run confirmed is one figure, the same in the result, in ``runs`` and in
the daemon's metrics. A Google settlement (a followed job or request that succeeded) is confirmed;
an identity change counts once."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from audiencesync.connectors.google.emulator import GoogleEmulator
from sample_configs import WriteConfig
from test_google_e2e import BACKENDS, Harness, profile, update_profiles, write_profiles


def runs_confirmed(harness: Harness) -> list[int]:
    with closing(sqlite3.connect(harness.db.parent / "state.db")) as conn:
        return [int(r[0]) for r in conn.execute("SELECT confirmed FROM runs ORDER BY id")]


def test_a_google_settlement_counts_as_confirmed_in_the_result_and_in_runs(harness: Harness) -> None:
    write_profiles(harness.db, [profile(i) for i in range(500)])
    result = harness.run()
    assert result.status == "ok", result.error
    uploaded = 500 - sum(1 for i in range(500) if i % 20 == 0)
    assert result.push.confirmed == uploaded
    assert runs_confirmed(harness) == [uploaded]


def test_an_identity_change_counts_once(harness: Harness) -> None:
    write_profiles(harness.db, [profile(i) for i in range(200)])
    assert harness.run().status == "ok"
    update_profiles(
        harness.db, "UPDATE profiles SET email = 'changed.' || email WHERE profile_id = 'p00000003'"
    )
    result = harness.run()
    assert result.status == "ok", result.error
    assert result.plan.identity_changes == 1
    assert result.push.confirmed == 1
    assert runs_confirmed(harness)[-1] == 1


@pytest.fixture(params=BACKENDS)
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, write_config: WriteConfig, google_emulator: GoogleEmulator
) -> Harness:
    return Harness(tmp_path, write_config, google_emulator, request.param)
