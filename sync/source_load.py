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
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from json.encoder import encode_basestring_ascii as _quote
from operator import methodcaller
from typing import cast

from audiencesync.state.plan_tables import PlanTables, TargetTables
from audiencesync.state.sealed import SEALED_KEYS, Sealer
from audiencesync.sync.config import SourceConfig
from audiencesync.sync.identity import NORMALIZATION_VERSION, ProfileHasher
from audiencesync.sync.row_batches import RowBatch, merge

CHUNK_ROWS = 20_000
BATCH_ROWS_MAX = 10_000
"""The largest source batch a chunk's last merge may add beyond ``CHUNK_ROWS``."""


def member_key(profile_id: str) -> bytes:
    """A stable 16-byte key for a profile; state never holds the source's own id."""
    return hashlib.blake2b(profile_id.encode(), digest_size=16).digest()


def payload_fingerprint(payload: str) -> bytes:
    return hashlib.blake2b(payload.encode(), digest_size=16).digest()


@dataclass
class SourceTable:
    """One target's scratch copy of the source, and what loading it counted."""

    tables: TargetTables
    target_id: int | None
    """The target's id in state; None when it was never synced (every profile is new to it)."""
    bit: int = 1
    """The audience's bit in ``SourceRow.member_of``."""
    skipped_no_identifier: int = 0
    consent_denied: int = 0
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

    def raw_fps(self, texts: list[bytes]) -> list[bytes]:
        """Fingerprints of the raw identifier values (``_joined``) and the rules they are
        normalized by."""
        return _digests(map(self.salt.__add__, texts))


# Per-row work is the cost of a no-change plan: these loops run in C (map over built-ins), not in
# Python bytecode per row.
_BLAKE2B_16 = partial(hashlib.blake2b, digest_size=16)
_DIGEST = methodcaller("digest")


def _digests(data: Iterable[bytes]) -> list[bytes]:
    """16-byte BLAKE2b of each item."""
    return list(map(_DIGEST, map(_BLAKE2B_16, data)))


def _joined(batch: RowBatch, kinds: list[str]) -> list[bytes]:
    """Each row's raw identifier values, in ``kinds`` order, joined as the fingerprint reads them."""
    n = len(batch)
    columns: list[list[str]] = []
    for kind in kinds:
        values: list[str | None] = (
            batch.values[batch.kinds.index(kind)] if kind in batch.kinds else [None] * n
        )
        # Without a None the column is already text: reused as it is, no pass over it in Python.
        columns.append(cast(list[str], values) if None not in values else [v or "" for v in values])
    if len(columns) == 1:
        return list(map(str.encode, columns[0]))
    return list(map(str.encode, map("\x1f".join, zip(*columns, strict=True))))


@dataclass
class _Chunk:
    batch: RowBatch
    first: int
    """Rowid of the chunk's first row in every source table (a table holds some of them)."""
    keys: list[bytes]
    fps: list[list[bytes]]
    """Raw fingerprints per hash group."""
    picks: dict[int, list[int] | None]
    """Per table (by number): the rows of the chunk in its audience, with consent; None: all."""
    left: dict[int, list[int]]
    """Per table, in an incremental load: the rows that are not (they left the audience)."""

    def picked(self, number: int) -> list[int]:
        mine = self.picks[number]
        return list(range(len(self.batch))) if mine is None else mine


