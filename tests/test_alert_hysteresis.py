"""Alert hysteresis: a change of state is sent only once it held for ``[alerts] hold_evaluations``
evaluations and ``hold_seconds`` seconds, so a condition that flickers sends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from alert_hook import Hook
from audiencesync.state.store import StateStore
from audiencesync.sync import alerts
from audiencesync.sync.config import load_config
from audiencesync.sync.lag import lag_report
from sample_configs import WriteConfig
from test_alerts import WITH_ALERTS, check, invoke


def last_run(tmp_path: Path, status: str) -> None:
    store = StateStore.open(tmp_path / "state.db")
    try:
        row = store.find_target("lapsed@files")
        assert row is not None
        store.runs.finish(store.runs.start(row.id, "cli"), status, {}, "boom" if status == "error" else None)
    finally:
        store.close()


def test_a_flickering_condition_never_fires_and_a_steady_one_fires_after_the_hold(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path, hook: Hook
) -> None:
    config = write_config(WITH_ALERTS + "hold_evaluations = 3\n")
    assert invoke("sync", "--config", str(config)).exit_code == 0
    for status in ("error", "ok", "error", "ok", "error", "ok"):
        last_run(tmp_path, status)
        check(config)
    assert hook.texts() == []
    last_run(tmp_path, "error")
    check(config)
    check(config)
    assert hook.texts() == []
    check(config)
    assert len(hook.texts()) == 1 and "FIRING: run_failed on lapsed@files" in hook.texts()[0]


def test_hold_seconds_waits_for_the_condition_to_hold_that_long(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = load_config(write_config(WITH_ALERTS + "hold_evaluations = 1\nhold_seconds = 60\n"), {})
    assert invoke("sync", "--config", str(config.path)).exit_code == 0
    last_run(tmp_path, "error")
    sent: list[str] = []
    store = StateStore.open(tmp_path / "state.db")
    try:
        for now, expected in ((1000.0, 0), (1030.0, 0), (1061.0, 1), (1100.0, 1)):
            entries = lag_report(config, store, since=now - 86_400, now=now, with_coverage=False)
            alerts.evaluate(
                store, entries, 0.1, lambda text: sent.append(text) or True, now, alerts.hold_for(config)
            )
            assert len([t for t in sent if "run_failed" in t]) == expected, now
    finally:
        store.close()


def test_hold_settings_are_checked(write_config: WriteConfig) -> None:
    from audiencesync.sync.errors import InputError

    with pytest.raises(InputError, match=r"alerts\.hold_evaluations: must be a whole number"):
        load_config(write_config(WITH_ALERTS + "hold_evaluations = 0\n"), {})
