"""The state database: one SQLite file, opened through sqlite-utils, with the migrations of
``state.schema`` and an ``atomic()`` transaction helper.

Every write in this project goes through ``atomic``: either the whole unit lands or none of it does,
so a crash (or SIGKILL) never leaves state half-written.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import sqlite_utils
from audiencesync.state.schema import MIGRATION_SET, MIGRATIONS, MIGRATIONS_SET, VERSION_TABLE, VERSIONS

__all__ = ["MIGRATIONS", "StateFileError", "atomic", "connect", "migrate", "scratch_transaction"]


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
    listed = [
        str(name)
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    tables = set(listed)
    if VERSION_TABLE not in tables and MIGRATIONS_SET.migrations_table not in tables:
        if listed:
            raise StateFileError(
                f"state file {path}: is an SQLite database that audience-sync did not create "
                f"(it has a table {listed[0]!r}); point state_path at a file of its own"
            )
        return
    known = MIGRATIONS[-1][0]
    found = 0
    if VERSION_TABLE in tables:
        found = int(conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()[0] or 0)
    if found > known:
        raise StateFileError(
            f"state file {path}: schema version {found} is newer than this version of audience-sync "
            f"knows ({known}); upgrade audience-sync, the file was not changed"
        )
    unknown = sorted(set(_applied_names(conn, tables)) - {v.name for v in VERSIONS})
    if unknown:
        raise StateFileError(
            f"state file {path}: it has migrations this version of audience-sync does not know "
            f"({', '.join(unknown)}); upgrade audience-sync, the file was not changed"
        )


def _applied_names(conn: sqlite3.Connection, tables: set[str]) -> list[str]:
    if MIGRATIONS_SET.migrations_table not in tables:
        return []
    return [
        str(name)
        for (name,) in conn.execute(
            f"SELECT name FROM {MIGRATIONS_SET.migrations_table} WHERE migration_set = ?", [MIGRATION_SET]
        )
    ]


def _recorded_versions(db: sqlite_utils.Database) -> dict[int, float]:
    """Version to when it was applied, as ``schema_migrations`` holds them."""
    if VERSION_TABLE not in db.table_names():
        return {}
    return {int(v): float(at) for v, at in db.execute(f"SELECT version, applied_at FROM {VERSION_TABLE}")}


def migrate(db: sqlite_utils.Database) -> None:
    """Apply every migration not yet recorded, in order, in one ``BEGIN IMMEDIATE`` transaction (each
    migration in a savepoint of it), so two processes opening a new file never both migrate it.

    A file written before the move to sqlite-utils' ``Migrations`` has its versions only in
    ``schema_migrations``; on its first open they are recorded in sqlite-utils' table, so they are
    not applied again. A version missing from both (a file from a branch of history that skipped
    it) applies.
    """
    named = {v.version: v.name for v in VERSIONS}
    done = set(_applied_names(db.conn, set(db.table_names())))
    if all(v.name in done for v in VERSIONS):
        return  # nothing to write: no write lock taken on a file that is up to date
    with atomic(db):
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        MIGRATIONS_SET.ensure_migrations_table(db)
        adopted = set(_applied_names(db.conn, set(db.table_names())))
        table = db.table(MIGRATIONS_SET.migrations_table)
        for version, applied_at in sorted(_recorded_versions(db).items()):
            if version in named and named[version] not in adopted:
                # The timestamp in the text form sqlite-utils writes for the migrations it applies.
                when = str(datetime.datetime.fromtimestamp(applied_at, datetime.UTC))
                table.insert({"migration_set": MIGRATION_SET, "name": named[version], "applied_at": when})
        MIGRATIONS_SET.apply(db)


def atomic(db: sqlite_utils.Database) -> AbstractContextManager[sqlite3.Connection]:
    """One write transaction, ``BEGIN IMMEDIATE``: the write lock is taken at the start, so writers
    queue (for the busy timeout) instead of failing midway on a lock upgrade. A nested call is a
    savepoint (sqlite-utils' ``atomic``): an error inside it undoes that block only, and the outer
    transaction decides what commits."""
    return _transaction(db, "BEGIN IMMEDIATE")


def scratch_transaction(db: sqlite_utils.Database) -> AbstractContextManager[sqlite3.Connection]:
    """A deferred transaction for bulk writes to TEMP tables (the planner's scratch space). Outside a
    transaction every row of an ``executemany`` is its own commit, which on a growing temp file costs
    tens of microseconds a row. Deferred, so it takes no lock on the state file: other processes
    keep writing while a plan is made. A nested call is a savepoint, as in ``atomic``."""
    return _transaction(db, "BEGIN")


@contextmanager
def _transaction(db: sqlite_utils.Database, begin: str) -> Iterator[sqlite3.Connection]:
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield conn
        return
    conn.execute(begin)
    try:
        yield conn
    except BaseException:
        # An error can have ended the transaction already (a full disk, a RAISE(ROLLBACK)).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
