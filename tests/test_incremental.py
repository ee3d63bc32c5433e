"""Incremental plans and one scan for many audiences, against a real SQLite profile database: an
incremental run reads only rows changed since the watermark (less the margin), a changed row that
left the audience is removed, an absent row is not, a dry run never moves the watermark, and a
periodic full reconciliation catches deletions; several audiences plan from one read."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from audiencesync.state.store import StateStore
from audiencesync.state.watermarks import read_watermark
from audiencesync.sync import source_scan
from audiencesync.sync.config import load_config
from audiencesync.sync.identity import normalize, sha256_hex
from audiencesync.sync.row_batches import RowBatch
from audiencesync.sync.runner import RunOptions, SyncRunner
from audiencesync.sync.sources import SourceRow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_plan_properties import InMemoryPlatform

BASE = 1_800_000_000.0


def write_config(tmp: Path, *, incremental: bool = True, audiences: str = "") -> Path:
    config = tmp / "audience-sync.toml"
    extra = (
        'incremental = true\nincremental_margin = "60s"\nfull_reconcile_every = "1d"' if incremental else ""
    )
    config.write_text(
        textwrap.dedent(
            """
            state_path = "state.db"
            [source]
            kind = "sqlite"
            path = "profiles.db"
            id_column = "id"
            stage_column = "stage"
            changed_at_column = "updated_at"
            {extra}
            [source.identifiers]
            email = "email"
            [audiences.vip]
            stage = "vip"
            {audiences}
            [destinations.mem]
            platform = "file"
            directory = "unused"
            [[syncs]]
            audience = "vip"
            destinations = ["mem"]
            max_remove_share = 1.0
            """
        ).format(extra=extra, audiences=audiences)
    )
    return config


def write_source(tmp: Path, rows: Mapping[str, tuple[str, str, float]]) -> None:
    """Replace the profile table with ``rows``: id -> (email, stage, updated_at)."""
    conn = sqlite3.connect(tmp / "profiles.db")
    conn.execute("DROP TABLE IF EXISTS profiles")
    conn.execute("CREATE TABLE profiles (id TEXT PRIMARY KEY, email TEXT, stage TEXT, updated_at REAL)")
    conn.executemany("INSERT INTO profiles VALUES (?, ?, ?, ?)", ((k, *v) for k, v in rows.items()))
    conn.commit()
    conn.close()


def expected(emails: set[str]) -> set[str]:
    return {json.dumps({"email": sha256_hex(normalize("meta", "email", e))}) for e in emails}


def run(config_path: Path, platform: InMemoryPlatform, *, dry_run: bool = False) -> None:
    config = load_config(config_path, {})
    store = StateStore.open(config.state_path)
    try:
        options = RunOptions(connector_factory=lambda _t: platform, allow_mass_remove=True, dry_run=dry_run)
        SyncRunner(config, store, options).run()
    finally:
        store.close()


def watermark(tmp: Path) -> tuple[float | None, float | None] | None:
    store = StateStore.open(tmp / "state.db")
    try:
        row = store.find_target("vip@mem")
        mark = read_watermark(store.db, row.id) if row else None
        return None if mark is None else (mark.changed_at, mark.full_at)
    finally:
        store.close()


@pytest.fixture
def rows_read(monkeypatch: pytest.MonkeyPatch) -> list[list[SourceRow]]:
    """The rows each scan of the run read, recorded as the planner receives them."""
    reads: list[list[SourceRow]] = []
    original = source_scan.read_scan

    def recording(*args: object, **kwargs: object) -> Iterator[RowBatch]:
        reads.append([])
        for batch in original(*args, **kwargs):  # type: ignore[arg-type]
            reads[-1].extend(batch.rows())
            yield batch

    monkeypatch.setattr("audiencesync.sync.incremental.read_scan", recording)
    return reads


def test_an_incremental_run_reads_only_changed_rows_and_removes_a_row_that_left(
    tmp_path: Path, rows_read: list[list[SourceRow]]
) -> None:
    config = write_config(tmp_path)
    source = {f"p{i}": (f"user{i}@example.com", "vip", BASE + i) for i in range(50)}
    source["p1"] = ("user1@example.com", "vip", BASE - 3600)  # changed long before the others
    write_source(tmp_path, source)
    platform = InMemoryPlatform(max_batch=100)
    run(config, platform)
    assert platform.members == expected({e for e, _, _ in source.values()})
    assert len(rows_read[-1]) == 50, "the first run is a full plan"
    assert watermark(tmp_path) is not None

    # One profile leaves the audience, one changes email, one arrives; all stamped an hour later.
    later = BASE + 3600
    source["p1"] = ("user1@example.com", "lapsed", later)
    source["p2"] = ("moved2@example.com", "vip", later)
    source["n1"] = ("new1@example.com", "vip", later)
    write_source(tmp_path, source)
    run(config, platform)
    # The changed rows, and those stamped within the margin (60 s) of the last run's latest change.
    within = {k for k, (_, _, t) in source.items() if BASE + 49 - 60 <= t < later}
    assert {r.profile_id for r in rows_read[-1]} == {"p1", "p2", "n1"} | within
    wanted = {e for e, stage, _ in source.values() if stage == "vip"}
    assert platform.members == expected(wanted)


def test_an_absent_row_is_not_a_remove_until_the_full_reconciliation(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    source = {f"p{i}": (f"user{i}@example.com", "vip", BASE) for i in range(5)}
    write_source(tmp_path, source)
    platform = InMemoryPlatform()
    run(config, platform)
    del source["p0"]
    write_source(tmp_path, source)
    run(config, platform)
    assert expected({"user0@example.com"}) <= platform.members, "incremental runs cannot see a deletion"

    # Make the last full reconciliation two days old: the next run is a full one.
    store = StateStore.open(tmp_path / "state.db")
    store.db.execute("UPDATE plan_watermarks SET full_at = full_at - 2 * 86400")
    store.db.conn.commit()
    store.close()
    run(config, platform)
    assert platform.members == expected({e for e, _, _ in source.values()})


def test_a_late_row_inside_the_margin_is_still_read(tmp_path: Path, rows_read: list[list[SourceRow]]) -> None:
    config = write_config(tmp_path)
    source = {"p1": ("user1@example.com", "vip", BASE)}
    write_source(tmp_path, source)
    platform = InMemoryPlatform()
    run(config, platform)
    # Committed after the first run but stamped 30 s before its watermark (margin is 60 s).
    source["late"] = ("late@example.com", "vip", BASE - 30)
    source["old"] = ("old@example.com", "vip", BASE - 3600)
    write_source(tmp_path, source)
    run(config, platform)
    assert {r.profile_id for r in rows_read[-1]} == {"p1", "late"}
    assert expected({"late@example.com"}) <= platform.members


def test_a_dry_run_never_advances_the_watermark(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    write_source(tmp_path, {"p1": ("user1@example.com", "vip", BASE)})
    platform = InMemoryPlatform()
    run(config, platform)
    before = watermark(tmp_path)
    write_source(
        tmp_path, {"p1": ("user1@example.com", "vip", BASE), "p2": ("u2@example.com", "vip", BASE + 99)}
    )
    run(config, platform, dry_run=True)
    assert watermark(tmp_path) == before
    run(config, platform)
    mark = watermark(tmp_path)
    assert mark is not None and mark[0] == BASE + 99


def test_iso_text_change_times_are_read_incrementally(
    tmp_path: Path, rows_read: list[list[SourceRow]]
) -> None:
    config = write_config(tmp_path)
    conn = sqlite3.connect(tmp_path / "profiles.db")
    conn.execute("CREATE TABLE profiles (id TEXT, email TEXT, stage TEXT, updated_at TEXT)")
    conn.execute("INSERT INTO profiles VALUES ('p1', 'a@example.com', 'vip', '2027-01-10T10:00:00Z')")
    conn.commit()
    platform = InMemoryPlatform()
    run(config, platform)
    conn.execute("INSERT INTO profiles VALUES ('p2', 'b@example.com', 'vip', '2027-01-12 09:00:00')")
    conn.execute("INSERT INTO profiles VALUES ('p0', 'c@example.com', 'vip', '2026-01-01T00:00:00+00:00')")
    conn.commit()
    conn.close()
    run(config, platform)
    assert {r.profile_id for r in rows_read[-1]} == {"p1", "p2"}
    assert platform.members == expected({"a@example.com", "b@example.com"})


def test_audiences_over_one_table_are_planned_from_one_scan(
    tmp_path: Path, rows_read: list[list[SourceRow]]
) -> None:
    more = textwrap.dedent(
        """
        [audiences.lapsed]
        stage = "lapsed"
        [audiences.everyone]
        where = "1 = 1"
        [destinations.mem_lapsed]
        platform = "file"
        directory = "unused"
        [destinations.mem_everyone]
        platform = "file"
        directory = "unused"
        [[syncs]]
        audience = "lapsed"
        destinations = ["mem_lapsed"]
        [[syncs]]
        audience = "everyone"
        destinations = ["mem_everyone"]
        """
    )
    config = write_config(tmp_path, incremental=False, audiences=more)
    source = {f"p{i}": (f"user{i}@example.com", "vip" if i % 3 else "lapsed", BASE) for i in range(30)}
    write_source(tmp_path, source)
    platforms: dict[str, InMemoryPlatform] = {}

    def factory(target):  # type: ignore[no-untyped-def]
        return platforms.setdefault(target.audience.name, InMemoryPlatform(max_batch=100))

    loaded = load_config(config, {})
    store = StateStore.open(loaded.state_path)
    try:
        SyncRunner(loaded, store, RunOptions(connector_factory=factory, allow_mass_remove=True)).run()
    finally:
        store.close()
    assert len(rows_read) == 1, "one scan for the three audiences"
    assert platforms["vip"].members == expected({e for e, s, _ in source.values() if s == "vip"})
    assert platforms["lapsed"].members == expected({e for e, s, _ in source.values() if s == "lapsed"})
    assert platforms["everyone"].members == expected({e for e, _, _ in source.values()})


STATES = st.dictionaries(
    st.sampled_from([f"p{i}" for i in range(8)]),
    st.tuples(
        st.sampled_from([f"user{i}@example.com" for i in range(6)]), st.sampled_from(["vip", "lapsed"])
    ),
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(snapshots=st.lists(STATES, min_size=1, max_size=5))
def test_incremental_runs_then_a_full_reconciliation_end_where_full_plans_do(
    tmp_path_factory: pytest.TempPathFactory, snapshots: list[dict[str, tuple[str, str]]]
) -> None:
    """Every row a snapshot changes is stamped with that snapshot's time; rows deleted from the
    source are only seen by the full reconciliation, after which both ways agree exactly."""
    incremental_dir = tmp_path_factory.mktemp("incremental")
    full_dir = tmp_path_factory.mktemp("full")
    configs = {
        incremental_dir: write_config(incremental_dir),
        full_dir: write_config(full_dir, incremental=False),
    }
    platforms = {incremental_dir: InMemoryPlatform(), full_dir: InMemoryPlatform()}
    rows: dict[str, tuple[str, str, float]] = {}
    for n, snapshot in enumerate(snapshots):
        stamp = BASE + 3600 * n
        rows = {k: (rows[k] if k in rows and rows[k][:2] == v else (*v, stamp)) for k, v in snapshot.items()}
        for folder in (incremental_dir, full_dir):
            write_source(folder, rows)
            run(configs[folder], platforms[folder])
        # Between full reconciliations, every profile still in the source is right.
        wanted = expected({e for e, s, _ in rows.values() if s == "vip"})
        assert platforms[full_dir].members == wanted
        assert wanted <= platforms[incremental_dir].members
    store = StateStore.open(incremental_dir / "state.db")
    store.db.execute("UPDATE plan_watermarks SET full_at = 0")
    store.db.conn.commit()
    store.close()
    run(configs[incremental_dir], platforms[incremental_dir])
    assert platforms[incremental_dir].members == platforms[full_dir].members


def test_incremental_needs_a_change_time_column(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('changed_at_column = "updated_at"\n', ""))
    with pytest.raises(Exception, match="changed_at_column"):
        load_config(config, {})
