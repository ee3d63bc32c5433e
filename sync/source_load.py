"""Load an audience's source rows into the planner's scratch tables, hashing only what changed.

Every target gets a TEMP table holding one row per source profile: its member key, the fingerprint
of its raw identifiers, consent and change time, and, only for profiles whose raw identifiers changed
since they were last synced to that target (or that it has never seen), the normalized and hashed
payload. The diff reads the payload of everyone else from state.

This is the hot path of every daemon tick, so it is shaped for speed:

- Rows are appended with consecutive rowids and indexed by member key once, at the end: inserting
  random 16-byte keys into a B-tree one by one costs several times more.
- Which profiles changed is asked of SQLite in two statements per chunk (one bulk insert, one join
  against the members' fingerprint index), on a worker thread, while the main thread reads and
  fingerprints the next chunk. SQLite releases the GIL while a statement runs; keeping it to a few
  statements per chunk (no per-row ``executemany``, few result rows) is what lets the two overlap.
- Only the changed profiles pay for phone parsing and SHA-256, once per group of targets that share
  a platform's normalization rules.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from json.encoder import encode_basestring_ascii as _quote

import sqlite_utils
from audiencesync.state.db import scratch_transaction
from audiencesync.state.sealed import SEALED_KEYS, Sealer, sealer_for
from audiencesync.sync.config import SourceConfig
from audiencesync.sync.identity import NORMALIZATION_VERSION, ProfileHasher
from audiencesync.sync.sources import SourceRow

CHUNK_ROWS = 20_000
SOURCE_COLUMNS = (
    "member_key BLOB NOT NULL, raw_fp BLOB NOT NULL, payload TEXT, payload_fp BLOB, invalid TEXT, "
    "consent INTEGER, source_at REAL"
)


def member_key(profile_id: str) -> bytes:
    """A stable 16-byte key for a profile; state never holds the source's own id."""
    return hashlib.blake2b(profile_id.encode(), digest_size=16).digest()


def payload_fingerprint(payload: str) -> bytes:
    return hashlib.blake2b(payload.encode(), digest_size=16).digest()


@dataclass
class SourceTable:
    """One target's scratch copy of the source, and what loading it counted."""

    name: str
    target_id: int | None
    """The target's id in state; None when it was never synced (every profile is new to it)."""
    skipped_no_identifier: int = 0
    invalid: Counter[str] = field(default_factory=Counter)


class HashGroup:
    """Targets that share one platform's normalization rules: each profile is hashed once for all."""

    def __init__(self, platform: str, source: SourceConfig, tables: list[SourceTable]) -> None:
        self.hasher = ProfileHasher(
            platform, list(source.identifiers), source.default_country, source.prehashed
        )
        self.kinds = list(source.identifiers)
        salt = json.dumps(
            [NORMALIZATION_VERSION, platform, source.default_country, self.kinds, sorted(source.prehashed)]
        )
        self.salt = salt.encode()
        self.tables = tables

    def raw_fp(self, row: SourceRow) -> bytes:
        """Fingerprint of the raw identifier values and the rules they are normalized by."""
        digest = hashlib.blake2b(self.salt, digest_size=16)
        raw = row.raw
        digest.update("\x1f".join([raw.get(k) or "" for k in self.kinds]).encode())
        return digest.digest()


@dataclass
class _Chunk:
    rows: list[SourceRow]
    first: int
    """Rowid of the chunk's first row in every source table."""
    keys: list[bytes]
    meta: str
    """JSON array of [consent, changed_at] per row."""
    fps: list[list[bytes]]
    """Raw fingerprints per hash group."""


# One statement appends a whole chunk: keys and fingerprints travel as one blob of 32 bytes a row,
# consent and change time as one JSON array.
_APPEND = (
    "INSERT INTO {table} (rowid, member_key, raw_fp, consent, source_at) "
    "SELECT ?1 + j.key, substr(?2, j.key * 32 + 1, 16), substr(?2, j.key * 32 + 17, 16), "
    "json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]') FROM json_each(?3) j"
)
# Rows whose fingerprint state does not hold: new to the target, or changed since its last sync.
_FIND_CHANGED = (
    "INSERT INTO source_changed SELECT ?1, s.rowid FROM {table} s "
    "LEFT JOIN members m INDEXED BY members_fingerprints ON m.target_id = ?2 AND m.member_key = s.member_key "
    "WHERE s.rowid BETWEEN ?3 AND ?4 AND m.raw_fp IS NOT s.raw_fp"
)


