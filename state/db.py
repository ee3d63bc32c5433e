"""The state database: one SQLite file, opened through sqlite-utils, with versioned migrations and an
``atomic()`` transaction helper.

Every write in this project goes through ``atomic``: either the whole unit lands or none of it does,
so a crash (or SIGKILL) never leaves state half-written.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import sqlite_utils

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []


def migration(version: int, name: str) -> Callable[[Migration], Migration]:
    """Register a schema migration. Versions apply in order, each in its own transaction."""

    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((version, name, fn))
        MIGRATIONS.sort(key=lambda m: m[0])
        return fn

    return register


@migration(1, "members, outbox, rejections, runs, lag, platform status, sessions, leases")
def _initial(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE targets (
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
        );
        -- Members confirmed on the platform. payload holds exactly the platform-ready (hashed)
        -- identifiers that were sent, so a remove sends the same values back.
        CREATE TABLE members (
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
        ) WITHOUT ROWID;
        -- Planned changes not yet confirmed. status: queued (to send) or in_flight (sent, the
        -- platform is processing it under handle).
        CREATE TABLE outbox (
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
        ) WITHOUT ROWID;
        CREATE INDEX outbox_handle ON outbox (target_id, handle) WHERE handle IS NOT NULL;
        -- Changes the platform refused, with backoff for the next attempt.
        CREATE TABLE rejections (
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
        ) WITHOUT ROWID;
        CREATE TABLE runs (
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
        );
        CREATE INDEX runs_target ON runs (target_id, started_at);
        -- One row per confirmed change: the lag record.
        CREATE TABLE lag (
            id INTEGER PRIMARY KEY,
            target_id INTEGER NOT NULL,
            op TEXT NOT NULL,
            source_at REAL,
            observed_at REAL NOT NULL,
            sent_at REAL,
            confirmed_at REAL NOT NULL,
            ready_at REAL
        );
        CREATE INDEX lag_target_confirmed ON lag (target_id, confirmed_at);
        CREATE TABLE platform_status (
            target_id INTEGER PRIMARY KEY,
            read_at REAL NOT NULL,
            size_lower INTEGER,
            size_upper INTEGER,
            state TEXT,
            ready INTEGER NOT NULL DEFAULT 0,
            updated_at REAL,
            detail TEXT
        );
        -- Multi-batch upload sessions (Meta). next_seq is reserved before a batch is sent.
        CREATE TABLE push_sessions (
            target_id INTEGER NOT NULL,
            op TEXT NOT NULL,
            session_id INTEGER NOT NULL,
            next_seq INTEGER NOT NULL,
            started_at REAL NOT NULL,
            PRIMARY KEY (target_id, op)
        );
        CREATE TABLE leases (
            target_id INTEGER PRIMARY KEY,
            holder TEXT NOT NULL,
            pid INTEGER NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        """,
    )


