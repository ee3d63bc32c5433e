"""The state file's schema, as an ordered list of migrations registered with sqlite-utils'
``Migrations``. A migration is a tuple of single statements: ``executescript`` would commit the
migration's transaction before running them, so each statement runs on its own inside it.

Never edit a migration that has shipped: add the next one. ``state.db.migrate`` applies them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlite_utils
from sqlite_utils.migrations import Migrations

MIGRATION_SET = "audience-sync"
VERSION_TABLE = "schema_migrations"
"""Releases before the move to sqlite-utils' ``Migrations`` recorded versions here and read its
highest version to refuse a newer file; every migration still records itself in it, so they do."""

MIGRATIONS_SET = Migrations(MIGRATION_SET)

Migration = Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class SchemaVersion:
    """One migration: its number in ``schema_migrations`` and its name in sqlite-utils' table."""

    version: int
    name: str
    description: str


VERSIONS: list[SchemaVersion] = []
MIGRATIONS: list[tuple[int, str, Migration]] = []
"""(version, description, function) of every migration, in order."""


def migration(version: int, description: str) -> Callable[[Migration], Migration]:
    """Register the next schema migration; versions must be registered in increasing order."""

    def register(fn: Migration) -> Migration:
        if VERSIONS and version <= VERSIONS[-1].version:
            raise ValueError(f"migration {version} registered after {VERSIONS[-1].version}")
        step = SchemaVersion(version, f"{version:04d}{fn.__name__}", description)

        def apply(db: sqlite_utils.Database) -> None:
            fn(db.conn)
            db.execute(
                f"INSERT OR REPLACE INTO {VERSION_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
                [version, description, time.time()],
            )

        MIGRATIONS_SET(name=step.name)(apply)
        VERSIONS.append(step)
        MIGRATIONS.append((version, description, fn))
        return fn

    return register


