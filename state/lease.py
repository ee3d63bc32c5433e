"""The cross-process lease: at most one process pushes a given sync target at a time.

A lease is one row of the ``leases`` table (holder, pid, expires_at). The process holding it renews it
from a background thread on its own connection, so a slow batch never lets it lapse; a holder that
dies stops renewing. Another process may take a lease over when it has expired, or at once when its
holder ran on this host and its pid is gone (SIGKILL, OOM). Everything else waits, up to a bound,
and then gives up with a message that names the holder.

The lease guards the outbox, not the source: planning runs without it, pushing (and following or
reading back between runs) runs under it.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlite_utils
from audiencesync.state.db import atomic

DEFAULT_TTL_S = 60.0
DEFAULT_WAIT_S = 60.0
WAIT_ENV = "AUDIENCE_SYNC_LEASE_WAIT_SECONDS"
_POLL_S = 0.2


class LeaseBusy(Exception):
    """Another live process holds the target's lease and did not let go within the wait."""

    def __init__(self, target_id: int, holder: str, pid: int, waited: float) -> None:
        self.target_id = target_id
        self.holder = holder
        self.pid = pid
        super().__init__(
            f"another audience-sync process (pid {pid} on {holder.split(':', 1)[0]}) is pushing this target; "
            f"gave up after waiting {waited:.0f}s (it runs again on the next schedule)"
        )


@dataclass(frozen=True)
class LeaseRow:
    target_id: int
    holder: str
    pid: int
    acquired_at: float
    expires_at: float


def default_wait() -> float:
    """How long ``sync`` waits for a busy target: ``$AUDIENCE_SYNC_LEASE_WAIT_SECONDS`` or 60 s."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def _holder_name() -> str:
    # host:pid:token. The token tells two holders in one process apart (the daemon's threads).
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def holder_is_dead(holder: str, pid: int) -> bool:
    """True when the holder ran on this host and its process is gone. A holder on another host is
    never judged dead here: only its expiry frees the lease."""
    host = holder.split(":", 1)[0]
    return host == socket.gethostname() and not _pid_alive(pid)


def db_file(db: sqlite_utils.Database) -> str | None:
    """The file behind a connection, or None for an in-memory database."""
    for _seq, name, path in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(path) or None
    return None


def read_lease(db: sqlite_utils.Database, target_id: int) -> LeaseRow | None:
    """Who holds the target's lease, and until when; None when nobody does."""
    row = db.execute(
        "SELECT target_id, holder, pid, acquired_at, expires_at FROM leases WHERE target_id = ?", [target_id]
    ).fetchone()
    return None if row is None else LeaseRow(*row)


def try_acquire(db: sqlite_utils.Database, target_id: int, holder: str, ttl: float) -> LeaseRow | None:
    """Take the lease if it is free, expired or held by a dead process; otherwise return the row of
    whoever holds it."""
    now = time.time()
    with atomic(db) as conn:
        current = read_lease(db, target_id)
        if (
            current is not None
            and current.holder != holder
            and current.expires_at > now
            and not holder_is_dead(current.holder, current.pid)
        ):
            return current
        conn.execute(
            "INSERT OR REPLACE INTO leases (target_id, holder, pid, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            [target_id, holder, os.getpid(), now, now + ttl],
        )
    return None


class Lease:
    """A held lease. Renewed every ``ttl / 3`` seconds until ``release``."""

    def __init__(self, db: sqlite_utils.Database, target_id: int, holder: str, ttl: float) -> None:
        self.db = db
        self.target_id = target_id
        self.holder = holder
        self.ttl = ttl
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        path = db_file(db)
        if path is not None:
            self._thread = threading.Thread(
                target=self._renew_loop, args=(path,), name=f"lease-{target_id}", daemon=True
            )
            self._thread.start()

    @property
    def lost(self) -> bool:
        """True if a renewal found the lease taken over (this process was stalled past its expiry)."""
        return self._lost.is_set()

    def _renew_loop(self, path: str) -> None:
        # Its own connection: the owner's connection is busy in the push, and sqlite3 connections are
        # not for concurrent use from two threads.
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            while not self._stop.wait(self.ttl / 3):
                try:
                    cur = conn.execute(
                        "UPDATE leases SET expires_at = ? WHERE target_id = ? AND holder = ?",
                        [time.time() + self.ttl, self.target_id, self.holder],
                    )
                except sqlite3.OperationalError:
                    continue  # the database was busy past the timeout: try again next round
                if cur.rowcount == 0:
                    self._lost.set()
                    return
        finally:
            conn.close()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with atomic(self.db) as conn:
            conn.execute(
                "DELETE FROM leases WHERE target_id = ? AND holder = ?", [self.target_id, self.holder]
            )


def acquire(
    db: sqlite_utils.Database, target_id: int, *, wait: float = 0.0, ttl: float = DEFAULT_TTL_S
) -> Lease:
    """Take the target's lease, waiting up to ``wait`` seconds; raise ``LeaseBusy`` otherwise."""
    holder = _holder_name()
    start = time.monotonic()
    while True:
        current = try_acquire(db, target_id, holder, ttl)
        if current is None:
            return Lease(db, target_id, holder, ttl)
        waited = time.monotonic() - start
        if waited >= wait:
            raise LeaseBusy(target_id, current.holder, current.pid, waited)
        time.sleep(min(_POLL_S, max(0.0, wait - waited)))


@contextmanager
def held(
    db: sqlite_utils.Database, target_id: int, *, wait: float = 0.0, ttl: float = DEFAULT_TTL_S
) -> Iterator[Lease]:
    """``acquire`` for the duration of a block; released however the block ends."""
    lease = acquire(db, target_id, wait=wait, ttl=ttl)
    try:
        yield lease
    finally:
        lease.release()