@migration(2, "alert state, lag pruning index")
def _alerts(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        -- One row per target and alert kind: whether it is firing, so an alert is sent once per
        -- change of state rather than on every tick. notified_at stays NULL until the webhook took it.
        CREATE TABLE alert_state (
            target_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            firing INTEGER NOT NULL,
            detail TEXT,
            changed_at REAL NOT NULL,
            notified_at REAL,
            PRIMARY KEY (target_id, kind)
        );
        CREATE INDEX lag_confirmed ON lag (confirmed_at)
        """,
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
    # single value is sealed with it. Imported here: the sealer needs this module's error type.
    from audiencesync.state.sealed import PREFIX, SEALED_KEYS, sealer_for, write_probe

    conn.execute("CREATE TABLE sealing (id INTEGER PRIMARY KEY CHECK (id = 1), probe TEXT NOT NULL)")
    write_probe(conn)
    for table, key_cols in (("members", "target_id, member_key"), ("outbox", "target_id, member_key, op")):
        rows = conn.execute(f"SELECT {key_cols}, payload FROM {table}").fetchall()
        updates = []
        for *keys, payload in rows:
            identifiers = json.loads(payload)
            if not any(k in SEALED_KEYS and not str(v).startswith(PREFIX) for k, v in identifiers.items()):
                continue
            sealed = sealer_for(conn).seal_payload(identifiers)
            updates.append((json.dumps(sealed, sort_keys=True, separators=(",", ":")), *keys))
        where = " AND ".join(f"{c.strip()} = ?" for c in key_cols.split(","))
        conn.executemany(f"UPDATE {table} SET payload = ? WHERE {where}", updates)


@migration(5, "alert hysteresis: a pending change of state and how long it has held")
def _alert_pending(conn: sqlite3.Connection) -> None:
    # pending: the state the condition now shows, different from ``firing``; it is sent once it held
    # for [alerts] hold_evaluations evaluations and hold_seconds seconds.
    conn.execute("ALTER TABLE alert_state ADD COLUMN pending INTEGER")
    conn.execute("ALTER TABLE alert_state ADD COLUMN pending_since REAL")
    conn.execute("ALTER TABLE alert_state ADD COLUMN pending_count INTEGER NOT NULL DEFAULT 0")


@migration(6, "write-ahead of requests on the wire; confirmation state of members")
def _write_ahead(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        -- Set in the transaction committed just before a batch goes on the wire, cleared when the
        -- platform's answer is recorded: a queued row with wire_at set after a crash (or a run that
        -- lost the answer) is maybe applied. wire_session and wire_seq are Meta's session id and
        -- batch_seq of that request.
        ALTER TABLE outbox ADD COLUMN wire_at REAL;
        ALTER TABLE outbox ADD COLUMN wire_session INTEGER;
        ALTER TABLE outbox ADD COLUMN wire_seq INTEGER;
        -- synced: the platform accepted it. maybe: a request carrying it went out and no answer was
        -- recorded. unverified: the platform reported failures in its batch only as a count
        -- (reported_failures), so which members failed is unknown. Members not 'synced' are possibly
        -- on the platform (a leave sends the remove) and are resent while the source wants them.
        ALTER TABLE members ADD COLUMN confirmation TEXT NOT NULL DEFAULT 'synced';
        ALTER TABLE members ADD COLUMN reported_failures INTEGER
        """,
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
    _run_script(
        conn,
        """
        -- changed_at: the latest source change time among the rows of the last committed plan (an
        -- incremental plan reads the rows changed since, less a safety margin). full_at: when the
        -- last full reconciliation was committed (the tool's clock).
        CREATE TABLE plan_watermarks (
            target_id INTEGER PRIMARY KEY,
            changed_at REAL,
            full_at REAL
        );
        -- An incremental plan resends the unsettled members without reading every member, and
        -- finds another member carrying a removed member's identifiers without reading them all.
        CREATE INDEX members_unsettled ON members (target_id, member_key) WHERE confirmation != 'synced';
        CREATE INDEX members_payloads ON members (target_id, payload_fp)
        """,
    )


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the migration's transaction first; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


class StateFileError(Exception):
    """The state file cannot be used as it is (corrupt, locked, read-only, a newer schema, a full
    disk). The CLI prints it as one line naming the file, and exits 2; the file is left as it was."""

    exit_code = 2


def describe_sqlite_error(path: Path | None, exc: sqlite3.Error) -> StateFileError:
    """One line naming the state file for what SQLite refused, without SQLite's internals."""
    text = str(exc).lower()
    if "full" in text:
        why = "the disk is full (nothing was lost: free some space and run again)"
    elif "locked" in text or "busy" in text:
        why = "another process holds it locked; try again when it finishes"
    elif "readonly" in text or "read-only" in text or "attempt to write" in text:
        why = "it (or its directory) is read-only; the tool needs to write it and its -wal file"
    elif "not a database" in text or "malformed" in text or "corrupt" in text:
        why = "it is not a usable state database (corrupt or truncated); restore it from a backup"
    elif "unable to open" in text and path is not None and not os.access(path.parent, os.W_OK):
        why = "its directory is read-only; the tool needs to write the file and its -wal beside it"
    elif "unable to open" in text:
        why = "cannot open it (check that its directory exists and is writable)"
    else:
        why = f"SQLite refused it ({type(exc).__name__}: {exc})"
    return StateFileError(f"state file {path if path is not None else ':memory:'}: {why}")


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise StateFileError(f"state file {path}: is a directory (state_path must name a file)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StateFileError(f"state file {path}: {parent} is a file, not a directory")
            break
    if path.exists() and path.stat().st_size and path.stat().st_size < 100:
        # Shorter than SQLite's own header: a truncated file, which SQLite would otherwise overwrite.
        raise StateFileError(
            f"state file {path}: it is not a usable state database (corrupt or truncated); "
            "restore it from a backup"
        )


def connect(path: Path | None) -> sqlite_utils.Database:
    """Open (creating if needed) the state file and bring its schema up to date; ``None`` opens an
    in-memory database. Raises ``StateFileError`` when the file cannot be used, leaving it as it was."""
    if path is not None:
        _check_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateFileError(f"state file {path}: cannot create its directory ({exc.strerror})") from None
    try:
        return _connect(path)
    except sqlite3.Error as exc:
        raise describe_sqlite_error(path, exc) from None


def _connect(path: Path | None) -> sqlite_utils.Database:
    target = ":memory:" if path is None else str(path)
    # How long to wait for another process's lock before giving up with a clear message.
    busy = float(os.environ.get("AUDIENCE_SYNC_STATE_BUSY_SECONDS") or 30.0)
    conn = sqlite3.connect(target, isolation_level=None, timeout=busy, check_same_thread=False)
    try:
        # Read before anything writes: a corrupt file fails here, and a newer schema is refused
        # before WAL mode or a migration touches it.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        _refuse_newer(conn, path)
    except BaseException:
        conn.close()
        raise
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA temp_store=FILE")
    # Deleted and overwritten rows are zeroed, not left in free pages: a payload replaced by its
    # sealed form must not stay readable in the file.
    conn.execute("PRAGMA secure_delete=ON")
    # A push commits once per batch; with the default 1,000-page threshold nearly every commit also
    # checkpointed the WAL. 10,000 pages (about 40 MB of WAL) makes checkpoints rare without letting
    # the WAL grow unbounded.
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    db = sqlite_utils.Database(conn)
    try:
        migrate(db)
    except BaseException:
        conn.close()
        raise
    return db


def _refuse_newer(conn: sqlite3.Connection, path: Path | None) -> None:
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not has_table:
        foreign = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' LIMIT 1"
        ).fetchone()
        if foreign:
            raise StateFileError(
                f"state file {path}: is an SQLite database that audience-sync did not create "
                f"(it has a table {foreign[0]!r}); point state_path at a file of its own"
            )
        return
    found = int(conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0)
    known = max(v for v, _, _ in MIGRATIONS)
    if found > known:
        raise StateFileError(
            f"state file {path}: schema version {found} is newer than this version of audience-sync "
            f"knows ({known}); upgrade audience-sync, the file was not changed"
        )


def schema_version(db: sqlite_utils.Database) -> int:
    if "schema_migrations" not in db.table_names():
        return 0
    row = db.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    # Each migration not yet recorded applies, in version order: a file made by a branch of history
    # that skipped one (or a test that removed one) still gets it.
    applied = {int(v) for (v,) in db.execute("SELECT version FROM schema_migrations").fetchall()}
    for version, name, fn in MIGRATIONS:
        if version in applied:
            continue
        with atomic(db):
            fn(db.conn)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                [version, name, time.time()],
            )


def atomic(db: sqlite_utils.Database) -> AbstractContextManager[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE, so writers queue instead of failing midway). Nested
    calls join the outer transaction."""
    return _transaction(db, "BEGIN IMMEDIATE")


def scratch_transaction(db: sqlite_utils.Database) -> AbstractContextManager[sqlite3.Connection]:
    """A deferred transaction for bulk writes to TEMP tables (the planner's scratch space). Outside a
    transaction every row of an ``executemany`` is its own commit, which on a growing temp file costs
    tens of microseconds a row. Deferred, so it takes no lock on the state file: other processes
    keep writing while a plan is made. Nested calls join the outer transaction."""
    return _transaction(db, "BEGIN")


@contextmanager
def _transaction(db: sqlite_utils.Database, begin: str) -> Iterator[sqlite3.Connection]:
    conn = db.conn
    if conn.in_transaction:
        yield conn
        return
    conn.execute(begin)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