def run_statements(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
    for statement in statements:
        conn.execute(statement)


@migration(1, "members, outbox, rejections, runs, lag, platform status, sessions, leases")
def _initial(conn: sqlite3.Connection) -> None:
    run_statements(
        conn,
        (
            """CREATE TABLE targets (
                id INTEGER PRIMARY KEY,
                key TEXT NOT NULL UNIQUE,
                audience TEXT NOT NULL,
                destination TEXT NOT NULL,
                platform TEXT NOT NULL,
                platform_audience_id TEXT,
                schema TEXT,
                state_version INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                last_run_at REAL,
                last_success_at REAL,
                last_error TEXT
            )""",
            # Members confirmed on the platform. payload holds exactly the platform-ready (hashed)
            # identifiers that were sent, so a remove sends the same values back.
            """CREATE TABLE members (
                target_id INTEGER NOT NULL,
                member_key BLOB NOT NULL,
                raw_fp BLOB NOT NULL,
                payload_fp BLOB NOT NULL,
                payload TEXT NOT NULL,
                invalid TEXT,
                added_run INTEGER,
                added_at REAL NOT NULL,
                uploaded_at REAL NOT NULL,
                PRIMARY KEY (target_id, member_key)
            ) WITHOUT ROWID""",
            # Planned changes not yet confirmed. status: queued (to send) or in_flight (sent, the
            # platform is processing it under handle).
            """CREATE TABLE outbox (
                target_id INTEGER NOT NULL,
                member_key BLOB NOT NULL,
                op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
                payload TEXT NOT NULL,
                payload_fp BLOB NOT NULL,
                raw_fp BLOB,
                invalid TEXT,
                consent INTEGER,
                status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'in_flight')),
                handle TEXT,
                source_at REAL,
                observed_at REAL NOT NULL,
                sent_at REAL,
                attempts INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (target_id, member_key, op)
            ) WITHOUT ROWID""",
            "CREATE INDEX outbox_handle ON outbox (target_id, handle) WHERE handle IS NOT NULL",
            # Changes the platform refused, with backoff for the next attempt.
            """CREATE TABLE rejections (
                target_id INTEGER NOT NULL,
                member_key BLOB NOT NULL,
                op TEXT NOT NULL,
                payload_fp BLOB NOT NULL,
                reason TEXT NOT NULL,
                first_at REAL NOT NULL,
                last_at REAL NOT NULL,
                attempts INTEGER NOT NULL,
                next_retry_at REAL NOT NULL,
                PRIMARY KEY (target_id, member_key, op)
            ) WITHOUT ROWID""",
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                target_id INTEGER NOT NULL,
                trigger TEXT NOT NULL,
                started_at REAL NOT NULL,
                finished_at REAL,
                status TEXT NOT NULL,
                source_members INTEGER,
                adds INTEGER NOT NULL DEFAULT 0,
                removes INTEGER NOT NULL DEFAULT 0,
                identity_changes INTEGER NOT NULL DEFAULT 0,
                confirmed INTEGER NOT NULL DEFAULT 0,
                pending INTEGER NOT NULL DEFAULT 0,
                rejected INTEGER NOT NULL DEFAULT 0,
                requests INTEGER NOT NULL DEFAULT 0,
                invalid TEXT,
                error TEXT
            )""",
            "CREATE INDEX runs_target ON runs (target_id, started_at)",
            # One row per confirmed change: the lag record.
            """CREATE TABLE lag (
                id INTEGER PRIMARY KEY,
                target_id INTEGER NOT NULL,
                op TEXT NOT NULL,
                source_at REAL,
                observed_at REAL NOT NULL,
                sent_at REAL,
                confirmed_at REAL NOT NULL,
                ready_at REAL
            )""",
            "CREATE INDEX lag_target_confirmed ON lag (target_id, confirmed_at)",
            """CREATE TABLE platform_status (
                target_id INTEGER PRIMARY KEY,
                read_at REAL NOT NULL,
                size_lower INTEGER,
                size_upper INTEGER,
                state TEXT,
                ready INTEGER NOT NULL DEFAULT 0,
                updated_at REAL,
                detail TEXT
            )""",
            # Multi-batch upload sessions (Meta). next_seq is reserved before a batch is sent.
            """CREATE TABLE push_sessions (
                target_id INTEGER NOT NULL,
                op TEXT NOT NULL,
                session_id INTEGER NOT NULL,
                next_seq INTEGER NOT NULL,
                started_at REAL NOT NULL,
                PRIMARY KEY (target_id, op)
            )""",
            """CREATE TABLE leases (
                target_id INTEGER PRIMARY KEY,
                holder TEXT NOT NULL,
                pid INTEGER NOT NULL,
                acquired_at REAL NOT NULL,
                expires_at REAL NOT NULL
            )""",
        ),
    )


@migration(2, "alert state, lag pruning index")
def _alerts(conn: sqlite3.Connection) -> None:
    run_statements(
        conn,
        (
            # One row per target and alert kind: whether it is firing, so an alert is sent once per
            # change of state rather than on every tick. notified_at stays NULL until the webhook
            # took it.
            """CREATE TABLE alert_state (
                target_id INTEGER NOT NULL,
                kind TEXT NOT NULL,
                firing INTEGER NOT NULL,
                detail TEXT,
                changed_at REAL NOT NULL,
                notified_at REAL,
                PRIMARY KEY (target_id, kind)
            )""",
            "CREATE INDEX lag_confirmed ON lag (confirmed_at)",
        ),
    )


@migration(3, "members fingerprint index")
def _fingerprints(conn: sqlite3.Connection) -> None:
    # Planning looks up every source profile's raw fingerprint and scans members for removes; this
    # narrow index answers both without reading the payloads, which make the table rows wide.
    conn.execute("CREATE INDEX members_fingerprints ON members (target_id, member_key, raw_fp, payload_fp)")


@migration(4, "seal unhashed identifiers at rest")
def _seal_unhashed(conn: sqlite3.Connection) -> None:
    # Rows written before sealing hold Google's postal and country codes (and Meta's MADID and
    # EXTERN_ID) in plain text; seal them in place. Fingerprints are of the plain payload, so no
    # diff changes. The probe, sealed with the state's key, lets a wrong key be refused before a
    # single value is sealed with it. Imported here: the sealer imports state.db, which imports this.
    from audiencesync.state.sealed import PREFIX, SEALED_KEYS, sealer_for, write_probe

    conn.execute("CREATE TABLE sealing (id INTEGER PRIMARY KEY CHECK (id = 1), probe TEXT NOT NULL)")
    write_probe(conn)
    for table, key_cols in (
        ("members", ("target_id", "member_key")),
        ("outbox", ("target_id", "member_key", "op")),
    ):
        rows = conn.execute(f"SELECT {', '.join(key_cols)}, payload FROM {table}").fetchall()
        updates = []
        for *keys, payload in rows:
            identifiers = json.loads(payload)
            if not any(k in SEALED_KEYS and not str(v).startswith(PREFIX) for k, v in identifiers.items()):
                continue
            sealed = sealer_for(conn).seal_payload(identifiers)
            updates.append((json.dumps(sealed, sort_keys=True, separators=(",", ":")), *keys))
        where = " AND ".join(f"{c} = ?" for c in key_cols)
        conn.executemany(f"UPDATE {table} SET payload = ? WHERE {where}", updates)


@migration(5, "alert hysteresis: a pending change of state and how long it has held")
def _alert_pending(conn: sqlite3.Connection) -> None:
    # pending: the state the condition now shows, different from ``firing``; it is sent once it held
    # for [alerts] hold_evaluations evaluations and hold_seconds seconds.
    run_statements(
        conn,
        (
            "ALTER TABLE alert_state ADD COLUMN pending INTEGER",
            "ALTER TABLE alert_state ADD COLUMN pending_since REAL",
            "ALTER TABLE alert_state ADD COLUMN pending_count INTEGER NOT NULL DEFAULT 0",
        ),
    )


@migration(6, "write-ahead of requests on the wire; confirmation state of members")
def _write_ahead(conn: sqlite3.Connection) -> None:
    run_statements(
        conn,
        (
            # Set in the transaction committed just before a batch goes on the wire, cleared when the
            # platform's answer is recorded: a queued row with wire_at set after a crash (or a run
            # that lost the answer) is maybe applied. wire_session and wire_seq are Meta's session id
            # and batch_seq of that request.
            "ALTER TABLE outbox ADD COLUMN wire_at REAL",
            "ALTER TABLE outbox ADD COLUMN wire_session INTEGER",
            "ALTER TABLE outbox ADD COLUMN wire_seq INTEGER",
            # synced: the platform accepted it. maybe: a request carrying it went out and no answer
            # was recorded. unverified: the platform reported failures in its batch only as a count
            # (reported_failures), so which members failed is unknown. Members not 'synced' are
            # possibly on the platform (a leave sends the remove) and are resent while the source
            # wants them.
            "ALTER TABLE members ADD COLUMN confirmation TEXT NOT NULL DEFAULT 'synced'",
            "ALTER TABLE members ADD COLUMN reported_failures INTEGER",
        ),
    )


@migration(7, "rejections counted by reason per run")
def _run_rejections(conn: sqlite3.Connection) -> None:
    # runs.rejected is the total; this splits it by the platform's reason, so a counter by reason can
    # add up to what `runs` shows. Runs from before this table have no rows here.
    conn.execute(
        "CREATE TABLE run_rejections (run_id INTEGER NOT NULL, reason TEXT NOT NULL, "
        "count INTEGER NOT NULL, PRIMARY KEY (run_id, reason))"
    )


@migration(8, "incremental plans: a watermark per target; an index of unsettled members")
def _plan_watermarks(conn: sqlite3.Connection) -> None:
    run_statements(
        conn,
        (
            # changed_at: the latest source change time among the rows of the last committed plan (an
            # incremental plan reads the rows changed since, less a safety margin). full_at: when the
            # last full reconciliation was committed (the tool's clock).
            "CREATE TABLE plan_watermarks (target_id INTEGER PRIMARY KEY, changed_at REAL, full_at REAL)",
            # An incremental plan resends the unsettled members without reading every member, and
            # finds another member carrying a removed member's identifiers without reading them all.
            "CREATE INDEX members_unsettled ON members (target_id, member_key) WHERE confirmation != 'synced'",
            "CREATE INDEX members_payloads ON members (target_id, payload_fp)",
        ),
    )
