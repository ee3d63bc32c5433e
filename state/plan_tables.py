"""The planner's scratch tables and the diff: every statement a plan runs against the state connection.

A plan never writes the state file until it is committed. Per sync target it holds two TEMP tables
(in SQLite's temp store, never in the state file):

- the *source table* (``plan_src_N``): one row per source profile the run read for that target,
  with its member key, the fingerprint of its raw identifiers, consent and change time and, only
  for profiles that are new to the target or whose raw identifiers changed, the hashed payload;
- the *desired table* (``plan_desired_N``): the changes the plan wants in the outbox.

An incremental plan adds a third, the *left table* (``plan_left_N``): members whose changed row no
longer belongs to the audience. The engine (``audiencesync.sync.plan`` and ``source_load``) decides
what to read and hash; this module owns how it is stored, compared and merged.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils
from audiencesync.state.db import atomic, scratch_transaction
from audiencesync.state.outbox import REJECTION_MAX_AGE_S

SOURCE_COLUMNS = (
    "member_key BLOB NOT NULL, raw_fp BLOB NOT NULL, payload TEXT, payload_fp BLOB, invalid TEXT, "
    "consent INTEGER, source_at REAL"
)
_DESIRED_COLUMNS = (
    "member_key BLOB NOT NULL, op TEXT NOT NULL, payload TEXT NOT NULL, payload_fp BLOB NOT NULL, "
    "raw_fp BLOB, invalid TEXT, consent INTEGER, source_at REAL, kind TEXT NOT NULL, "
    "PRIMARY KEY (member_key, op)"
)

# One statement appends a whole chunk: keys and fingerprints travel as one blob of 32 bytes a row;
# each row's offset in the chunk, consent and change time as one JSON array.
_APPEND = (
    "INSERT INTO {table} (rowid, member_key, raw_fp, consent, source_at) "
    "SELECT ?1 + json_extract(j.value, '$[0]'), substr(?2, j.key * 32 + 1, 16), "
    "substr(?2, j.key * 32 + 17, 16), json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]') "
    "FROM json_each(?3) j"
)
# A chunk whose rows all go in, with no consent or change time: the offsets come from a table of
# integers instead of a JSON array parsed row by row.
_APPEND_PLAIN = (
    "INSERT INTO {table} (rowid, member_key, raw_fp) "
    "SELECT ?1 + o.n, substr(?2, o.n * 32 + 1, 16), substr(?2, o.n * 32 + 17, 16) "
    "FROM plan_offsets o WHERE o.n < ?3"
)
# Rows whose fingerprint state does not hold: new to the target, or changed since its last sync.
_FIND_CHANGED = (
    "INSERT INTO source_changed SELECT ?1, s.rowid FROM {table} s "
    "LEFT JOIN members m INDEXED BY members_fingerprints ON m.target_id = ?2 AND m.member_key = s.member_key "
    "WHERE s.rowid BETWEEN ?3 AND ?4 AND m.raw_fp IS NOT s.raw_fp"
)


@dataclass(frozen=True)
class TargetTables:
    """The scratch tables of one target's plan."""

    source: str
    desired: str
    left: str


@dataclass
class DiffCounts:
    """What the diff found for one target, before the planner names it."""

    source_members: int = 0
    synced: int = 0
    new_members: int = 0
    held_back: int = 0
    held_in_flight: int = 0
    """Of ``held_back``: changes held because their member is in flight (planned again next run)."""
    invalid: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, int] = field(default_factory=dict)
    """``kind:op`` -> changes, e.g. ``new:add``, ``gone:remove``, ``identity:add``."""


@dataclass(frozen=True)
class DiffOptions:
    target_id: int
    """The target's state id; -1 when it was never synced."""
    mirror: bool
    """Mirror mode removes; add_only never removes, not even old identifiers."""
    refresh_before: float | None
    """Re-upload members uploaded before this time (a platform's membership lifespan), or None."""
    now: float
    incremental: bool = False
    """The source table holds only changed rows: absence means unchanged, not gone."""