class SourceLoader:
    """Fills the source tables of one audience's targets from one pass over its rows."""

    def __init__(self, db: sqlite_utils.Database, groups: list[HashGroup]) -> None:
        self.db = db
        self.groups = groups
        self._all = [table for group in groups for table in group.tables]
        self._number = {id(table): n for n, table in enumerate(self._all)}
        self.consent_denied = 0
        self.sealer = sealer_for(db.conn)

    def load(self, rows: Iterable[SourceRow]) -> None:
        """Load every row, then index each table by member key. Raises what the source raises.

        A profile whose ads consent is denied is left out, as if it were not in the audience: it is
        never uploaded, and removed where it was. ``consent_denied`` counts them."""
        conn = self.db.conn
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS source_changed (tbl INTEGER NOT NULL, row INTEGER NOT NULL)"
        )
        loaded = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiencesync-plan") as worker:
            inflight: tuple[_Chunk, Future[None]] | None = None
            for rows_chunk in _chunks(self._consenting(rows), CHUNK_ROWS):
                chunk = self._prepare(rows_chunk, loaded)
                loaded += len(rows_chunk)
                # The worker is still looking up the previous chunk: finish that one first, on this
                # thread, so that the connection is never used by two threads at once.
                if inflight is not None:
                    self._finish(*inflight)
                inflight = (chunk, worker.submit(self._find_changed, chunk))
            if inflight is not None:
                self._finish(*inflight)
        for table in self._all:
            _index(conn, table.name)

    def _consenting(self, rows: Iterable[SourceRow]) -> Iterator[SourceRow]:
        for row in rows:
            if row.consent is False:
                self.consent_denied += 1
            else:
                yield row

    def _prepare(self, rows: list[SourceRow], first: int) -> _Chunk:
        meta = json.dumps([[None if r.consent is None else int(r.consent), r.changed_at] for r in rows])
        return _Chunk(
            rows,
            first,
            [member_key(r.profile_id) for r in rows],
            meta,
            [[group.raw_fp(r) for r in rows] for group in self.groups],
        )

    def _find_changed(self, chunk: _Chunk) -> None:
        """Worker thread: append the chunk to every known target's table and note its changed rows."""
        last = chunk.first + len(chunk.rows) - 1
        with scratch_transaction(self.db) as conn:
            conn.execute("DELETE FROM source_changed")
            for g, group in enumerate(self.groups):
                blob = b"".join(k + fp for k, fp in zip(chunk.keys, chunk.fps[g], strict=True))
                for table in group.tables:
                    if table.target_id is None:
                        continue
                    conn.execute(_APPEND.format(table=table.name), [chunk.first, blob, chunk.meta])
                    conn.execute(
                        _FIND_CHANGED.format(table=table.name),
                        [self._number[id(table)], table.target_id, chunk.first, last],
                    )

    def _finish(self, chunk: _Chunk, lookup: Future[None]) -> None:
        """Main thread: hash the changed rows once per group and write their payloads."""
        lookup.result()
        conn = self.db.conn
        changed: dict[int, list[int]] = {}
        for tbl, row in conn.execute("SELECT tbl, row FROM source_changed ORDER BY tbl, row"):
            changed.setdefault(tbl, []).append(row - chunk.first)
        with scratch_transaction(self.db):
            for g, group in enumerate(self.groups):
                mine = {
                    id(t): (
                        list(range(len(chunk.rows)))
                        if t.target_id is None
                        else changed.get(self._number[id(t)], [])
                    )
                    for t in group.tables
                }
                hashed, invalid = _hash(group, chunk.rows, sorted(set().union(*mine.values())), self.sealer)
                for table in group.tables:
                    # Only the rows hashed for this table: the others' invalid values are read
                    # back from state by the diff, and must not be counted twice.
                    rows = mine[id(table)]
                    table.invalid.update(reason for i in rows for reason in invalid.get(i, ()))
                    self._write(conn, table, chunk, g, rows, hashed)

    @staticmethod
    def _write(
        conn: sqlite3.Connection,
        table: SourceTable,
        chunk: _Chunk,
        g: int,
        rows: list[int],
        hashed: dict[int, tuple[str, bytes, str | None] | None],
    ) -> None:
        first = chunk.first
        dropped = [(first + i,) for i in rows if hashed[i] is None]
        table.skipped_no_identifier += len(dropped)
        if table.target_id is None:
            # Nothing was appended for a target state has never seen: every row goes in hashed.
            conn.executemany(
                f"INSERT INTO {table.name} (rowid, member_key, raw_fp, payload, payload_fp, invalid, consent, "
                "source_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        first + i,
                        chunk.keys[i],
                        chunk.fps[g][i],
                        *h,
                        _consent(chunk.rows[i]),
                        chunk.rows[i].changed_at,
                    )
                    for i in rows
                    if (h := hashed[i]) is not None
                ),
            )
            return
        conn.executemany(
            f"UPDATE {table.name} SET payload = ?, payload_fp = ?, invalid = ? WHERE rowid = ?",
            ((*h, first + i) for i in rows if (h := hashed[i]) is not None),
        )
        conn.executemany(f"DELETE FROM {table.name} WHERE rowid = ?", dropped)