class SourceLoader:
    """Fills the source tables of the targets of one or more audiences from one pass over the rows.

    Each table belongs to one audience, named by a bit of ``SourceRow.member_of``; a row lands in the
    tables of the audiences it is in. In an ``incremental`` load the rows are the source's changed
    rows, whether or not in an audience: a row that is not in a table's audience (or whose consent is
    denied) is noted as having left it."""

    def __init__(
        self, tables: PlanTables, groups: list[HashGroup], sealer: Sealer, *, incremental: bool = False
    ) -> None:
        self.tables = tables
        self.groups = groups
        self.incremental = incremental
        self._all = [table for group in groups for table in group.tables]
        self._number = {id(table): n for n, table in enumerate(self._all)}
        self.sealer = sealer
        self.changed_at_max: float | None = None
        """The latest change time among the rows read (an incremental plan's next watermark)."""
        self.offsets = CHUNK_ROWS + BATCH_ROWS_MAX

    def load(self, rows: Iterable[RowBatch]) -> None:
        """Load every batch, then index each table by member key. Raises what the source raises.

        A profile whose ads consent is denied is left out, as if it were not in the audience: it is
        never uploaded, and removed where it was. Each table's ``consent_denied`` counts them."""
        self.tables.begin_load(CHUNK_ROWS + BATCH_ROWS_MAX)
        loaded = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiencesync-plan") as worker:
            inflight: tuple[_Chunk, Future[None]] | None = None
            for batch in _chunks(rows, CHUNK_ROWS):
                chunk = self._prepare(batch, loaded)
                loaded += len(batch)
                # The worker is still looking up the previous chunk: finish that one first, on this
                # thread, so that the connection is never used by two threads at once.
                if inflight is not None:
                    self._finish(*inflight)
                inflight = (chunk, worker.submit(self._find_changed, chunk))
            if inflight is not None:
                self._finish(*inflight)
        for table in self._all:
            self.tables.index_source(table.tables)

    def _prepare(self, batch: RowBatch, first: int) -> _Chunk:
        picks: dict[int, list[int] | None] = {}
        left: dict[int, list[int]] = {}
        by_bit: dict[int, tuple[list[int] | None, list[int]]] = {}
        consent = batch.consent
        everyone = batch.member_of is None and (consent is None or False not in consent)
        for table in self._all:
            bit = table.bit
            if bit not in by_bit:
                if everyone and bit == 1:
                    by_bit[bit] = (None, [])
                else:
                    bits = batch.member_bits()
                    mine = [
                        i
                        for i, b in enumerate(bits)
                        if b & bit and (consent is None or consent[i] is not False)
                    ]
                    denied = sum(1 for b in bits if b & bit) - len(mine)
                    chosen = set(mine)
                    by_bit[bit] = (mine, [i for i in range(len(bits)) if i not in chosen])
                    for t in self._all:
                        if t.bit == bit:
                            t.consent_denied += denied
            mine_or_all, others = by_bit[bit]
            picks[self._number[id(table)]] = mine_or_all
            if self.incremental:
                left[self._number[id(table)]] = others
        if batch.changed_at is not None:
            stamps = [t for t in batch.changed_at if t is not None]
            if stamps and (self.changed_at_max is None or max(stamps) > self.changed_at_max):
                self.changed_at_max = max(stamps)
        texts: dict[tuple[str, ...], list[bytes]] = {}
        fps = []
        for group in self.groups:
            kinds = tuple(group.kinds)
            if kinds not in texts:
                texts[kinds] = _joined(batch, group.kinds)
            fps.append(group.raw_fps(texts[kinds]))
        keys = _digests(map(str.encode, batch.ids))
        return _Chunk(batch, first, keys, fps, picks, left)

    def _find_changed(self, chunk: _Chunk) -> None:
        """Worker thread: append the chunk to every known target's table and note its changed rows."""
        batch = chunk.batch
        last = chunk.first + len(batch) - 1
        consent = batch.consent or [None] * len(batch)
        changed = batch.changed_at or [None] * len(batch)
        consent_ints = consent if batch.consent is None else [None if c is None else int(c) for c in consent]
        work = []
        for g, group in enumerate(self.groups):
            for table in group.tables:
                if table.target_id is None:
                    continue
                number = self._number[id(table)]
                fps, keys = chunk.fps[g], chunk.keys
                mine = chunk.picks[number]
                meta: str | None
                if mine is None:
                    blob = b"".join(map(bytes.__add__, keys, fps))
                    plain = batch.consent is None and batch.changed_at is None and len(keys) <= self.offsets
                    meta = (
                        None
                        if plain
                        else json.dumps(list(zip(range(len(keys)), consent_ints, changed, strict=True)))
                    )
                else:
                    blob = b"".join([keys[i] + fps[i] for i in mine])
                    meta = json.dumps([(i, consent_ints[i], changed[i]) for i in mine])
                work.append((table.tables.source, number, table.target_id, blob, meta, chunk.first, last))
        self.tables.append_and_find_changed(work)

    def _finish(self, chunk: _Chunk, lookup: Future[None]) -> None:
        """Main thread: hash the changed rows once per group and write their payloads."""
        lookup.result()
        changed: dict[int, list[int]] = {}
        for tbl, row in self.tables.changed_rows():
            changed.setdefault(tbl, []).append(row - chunk.first)
        for g, group in enumerate(self.groups):
            mine = {
                id(t): (
                    chunk.picked(self._number[id(t)])
                    if t.target_id is None
                    else changed.get(self._number[id(t)], [])
                )
                for t in group.tables
            }
            hashed, invalid = _hash(group, chunk.batch, sorted(set().union(*mine.values())), self.sealer)
            for table in group.tables:
                # Only the rows hashed for this table: the others' invalid values are read
                # back from state by the diff, and must not be counted twice.
                rows = mine[id(table)]
                table.invalid.update(reason for i in rows for reason in invalid.get(i, ()))
                self._write(table, chunk, g, rows, hashed)

    def _write(
        self,
        table: SourceTable,
        chunk: _Chunk,
        g: int,
        rows: list[int],
        hashed: dict[int, tuple[str, bytes, str | None] | None],
    ) -> None:
        first, batch = chunk.first, chunk.batch
        dropped = [(first + i,) for i in rows if hashed[i] is None]
        table.skipped_no_identifier += len(dropped)
        left = [(chunk.keys[i],) for i in chunk.left.get(self._number[id(table)], ())]
        if table.target_id is None:
            # Nothing was appended for a target state has never seen: every row goes in hashed.
            inserts = (
                (first + i, chunk.keys[i], chunk.fps[g][i], *h, batch.consent_at(i), batch.changed_at_row(i))
                for i in rows
                if (h := hashed[i]) is not None
            )
            self.tables.write_hashed(table.tables.source, inserts=inserts)
            return
        self.tables.write_hashed(
            table.tables.source,
            updates=((*h, first + i) for i in rows if (h := hashed[i]) is not None),
            deletes=dropped,
            left=left,
            left_table=table.tables.left,
        )


def _hash(
    group: HashGroup, batch: RowBatch, indices: list[int], sealer: Sealer
) -> tuple[dict[int, tuple[str, bytes, str | None] | None], dict[int, list[str]]]:
    """Normalize and hash row ``i`` of ``batch`` for each index: (payload, payload_fp, invalid) or None when
    the profile has no usable identifier; and each row's invalid values as ``kind:reason``."""
    hashed: dict[int, tuple[str, bytes, str | None] | None] = {}
    invalid_by_row: dict[int, list[str]] = {}
    for i in indices:
        profile = group.hasher(batch.raw(i))
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


def _chunks(batches: Iterable[RowBatch], size: int) -> Iterator[RowBatch]:
    """The batches merged into chunks of at least ``size`` rows (the last may be smaller)."""
    pending: list[RowBatch] = []
    count = 0
    for batch in batches:
        if not len(batch):
            continue
        pending.append(batch)
        count += len(batch)
        if count >= size:
            yield merge(pending)
            pending, count = [], 0
    if pending:
        yield merge(pending)