class PlanTables:
    """The scratch tables of one planner's plans on one state connection."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self._count = 0

    # --- tables --------------------------------------------------------------------------------
    def create(self) -> TargetTables:
        self._count += 1
        n = self._count
        tables = TargetTables(f"plan_src_{n}", f"plan_desired_{n}", f"plan_left_{n}")
        conn = self.db.conn
        conn.execute(f"CREATE TEMP TABLE {tables.source} ({SOURCE_COLUMNS})")
        conn.execute(f"CREATE TEMP TABLE {tables.desired} ({_DESIRED_COLUMNS}) WITHOUT ROWID")
        conn.execute(f"CREATE TEMP TABLE {tables.left} (member_key BLOB PRIMARY KEY) WITHOUT ROWID")
        return tables

    def drop(self, tables: TargetTables) -> None:
        for name in (tables.desired, tables.source, tables.left):
            self.db.conn.execute(f"DROP TABLE IF EXISTS temp.{name}")

    # --- loading the source tables ---------------------------------------------------------------
    def begin_load(self, chunk_rows: int) -> None:
        conn = self.db.conn
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS source_changed (tbl INTEGER NOT NULL, row INTEGER NOT NULL)"
        )
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS plan_offsets (n INTEGER PRIMARY KEY)")
        have = conn.execute("SELECT count(*) FROM plan_offsets").fetchone()[0]
        if have < chunk_rows:
            with scratch_transaction(self.db):
                conn.executemany(
                    "INSERT INTO plan_offsets VALUES (?)", ((n,) for n in range(have, chunk_rows))
                )

    def append_and_find_changed(
        self, chunk: Iterable[tuple[str, int, int, bytes, str | None, int, int]]
    ) -> None:
        """For each (table, table number, target id, blob, meta, first rowid, last rowid): append the
        rows and note in ``source_changed`` those whose fingerprint state does not hold. ``meta``
        None: every row of the chunk, none with consent or a change time. One transaction, a few
        statements: it runs on a worker thread while the next chunk is read."""
        with scratch_transaction(self.db) as conn:
            conn.execute("DELETE FROM source_changed")
            for table, number, target_id, blob, meta, first, last in chunk:
                if meta is None:
                    conn.execute(_APPEND_PLAIN.format(table=table), [first, blob, last - first + 1])
                else:
                    conn.execute(_APPEND.format(table=table), [first, blob, meta])
                conn.execute(_FIND_CHANGED.format(table=table), [number, target_id, first, last])

    def changed_rows(self) -> Iterator[tuple[int, int]]:
        """(table number, rowid) of the rows the last ``append_and_find_changed`` found changed."""
        yield from self.db.conn.execute("SELECT tbl, row FROM source_changed ORDER BY tbl, row")

    def write_hashed(
        self,
        table: str,
        *,
        inserts: Iterable[tuple[Any, ...]] = (),
        updates: Iterable[tuple[Any, ...]] = (),
        deletes: Iterable[tuple[int]] = (),
        left: Iterable[tuple[bytes]] = (),
        left_table: str | None = None,
    ) -> None:
        """Write a chunk's hashed rows: ``inserts`` (rowid, member_key, raw_fp, payload, payload_fp,
        invalid, consent, source_at) for a table nothing was appended to, ``updates`` (payload,
        payload_fp, invalid, rowid) of appended rows, ``deletes`` of rowids with no usable identifier,
        and the member keys that ``left`` the audience."""
        with scratch_transaction(self.db) as conn:
            conn.executemany(
                f"INSERT INTO {table} (rowid, member_key, raw_fp, payload, payload_fp, invalid, consent, "
                "source_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
            conn.executemany(
                f"UPDATE {table} SET payload = ?, payload_fp = ?, invalid = ? WHERE rowid = ?", updates
            )
            conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", deletes)
            if left_table is not None:
                conn.executemany(f"INSERT OR IGNORE INTO {left_table} VALUES (?)", left)

    def index_source(self, tables: TargetTables) -> None:
        """Index a loaded source table by member key. A profile id that appears twice in the source
        keeps its last row, as a re-read of the profile would. A profile that is both in the source
        and among those that left (two rows, one id) stays in."""
        conn, table = self.db.conn, tables.source
        try:
            conn.execute(f"CREATE UNIQUE INDEX temp.{table}_key ON {table} (member_key)")
        except sqlite3.IntegrityError:
            conn.execute(
                f"DELETE FROM {table} WHERE rowid NOT IN (SELECT max(rowid) FROM {table} GROUP BY member_key)"
            )
            conn.execute(f"CREATE UNIQUE INDEX temp.{table}_key ON {table} (member_key)")
        # The diff's joins start from the few rows that were hashed this time, not from every row.
        conn.execute(f"CREATE INDEX temp.{table}_hashed ON {table} (member_key) WHERE payload IS NOT NULL")
        if conn.execute(f"SELECT 1 FROM {tables.left} LIMIT 1").fetchone():
            conn.execute(f"DELETE FROM {tables.left} WHERE member_key IN (SELECT member_key FROM {table})")

    # --- the diff ---------------------------------------------------------------------------------
    def diff(self, tables: TargetTables, opts: DiffOptions) -> DiffCounts:
        """Fill the desired table from the source table and state, and count what it holds."""
        conn = self.db.conn
        src, desired, left, t = tables.source, tables.desired, tables.left, opts.target_id
        out = DiffCounts()
        out.source_members = conn.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
        out.synced = conn.execute("SELECT count(*) FROM members WHERE target_id = ?", [t]).fetchone()[0]
        # Invalid identifiers of members whose raw values did not change were counted when they were
        # hashed; they are read back from state rather than hashed again.
        for invalid, count in conn.execute(
            f"SELECT m.invalid, count(*) FROM {src} s JOIN members m ON m.target_id = ? "
            "AND m.member_key = s.member_key WHERE s.payload IS NULL AND m.invalid IS NOT NULL GROUP BY m.invalid",
            [t],
        ):
            for item in str(invalid).split(","):
                out.invalid[item] += count

        # New members. In key order, so that the plan table (keyed by member) is appended to rather
        # than inserted into at random: several times faster for a first sync of millions.
        out.new_members = conn.execute(
            f"INSERT INTO {desired} SELECT s.member_key, 'add', s.payload, s.payload_fp, s.raw_fp, s.invalid, "
            f"s.consent, s.source_at, 'new' FROM {src} s INDEXED BY {src}_hashed "
            "WHERE s.payload IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM members m WHERE m.target_id = ? AND m.member_key = s.member_key) "
            "ORDER BY s.member_key",
            [t],
        ).rowcount
        # Identity changes: the new identifiers in, exactly the old ones out.
        conn.execute(
            f"INSERT INTO {desired} SELECT s.member_key, 'add', s.payload, s.payload_fp, s.raw_fp, s.invalid, "
            f"s.consent, s.source_at, 'identity' FROM {src} s CROSS JOIN members m ON m.target_id = ? "
            "AND m.member_key = s.member_key WHERE s.payload IS NOT NULL AND s.payload_fp != m.payload_fp",
            [t],
        )
        if opts.mirror:
            conn.execute(
                f"INSERT INTO {desired} SELECT m.member_key, 'remove', m.payload, m.payload_fp, NULL, NULL, "
                f"s.consent, s.source_at, 'identity' FROM {src} s CROSS JOIN members m ON m.target_id = ? "
                "AND m.member_key = s.member_key WHERE s.payload IS NOT NULL AND s.payload_fp != m.payload_fp",
                [t],
            )
        # Members gone from the source. State only ever holds members this tool added, so mirror mode
        # can never remove someone it did not add. In a full plan every source row that is not new is
        # a synced member, so when those account for all synced members the scan is skipped (most
        # ticks). An incremental plan read only changed rows: a member is gone only when its changed
        # row left the audience.
        if opts.mirror and opts.incremental:
            conn.execute(
                f"INSERT INTO {desired} SELECT m.member_key, 'remove', m.payload, m.payload_fp, NULL, NULL, "
                f"NULL, NULL, 'gone' FROM {left} l CROSS JOIN members m ON m.target_id = ? "
                "AND m.member_key = l.member_key",
                [t],
            )
        elif opts.mirror and out.source_members - out.new_members < out.synced:
            conn.execute(
                f"INSERT INTO {desired} SELECT m.member_key, 'remove', m.payload, m.payload_fp, NULL, NULL, "
                f"NULL, NULL, 'gone' FROM members m INDEXED BY members_fingerprints WHERE m.target_id = ? AND NOT EXISTS "
                f"(SELECT 1 FROM {src} s WHERE s.member_key = m.member_key)",
                [t],
            )
        if conn.execute(f"SELECT 1 FROM {desired} WHERE op = 'remove' LIMIT 1").fetchone():
            self._mark_shared(tables, t, opts.incremental)
        # Which members the source still wants, for refreshes and resends: in a full plan those in
        # the source table; in an incremental one also every member whose row did not change.
        if opts.incremental:
            wanted = (
                "members m {index} LEFT JOIN "
                + src
                + " s ON s.member_key = m.member_key WHERE m.target_id = ? "
                f"AND m.member_key NOT IN (SELECT member_key FROM {left})"
            )
        else:
            wanted = f"{src} s JOIN members m ON m.target_id = ? AND m.member_key = s.member_key WHERE 1"
        # Re-upload members before the platform's membership lifespan drops them. (Incremental: a
        # pass over the target's members; only platforms with a lifespan ask for it.)
        if opts.refresh_before is not None:
            conn.execute(
                f"INSERT OR IGNORE INTO {desired} SELECT m.member_key, 'add', m.payload, m.payload_fp, m.raw_fp, "
                f"m.invalid, s.consent, NULL, 'refresh' FROM {wanted.format(index='')} AND m.uploaded_at < ?",
                [t, opts.refresh_before],
            )
        unsettled = wanted.format(index="INDEXED BY members_unsettled") if opts.incremental else wanted
        # Resend members whose last add or remove is unsettled (maybe applied after a lost answer, or
        # unverified after a failure count) while the source still wants their identifiers: an add is
        # idempotent, so a member already there is unchanged, and a maybe-applied remove is reversed.
        conn.execute(
            f"INSERT OR IGNORE INTO {desired} SELECT m.member_key, 'add', m.payload, m.payload_fp, m.raw_fp, "
            f"m.invalid, s.consent, s.source_at, 'resend' FROM {unsettled} AND m.confirmation != 'synced' "
            "AND (s.payload IS NULL OR s.payload_fp = m.payload_fp)",
            [t],
        )
        # Hold back members with a change in flight (settled first, planned next run) and changes
        # whose rejection is still backing off or has been given up on.
        in_flight = (
            f"EXISTS (SELECT 1 FROM outbox o WHERE o.target_id = ?1 "
            f"AND o.member_key = {desired}.member_key AND o.status = 'in_flight')"
        )
        out.held_in_flight = conn.execute(
            f"SELECT count(*) FROM {desired} WHERE {in_flight}", [t]
        ).fetchone()[0]
        out.held_back = conn.execute(
            f"DELETE FROM {desired} WHERE {in_flight} OR EXISTS "
            f"(SELECT 1 FROM rejections r WHERE r.target_id = ?1 AND r.member_key = {desired}.member_key "
            f"AND r.op = {desired}.op AND r.payload_fp = {desired}.payload_fp "
            "AND (r.next_retry_at > ?2 OR r.first_at < ?3))",
            [t, opts.now, opts.now - REJECTION_MAX_AGE_S],
        ).rowcount
        out.by_kind = {
            str(k): int(n)
            for k, n in conn.execute(f"SELECT kind || ':' || op, count(*) FROM {desired} GROUP BY kind, op")
        }
        return out

    def _mark_shared(self, tables: TargetTables, t: int, incremental: bool) -> None:
        """A remove whose identifiers another profile in the source still carries (two profiles, one
        email) must not be sent: the platform would drop the person the other profile still wants.
        Such members are forgotten from state without a request. A profile hashed this run carries
        its new payload; one that was not carries the payload state holds for it. In an incremental
        plan every member that is not being removed is still wanted."""
        conn, src, desired = self.db.conn, tables.source, tables.desired
        if incremental:
            conn.execute(
                f"UPDATE {desired} SET kind = 'shared' WHERE op = 'remove' AND (payload_fp IN "
                f"(SELECT s.payload_fp FROM {src} s WHERE s.payload IS NOT NULL) OR payload_fp IN "
                f"(SELECT m.payload_fp FROM members m INDEXED BY members_payloads WHERE m.target_id = ? AND m.payload_fp IN "
                f"(SELECT payload_fp FROM {desired} WHERE op = 'remove') AND m.member_key NOT IN "
                f"(SELECT member_key FROM {desired} WHERE op = 'remove') AND m.member_key NOT IN "
                f"(SELECT s.member_key FROM {src} s WHERE s.payload IS NOT NULL)))",
                [t],
            )
            return
        conn.execute(
            f"UPDATE {desired} SET kind = 'shared' WHERE op = 'remove' AND (payload_fp IN "
            f"(SELECT s.payload_fp FROM {src} s WHERE s.payload IS NOT NULL) OR payload_fp IN "
            f"(SELECT m.payload_fp FROM members m INDEXED BY members_fingerprints CROSS JOIN {src} s "
            f"ON s.member_key = m.member_key "
            f"WHERE m.target_id = ? AND s.payload IS NULL AND m.payload_fp IN "
            f"(SELECT payload_fp FROM {desired} WHERE op = 'remove')))",
            [t],
        )

    def identifier_drops(self, desired: str, target_id: int) -> dict[str, int]:
        """Identity changes that drop an identifier key the member had, counted by key."""
        rows = self.db.conn.execute(
            f"SELECT j.key, count(*) FROM {desired} d CROSS JOIN members m ON m.target_id = ? "
            "AND m.member_key = d.member_key CROSS JOIN json_each(m.payload) j "
            "WHERE d.kind = 'identity' AND d.op = 'add' "
            "AND json_type(d.payload, '$.\"' || j.key || '\"') IS NULL GROUP BY j.key",
            [target_id],
        ).fetchall()
        return {str(k): int(n) for k, n in rows}

    # --- saved plans, commit, export -----------------------------------------------------------------
    def load_saved(self, desired: str, ops: Iterable[tuple[Any, ...]]) -> dict[str, int]:
        """Fill a desired table from a saved plan's (member_key, op, payload, payload_fp, raw_fp,
        invalid, consent, source_at); changes by op."""
        conn = self.db.conn
        conn.executemany(f"INSERT OR REPLACE INTO {desired} VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'saved')", ops)
        return {str(op): int(n) for op, n in conn.execute(f"SELECT op, count(*) FROM {desired} GROUP BY op")}

    def commit(
        self, tables: TargetTables, target_id: int, now: float, *, from_source: bool, after: Any = None
    ) -> None:
        """Merge a desired table into the outbox, in one transaction. Queued changes that are still
        wanted keep their first-observed time (lag is measured from it); ones no longer wanted are
        dropped. ``after(conn)``, if given, runs inside the same transaction."""
        desired, src, t = tables.desired, tables.source, target_id
        with atomic(self.db) as conn:
            conn.execute(
                "DELETE FROM outbox WHERE target_id = ? AND status = 'queued' AND NOT EXISTS "
                f"(SELECT 1 FROM {desired} d WHERE d.member_key = outbox.member_key AND d.op = outbox.op "
                "AND d.payload_fp = outbox.payload_fp AND d.kind != 'shared')",
                [t],
            )
            conn.execute(
                "INSERT OR IGNORE INTO outbox (target_id, member_key, op, payload, payload_fp, raw_fp, invalid, "
                "consent, status, source_at, observed_at) SELECT ?, member_key, op, payload, payload_fp, raw_fp, "
                f"invalid, consent, 'queued', source_at, ? FROM {desired} WHERE kind != 'shared'",
                [t, now],
            )
            conn.execute(
                "DELETE FROM members WHERE target_id = ? AND member_key IN "
                f"(SELECT member_key FROM {desired} WHERE kind = 'shared')",
                [t],
            )
            if from_source:
                # Raw values changed but normalize to the same hashes (say, an email's letter case):
                # the platform needs nothing; remember the new fingerprint so they are not hashed
                # again. Driven from the few rows hashed this run, not from every member.
                conn.execute(
                    f"UPDATE members SET raw_fp = (SELECT s.raw_fp FROM {src} s WHERE s.member_key = members.member_key), "
                    f"invalid = (SELECT s.invalid FROM {src} s WHERE s.member_key = members.member_key) "
                    f"WHERE target_id = ? AND member_key IN (SELECT member_key FROM {src} WHERE payload IS NOT NULL) "
                    f"AND EXISTS (SELECT 1 FROM {src} s WHERE s.member_key = members.member_key "
                    "AND s.payload_fp = members.payload_fp AND s.raw_fp != members.raw_fp)",
                    [t],
                )
            if after is not None:
                after(conn)

    def desired_rows(self, desired: str) -> Iterator[tuple[Any, ...]]:
        """(member_key, op, payload, raw_fp, invalid, source_at, consent) of a plan, for export."""
        cursor = self.db.conn.execute(
            f"SELECT member_key, op, payload, raw_fp, invalid, source_at, consent FROM {desired} "
            "ORDER BY op, member_key"
        )
        while rows := cursor.fetchmany(10_000):
            yield from rows

    def foreign_removes(self, desired: str, target_id: int) -> int:
        """Removes in a desired table that match no member state holds (payload and all) nor an add
        the outbox may have sent: a saved plan may only remove what this tool added."""
        return int(
            self.db.conn.execute(
                f"SELECT count(*) FROM {desired} d WHERE d.op = 'remove' AND NOT EXISTS "
                "(SELECT 1 FROM members m WHERE m.target_id = ?1 AND m.member_key = d.member_key "
                "AND m.payload_fp = d.payload_fp) AND NOT EXISTS (SELECT 1 FROM outbox o WHERE "
                "o.target_id = ?1 AND o.member_key = d.member_key AND o.op = 'add' AND o.payload_fp = d.payload_fp)",
                [target_id],
            ).fetchone()[0]
        )
