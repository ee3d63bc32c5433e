"""The lag report on the file destination: percentiles computed in SQL, retention, coverage of in-flow
audiences, the SLO exit code, the HTML page and the run history."""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path

from audiencesync.connectors.contract import PlatformStatus
from audiencesync.state.store import StateStore
from audiencesync.sync.cli.commands import cli
from audiencesync.sync.config import load_config
from audiencesync.sync.identity import ProfileHasher
from audiencesync.sync.lag import prune_lag, record_read_back
from audiencesync.sync.source_load import member_key
from audiencesync.sync.sources import read_audience
from click.testing import CliRunner, Result
from sample_configs import WriteConfig, file_syncs


def files_with_slo(lag: str) -> str:
    return file_syncs("lapsed", "in_checkout", max_lag=lag)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def lag_json(config: Path, *extra: str) -> tuple[int, dict[str, dict[str, object]]]:
    result = invoke("lag", "--config", str(config), "--json", *extra)
    return result.exit_code, {t["target"]: t for t in json.loads(result.stdout)["targets"]}


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def test_percentiles_are_nearest_rank_over_the_window_and_old_records_are_pruned(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db")
    now = time.time()
    tid = store.ensure_target("a@files", "a", "files", "file").id
    other = store.ensure_target("b@files", "b", "files", "file").id
    store.db.execute("UPDATE targets SET created_at = ?", [now - 40 * 86_400])
    rng = random.Random(5)
    lags = [rng.uniform(0, 600) for _ in range(997)]
    rows = [(tid, "add", now - 3600 - lag, now - 3600 - lag, None, now - 3600) for lag in lags]
    rows += [(other, "remove", None, now - 100, None, now - 90)]
    # Outside the window (8 days old) and beyond a 30-day retention.
    rows += [(tid, "add", now - 8 * 86_400 - 9999, now - 8 * 86_400, None, now - 8 * 86_400)]
    rows += [(tid, "add", now - 31 * 86_400 - 5, now - 31 * 86_400, None, now - 31 * 86_400)]
    store.db.conn.executemany(
        "INSERT INTO lag (target_id, op, source_at, observed_at, sent_at, confirmed_at) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    stats = store.lag.stats("to_confirmed", since=now - 7 * 86_400)
    assert stats[tid].count == 997
    assert stats[tid].p50 is not None and abs(stats[tid].p50 - nearest_rank(lags, 50)) < 1e-6
    assert stats[tid].p95 is not None and abs(stats[tid].p95 - nearest_rank(lags, 95)) < 1e-6
    assert stats[tid].max is not None and abs(stats[tid].max - max(lags)) < 1e-6
    # No source time: measured from when a run observed the change.
    assert stats[other].count == 1 and abs((stats[other].max or 0) - 10) < 1e-6

    assert prune_lag(store, 30, now) == 1
    assert store.db.execute("SELECT count(*) FROM lag").fetchone()[0] == 999
    store.close()


def test_lag_is_measured_from_the_change_but_never_from_before_the_target_existed(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db")
    now = time.time()
    tid = store.ensure_target("a@files", "a", "files", "file").id
    store.db.execute("UPDATE targets SET created_at = ?", [now - 100])
    store.db.execute(
        "INSERT INTO lag (target_id, op, source_at, observed_at, sent_at, confirmed_at) VALUES (?, 'add', ?, ?, ?, ?)",
        [tid, now - 90 * 86_400, now - 99, now - 98, now - 97],
    )
    assert abs((store.lag.stats("to_confirmed", now - 3600)[tid].max or 0) - 3) < 1e-3
    store.close()


def test_a_ready_read_back_stamps_confirmed_changes_with_the_time_it_was_observed(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db")
    now = time.time()
    tid = store.ensure_target("a@files", "a", "files", "file").id
    store.db.execute(
        "INSERT INTO lag (target_id, op, source_at, observed_at, sent_at, confirmed_at) VALUES (?, 'add', ?, ?, ?, ?)",
        [tid, now - 50, now - 40, now - 30, now - 20],
    )
    record_read_back(store, tid, PlatformStatus(size_lower=1, size_upper=1, state="Processing"), now=now - 10)
    assert store.db.execute("SELECT ready_at FROM lag").fetchone()[0] is None
    # updated_at is when content last changed (before our change was processed): not a ready time.
    record_read_back(store, tid, PlatformStatus(1, 1, "Normal", ready=True, updated_at=now - 25), now=now)
    assert store.db.execute("SELECT ready_at FROM lag").fetchone()[0] == now
    stats = store.lag.stats("processing", now - 3600)[tid]
    assert stats.max is not None and abs(stats.max - 20) < 1e-6
    assert store.db.execute("SELECT ready, size_lower FROM platform_status").fetchone() == (1, 1)
    store.close()


def in_flow_with_identifiers(config_path: Path) -> tuple[set[bytes], set[bytes]]:
    """Keys of the profiles in the abandoned-checkout flow now, and of those that can be uploaded: a usable
    identifier and ads consent not denied."""
    config = load_config(config_path, {})
    src = config.source
    hasher = ProfileHasher("meta", list(src.identifiers), src.default_country, src.prehashed)
    everyone, usable = set(), set()
    for row in read_audience(src, config.audiences["in_checkout"]):
        everyone.add(member_key(row.profile_id))
        if hasher(row.raw).identifiers and row.consent is not False:
            usable.add(member_key(row.profile_id))
    return everyone, usable


def test_coverage_of_an_in_flow_audience_is_exact_against_the_source(
    write_config: WriteConfig, demo_db: Path
) -> None:
    config = write_config(files_with_slo("1h"))
    assert invoke("sync", "--config", str(config)).exit_code == 0
    everyone, usable = in_flow_with_identifiers(config)
    _, report = lag_json(config)
    coverage = report["in_checkout@files"]["coverage"]
    assert isinstance(coverage, dict)
    assert coverage["in_flow"] == len(everyone)
    # Profiles without one valid identifier can never be excluded: they stay at risk.
    assert coverage["confirmed"] == len(usable) and coverage["at_risk"] == len(everyone - usable)
    assert report["lapsed@files"]["coverage"] is None

    assert invoke("demo", "advance", "--config", str(config), "--seed", "4").exit_code == 0
    now_in, _ = in_flow_with_identifiers(config)
    _, report = lag_json(config)
    coverage = report["in_checkout@files"]["coverage"]
    assert isinstance(coverage, dict)
    assert coverage["in_flow"] == len(now_in)
    assert coverage["confirmed"] == len(now_in & usable)
    assert coverage["at_risk"] == len(now_in - usable) > len(everyone - usable)


def test_lag_exits_4_when_a_target_breaches_its_slo_and_0_when_within(
    write_config: WriteConfig, demo_db: Path
) -> None:
    within = write_config(files_with_slo("1h"), name="within.toml")
    assert invoke("sync", "--config", str(within)).exit_code == 0
    code, report = lag_json(within)
    assert code == 0
    assert {t["slo"] for t in report.values()} == {"ok"}
    assert report["lapsed@files"]["pending_adds"] == 0 and report["lapsed@files"]["members"] > 0

    tight = write_config(files_with_slo("1s"), name="tight.toml")
    time.sleep(1.2)  # the last successful run is now older than max_lag
    code, report = lag_json(tight)
    assert code == 4
    reasons = report["lapsed@files"]["slo_reasons"]
    assert report["lapsed@files"]["slo"] == "breach" and isinstance(reasons, list)
    assert any("last successful run" in str(r) for r in reasons)
    text = invoke("lag", "--config", str(tight))
    assert text.exit_code == 4 and "SLO breach" in text.stdout


def test_the_html_report_is_self_contained_with_the_table_and_a_chart_per_destination(
    write_config: WriteConfig, demo_db: Path, tmp_path: Path
) -> None:
    config = write_config(files_with_slo("1h"))
    assert invoke("sync", "--config", str(config)).exit_code == 0
    assert invoke("demo", "advance", "--config", str(config), "--seed", "2").exit_code == 0
    assert invoke("sync", "--config", str(config)).exit_code == 0
    page = tmp_path / "report" / "lag.html"
    result = invoke("lag", "--config", str(config), "--html", str(page))
    assert result.exit_code == 0
    html = page.read_text()
    table = re.search(r'<table id="lag-table">.*?</table>', html, re.S)
    assert table is not None
    assert table.group(0).count("<tr>") == 3  # header and two targets
    assert "lapsed → files (file)" in table.group(0) and "in_checkout → files (file)" in table.group(0)
    charts = re.findall(r"<svg .*?</svg>", html, re.S)
    assert len(charts) == 2  # one per target
    assert all(chart.count('class="series"') == 1 for chart in charts)
    assert 'data-target="lapsed@files"' in charts[0] and 'data-target="in_checkout@files"' in charts[1]
    # Nothing is fetched: no scripts, no external references.
    assert "<script" not in html and "src=" not in html and "<link" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_runs_lists_the_history_newest_first_with_counts_durations_and_errors(
    write_config: WriteConfig, demo_db: Path
) -> None:
    config = write_config(files_with_slo("1h"))
    assert invoke("sync", "--config", str(config)).exit_code == 0
    assert invoke("demo", "advance", "--config", str(config), "--seed", "2").exit_code == 0
    assert invoke("sync", "--config", str(config)).exit_code == 0
    result = invoke("runs", "--config", str(config), "--json", "--limit", "3")
    runs = json.loads(result.stdout)["runs"]
    assert len(runs) == 3
    assert [r["id"] for r in runs] == sorted((r["id"] for r in runs), reverse=True)
    newest = runs[0]
    assert newest["status"] == "ok" and newest["trigger"] == "cli" and newest["error"] is None
    assert (
        newest["duration"] >= 0
        and newest["confirmed"] == newest["adds"] + newest["removes"] + 2 * (newest["identity_changes"])
    )
    only = json.loads(invoke("runs", "--config", str(config), "--json", "--only", "lapsed").stdout)["runs"]
    assert {r["target"] for r in only} == {"lapsed@files"} and len(only) == 2
    text = invoke("runs", "--config", str(config))
    assert text.exit_code == 0 and "Runs (newest first)" in text.stdout