def _consent(row: SourceRow) -> int | None:
    return None if row.consent is None else int(row.consent)


def _hash(
    group: HashGroup, rows: list[SourceRow], indices: list[int], sealer: Sealer
) -> tuple[dict[int, tuple[str, bytes, str | None] | None], dict[int, list[str]]]:
    """Normalize and hash ``rows[i]`` for each index: (payload, payload_fp, invalid) or None when
    the profile has no usable identifier; and each row's invalid values as ``kind:reason``."""
    hashed: dict[int, tuple[str, bytes, str | None] | None] = {}
    invalid_by_row: dict[int, list[str]] = {}
    for i in indices:
        profile = group.hasher(rows[i].raw)
        if profile.invalid:
            invalid_by_row[i] = [f"{kind}:{reason}" for kind, reason in profile.invalid]
        if not profile.identifiers:
            hashed[i] = None
            continue
        payload = payload_json(profile.identifiers)
        invalid = ",".join(f"{k}:{r}" for k, r in profile.invalid) or None
        # The fingerprint is of the plain payload; what is stored has its unhashed values sealed.
        stored = payload
        if not SEALED_KEYS.isdisjoint(profile.identifiers):
            stored = payload_json(sealer.seal_payload(profile.identifiers))
        hashed[i] = (stored, payload_fingerprint(payload), invalid)
    return hashed, invalid_by_row


def payload_json(identifiers: Mapping[str, str]) -> str:
    """``json.dumps(identifiers, sort_keys=True, separators=(",", ":"))``, byte for byte (state
    compares payload fingerprints across versions), at a third of its cost: the identifiers are a
    flat mapping of strings, so the general encoder's work is not needed."""
    return "{" + ",".join(f"{_quote(k)}:{_quote(identifiers[k])}" for k in sorted(identifiers)) + "}"


def _index(conn: sqlite3.Connection, table: str) -> None:
    """Index a loaded source table by member key. A profile id that appears twice in the source
    keeps its last row, as a re-read of the profile would."""
    try:
        conn.execute(f"CREATE UNIQUE INDEX temp.{table}_key ON {table} (member_key)")
    except sqlite3.IntegrityError:
        conn.execute(
            f"DELETE FROM {table} WHERE rowid NOT IN (SELECT max(rowid) FROM {table} GROUP BY member_key)"
        )
        conn.execute(f"CREATE UNIQUE INDEX temp.{table}_key ON {table} (member_key)")
    # The diff's joins start from the few rows that were hashed this time, not from every row.
    conn.execute(f"CREATE INDEX temp.{table}_hashed ON {table} (member_key) WHERE payload IS NOT NULL")


def _chunks(rows: Iterable[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk
