"""Alerts reach a Slack-compatible webhook (a real HTTP server on loopback) once per change of state:
firing once, silent while it stays, resolved once; retried when the webhook was down."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alert_hook import Hook
from audiencesync.connectors.contract import PlatformStatus
from audiencesync.state.store import StateStore
from audiencesync.sync.cli.commands import cli
from click.testing import CliRunner, Result
from sample_configs import WriteConfig, file_syncs

WITH_ALERTS = (
    file_syncs("lapsed", max_lag="1h")
    + """
[alerts]
webhook_url_env = "TEST_ALERT_HOOK"
drift_threshold = 0.05
"""
)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def check(config: Path) -> None:
    result = invoke("lag", "--config", str(config), "--send-alerts", "--json")
    assert result.exit_code in (0, 4), result.output


def test_a_tripped_breaker_alerts_once_and_resolves_once(
    write_config: WriteConfig, demo_db: Path, hook: Hook
) -> None:
    config = write_config(WITH_ALERTS)
    assert invoke("sync", "--config", str(config)).exit_code == 0
    check(config)
    assert hook.texts() == []  # healthy from the start: nothing to say

    with sqlite3.connect(demo_db) as conn:
        conn.execute("UPDATE profiles SET stage = 'vip' WHERE stage = 'lapsed_customer'")
    assert invoke("sync", "--config", str(config)).exit_code == 3
    check(config)
    check(config)
    check(config)
    assert len(hook.texts()) == 1
    assert hook.texts()[0].startswith("audience-sync FIRING: breaker on lapsed@files: circuit breaker")

    assert invoke("sync", "--config", str(config), "--allow-mass-remove").exit_code == 0
    check(config)
    check(config)
    assert len(hook.texts()) == 2
    assert hook.texts()[1].startswith("audience-sync resolved: breaker on lapsed@files")


def synced(write_config: WriteConfig, tmp_path: Path) -> tuple[Path, StateStore, int]:
    """The alerting config synced once: its path, the state store and lapsed@files's target id."""
    config = write_config(WITH_ALERTS)
    assert invoke("sync", "--config", str(config)).exit_code == 0
    store = StateStore.open(tmp_path / "state.db")
    row = store.find_target("lapsed@files")
    assert row is not None
    return config, store, row.id


def test_an_alert_the_webhook_refused_is_sent_again_next_time(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path, hook: Hook
) -> None:
    config, store, tid = synced(write_config, tmp_path)
    run = store.runs.start(tid, "cli")
    store.runs.finish(run, "error", {}, "AudienceGone: the custom audience was deleted")
    store.close()

    hook.status = 503
    check(config)
    assert hook.texts() == []
    hook.status = 200
    check(config)
    check(config)
    texts = sorted(hook.texts())
    assert len(texts) == 2
    assert texts[0].startswith("audience-sync FIRING: audience_gone on lapsed@files: AudienceGone")
    assert texts[1].startswith("audience-sync FIRING: run_failed on lapsed@files: last run error")


def test_drift_beyond_the_threshold_alerts_once(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path, hook: Hook
) -> None:
    config, store, tid = synced(write_config, tmp_path)
    members = store.db.execute("SELECT count(*) FROM members WHERE target_id = ?", [tid]).fetchone()[0]

    def platform_says(size: int, ready: bool = True) -> None:
        store.save_platform_status(tid, PlatformStatus(size, size, "Normal", ready=ready))

    platform_says(members + 1)  # within 5%
    check(config)
    platform_says(members // 2, ready=False)  # still processing: sizes lag, no verdict
    check(config)
    assert hook.texts() == []
    platform_says(members // 2)
    check(config)
    check(config)
    assert len(hook.texts()) == 1 and "FIRING: drift on lapsed@files" in hook.texts()[0]
    assert f"vs {members} members in state" in hook.texts()[0]
    platform_says(members)
    check(config)
    assert len(hook.texts()) == 1  # a resolve must hold too ([alerts] hold_evaluations, default 2)
    check(config)
    assert len(hook.texts()) == 2 and "resolved: drift" in hook.texts()[1]
    store.close()
