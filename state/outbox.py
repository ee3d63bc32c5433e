"""The outbox: planned changes that the platform has not confirmed yet, and what happens to state
when it answers.

A change leaves the outbox only when the platform confirmed it (membership updated and a lag record
written, in the same transaction) or rejected it (moved to the rejection log with a backoff). Applying
a batch's result is one transaction, so a crash between the platform's answer and the commit only
means the batch is sent again, which every platform treats as a no-op.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlite_utils
from audiencesync.connectors.contract import Change, HandleStatus, PushResult
from audiencesync.state.db import atomic
from audiencesync.state.outbox_values import ChangeOp, Confirmation, OutboxStatus
from audiencesync.state.sealed import PREFIX, sealer_for

# A rejected change is tried again on each of the next runs until it was refused
# REJECTION_NEXT_RUN_ATTEMPTS times (platforms do not say which per-row reasons are transient, and a
# row refused once or twice may well be), then after 1 h, 2 h, 4 h ... capped at a day, and given up on
# once it has been failing for a week (until the member's identifiers change: a new change).
REJECTION_NEXT_RUN_ATTEMPTS = 3
REJECTION_BACKOFF_S = 3600.0
REJECTION_BACKOFF_CAP_S = 86_400.0
REJECTION_MAX_AGE_S = 7 * 86_400.0


@dataclass(frozen=True)
class QueuedBatch:
    op: str
    changes: list[Change]


# Served batches remembered for range-scoped confirmation: the runner reads one ahead, so two suffice.
_SERVED_KEPT = 4


@dataclass(frozen=True)
class _Scope:
    """Which outbox rows one confirmation covers: a WHERE fragment (columns prefixed with ``{p}``) and
    its parameters."""

    template: str
    params: list[object]

    @property
    def where(self) -> str:
        """The fragment for the outbox aliased as ``o``."""
        return self.template.format(p="o.")

    @property
    def bare(self) -> str:
        """The fragment for the outbox unaliased (a DELETE's own table)."""
        return self.template.format(p="")


def _keys_table(conn: sqlite3.Connection, keys: Sequence[bytes]) -> None:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS batch_keys (member_key BLOB PRIMARY KEY) WITHOUT ROWID")
    conn.execute("DELETE FROM batch_keys")
    conn.executemany("INSERT OR IGNORE INTO batch_keys VALUES (?)", [(k,) for k in keys])


class OutboxStore:
    """Reads batches out of the outbox and applies the platform's answers to state."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self._served: dict[tuple[int, str, bytes], list[bytes]] = {}
        """Keys of the batches ``batches`` served lately, by (target, op, first key), in key order."""

    def queued_count(self, target_id: int, op: str) -> int:
        """Changes of ``op`` waiting to be sent."""
        row = self.db.execute(
            f"SELECT count(*) FROM outbox WHERE target_id = ? AND op = ? AND status = '{OutboxStatus.QUEUED}'",
            [target_id, op],
        ).fetchone()
        return int(row[0])

    def batches(self, target_id: int, op: str, size: int) -> Iterator[QueuedBatch]:
        """Queued changes of ``op`` in batches of at most ``size``, in member-key order. Keyset paging,
        so a change the platform asked to retry is not served twice in one run."""
        after = b""
        while True:
            rows = self.db.execute(
                "SELECT member_key, payload, consent FROM outbox "
                f"WHERE target_id = ? AND op = ? AND status = '{OutboxStatus.QUEUED}' AND member_key > ? "
                "ORDER BY member_key LIMIT ?",
                [target_id, op, after, size],
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            # One json.loads for the whole batch: per row, the call's own overhead costs more than the
            # parsing of a ~150-byte object (profiled: a third of the outbox read at 10,000 rows).
            payloads = json.loads("[" + ",".join([r[1] for r in rows]) + "]")
            if any(PREFIX in r[1] for r in rows):
                sealer = sealer_for(self.db.conn)
                payloads = [sealer.open_payload(p) for p in payloads]
            keys = [r[0] for r in rows]
            self._remember_served(target_id, op, keys)
            yield QueuedBatch(
                op,
                [
                    Change(r[0], p, None if r[2] is None else bool(r[2]))
                    for r, p in zip(rows, payloads, strict=True)
                ],
            )

    def _remember_served(self, target_id: int, op: str, keys: list[bytes]) -> None:
        # The runner reads one batch ahead, so a few served batches are kept; they are only a hint for
        # ``_scope`` and are checked against the outbox before use.
        self._served[(target_id, op, keys[0])] = keys
        while len(self._served) > _SERVED_KEPT:
            del self._served[next(iter(self._served))]

    def apply_result(self, target_id: int, op: str, result: PushResult, run_id: int, sent_at: float) -> None:
        """Record what the platform said about one batch, in one transaction."""
        now = time.time()
        with atomic(self.db) as conn:
            if result.confirmed:
                scope = self._scope(conn, target_id, op, result.confirmed)
                self._confirm(conn, target_id, op, scope, run_id, sent_at, now)
            for handle, keys in result.pending.items():
                scope = self._scope(conn, target_id, op, keys)
                conn.execute(
                    f"UPDATE outbox SET status = '{OutboxStatus.IN_FLIGHT}', handle = ?, sent_at = ?, wire_at = NULL "
                    f"WHERE {scope.bare}",
                    [handle, sent_at, *scope.params],
                )
            if result.rejected:
                self._reject(conn, target_id, op, result.rejected, now)
            if result.unverified:
                _keys_table(conn, result.unverified)
                self._settle_unverified(conn, target_id, op, result.reported_failures, run_id, now)
            if result.retry:
                # The platform answered (and asked for a resend): nothing of these was applied.
                _keys_table(conn, result.retry)
                conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, wire_at = NULL "
                    "WHERE target_id = ? AND op = ? AND member_key IN (SELECT member_key FROM batch_keys)",
                    [target_id, op],
                )

    def mark_on_wire(
        self, target_id: int, op: str, keys: Sequence[bytes], session_id: int | None, batch_seq: int | None
    ) -> None:
        """Write-ahead: record ``keys`` as on the wire (with Meta's session id and batch_seq) and commit,
        before the request is sent. Until its answer is recorded, such a change is maybe applied."""
        now = time.time()
        with atomic(self.db) as conn:
            _keys_table(conn, keys)
            conn.execute(
                "UPDATE outbox SET wire_at = ?, wire_session = ?, wire_seq = ? WHERE target_id = ? AND op = ? "
                f"AND status = '{OutboxStatus.QUEUED}' AND member_key IN (SELECT member_key FROM batch_keys)",
                [now, session_id, batch_seq, target_id, op],
            )

    def recover_unanswered(self, target_id: int) -> int:
        """Turn every change sent without a recorded answer into a *maybe applied* member, in one
        transaction, and return how many there were. Call it only while holding the target's lease (no
        other process has a request on the wire for it).

        A maybe-applied add is possibly on the platform: it joins ``members`` as ``maybe``, so the plan
        resends it while the source wants it and removes it (mirror mode owns it) once the profile
        leaves. A maybe-applied remove keeps its member as ``maybe``: resent if the profile is still
        gone, reversed by an add if it came back. Resending either is safe because adds and removes are
        idempotent on every platform: Meta's /users add and remove match the exact hashed rows
        (developers.facebook.com/docs/marketing-api/reference/custom-audience/users), Google's ingest
        and remove of the same UserData
        (developers.google.com/data-manager/api/reference/rest/v1/audienceMembers), TikTok's
        segment/mapping add and delete (documented by peers only: Segment's
        tiktok-audiences/api/index.ts; docs/setup-tiktok.md "Assumptions")."""
        now = time.time()
        with atomic(self.db) as conn:
            (count,) = conn.execute(
                f"SELECT count(*) FROM outbox WHERE target_id = ? AND status = '{OutboxStatus.QUEUED}' AND wire_at IS NOT NULL",
                [target_id],
            ).fetchone()
            if not count:
                return 0
            conn.execute(
                "INSERT INTO members (target_id, member_key, raw_fp, payload_fp, payload, invalid, added_run, "
                " added_at, uploaded_at, confirmation) "
                "SELECT o.target_id, o.member_key, coalesce(o.raw_fp, x''), o.payload_fp, o.payload, o.invalid, "
                f" NULL, ?, ?, '{Confirmation.MAYBE}' FROM outbox o "
                f"WHERE o.target_id = ? AND o.op = '{ChangeOp.ADD}' AND o.status = '{OutboxStatus.QUEUED}' AND o.wire_at IS NOT NULL "
                "ON CONFLICT (target_id, member_key) DO UPDATE SET "
                " confirmation = CASE WHEN members.payload_fp = excluded.payload_fp THEN members.confirmation "
                f"  ELSE '{Confirmation.MAYBE}' END, "
                " raw_fp = excluded.raw_fp, payload_fp = excluded.payload_fp, payload = excluded.payload, "
                " invalid = excluded.invalid",
                [now, now, target_id],
            )
            conn.execute(
                f"UPDATE members SET confirmation = '{Confirmation.MAYBE}' WHERE target_id = ? AND EXISTS "
                "(SELECT 1 FROM outbox o WHERE o.target_id = members.target_id AND o.member_key = members.member_key "
                f" AND o.op = '{ChangeOp.REMOVE}' AND o.status = '{OutboxStatus.QUEUED}' AND o.wire_at IS NOT NULL "
                " AND o.payload_fp = members.payload_fp)",
                [target_id],
            )
            conn.execute(
                f"DELETE FROM outbox WHERE target_id = ? AND status = '{OutboxStatus.QUEUED}' AND wire_at IS NOT NULL",
                [target_id],
            )
            conn.execute("UPDATE targets SET state_version = state_version + 1 WHERE id = ?", [target_id])
        return int(count)

    def unsettled_members(self, target_id: int) -> dict[str, int]:
        """Members not settled as synced, by confirmation state (``maybe``, ``unverified``)."""
        return {
            str(state): int(n)
            for state, n in self.db.execute(
                f"SELECT confirmation, count(*) FROM members WHERE target_id = ? AND confirmation != '{Confirmation.SYNCED}' "
                "GROUP BY confirmation",
                [target_id],
            ).fetchall()
        }

    def _settle_unverified(
        self, conn: sqlite3.Connection, target_id: int, op: str, failures: int, run_id: int, now: float
    ) -> None:
        """The rows in ``batch_keys`` went out in a batch the platform reported ``failures`` failures
        for without naming them. An add joins members as ``unverified`` (possibly on the platform); a
        remove keeps its member as ``unverified`` (possibly still there). Either way the change leaves
        the outbox and the next plan resends it while the source still asks for it."""
        if op == ChangeOp.ADD:
            conn.execute(
                "INSERT INTO members (target_id, member_key, raw_fp, payload_fp, payload, invalid, added_run, "
                " added_at, uploaded_at, confirmation, reported_failures) "
                "SELECT o.target_id, o.member_key, coalesce(o.raw_fp, x''), o.payload_fp, o.payload, o.invalid, "
                f" ?, ?, ?, '{Confirmation.UNVERIFIED}', ? FROM outbox o "
                f"WHERE o.target_id = ? AND o.op = '{ChangeOp.ADD}' AND o.member_key IN (SELECT member_key FROM batch_keys) "
                f"ON CONFLICT (target_id, member_key) DO UPDATE SET confirmation = '{Confirmation.UNVERIFIED}', "
                " reported_failures = excluded.reported_failures, raw_fp = excluded.raw_fp, "
                " payload_fp = excluded.payload_fp, payload = excluded.payload, invalid = excluded.invalid",
                [run_id, now, now, failures, target_id],
            )
        else:
            conn.execute(
                f"UPDATE members SET confirmation = '{Confirmation.UNVERIFIED}', reported_failures = ? WHERE target_id = ? "
                "AND member_key IN (SELECT member_key FROM batch_keys)",
                [failures, target_id],
            )
        conn.execute(
            "DELETE FROM outbox WHERE target_id = ? AND op = ? AND member_key IN (SELECT member_key FROM batch_keys)",
            [target_id, op],
        )
        conn.execute("UPDATE targets SET state_version = state_version + 1 WHERE id = ?", [target_id])

    def in_flight_handles(self, target_id: int) -> list[str]:
        """The platform handles (jobs, requests) changes of the target are in flight under."""
        rows = self.db.execute(
            f"SELECT DISTINCT handle FROM outbox WHERE target_id = ? AND status = '{OutboxStatus.IN_FLIGHT}' ORDER BY handle",
            [target_id],
        ).fetchall()
        return [r[0] for r in rows]

    def apply_handle(self, target_id: int, handle: str, status: HandleStatus, run_id: int) -> int:
        """Settle every change sent under ``handle``; returns how many were settled."""
        if status.state == "pending":
            return 0
        now = time.time()
        with atomic(self.db) as conn:
            rows = conn.execute(
                f"SELECT op, member_key FROM outbox WHERE target_id = ? AND handle = ? AND status = '{OutboxStatus.IN_FLIGHT}'",
                [target_id, handle],
            ).fetchall()
            if status.state == "confirmed" and status.rejected_count:
                # Google's request status counts errors per destination without naming members
                # (PARTIAL_SUCCESS, google-ads-datamanager request_status_per_destination.py): none of
                # them can be called synced.
                for op in (ChangeOp.REMOVE, ChangeOp.ADD):
                    keys = [r[1] for r in rows if r[0] == op]
                    if keys:
                        _keys_table(conn, keys)
                        self._settle_unverified(conn, target_id, op, status.rejected_count, run_id, now)
            elif status.state == "confirmed":
                for op in (ChangeOp.REMOVE, ChangeOp.ADD):
                    if any(r[0] == op for r in rows):
                        # The handle names exactly its rows (and has an index): no list of keys needed.
                        scope = _Scope(
                            f"{{p}}target_id = ? AND {{p}}handle = ? AND {{p}}status = '{OutboxStatus.IN_FLIGHT}' AND {{p}}op = ?",
                            [target_id, handle, op],
                        )
                        self._confirm(conn, target_id, op, scope, run_id, None, now)
            else:
                conn.execute(
                    f"UPDATE outbox SET status = '{OutboxStatus.QUEUED}', handle = NULL, attempts = attempts + 1 "
                    "WHERE target_id = ? AND handle = ?",
                    [target_id, handle],
                )
        return len(rows)

    def _scope(self, conn: sqlite3.Connection, target_id: int, op: str, keys: Sequence[bytes]) -> _Scope:
        """The outbox rows of ``op`` and ``keys``. When ``keys`` are exactly a batch ``batches`` served,
        and the outbox still holds exactly that many queued rows of ``op`` between its first and last
        key, they are those rows: a key-range scan then replaces loading the keys into a temporary
        table and probing the outbox once per key in each statement (profiled: a third of
        ``apply_result``)."""
        served = self._served.pop((target_id, op, keys[0]), None) if keys else None
        if served is not None and (served == keys or sorted(set(keys)) == served):
            in_range = _Scope(
                f"{{p}}target_id = ? AND {{p}}op = ? AND {{p}}status = '{OutboxStatus.QUEUED}' AND {{p}}member_key BETWEEN ? AND ?",
                [target_id, op, served[0], served[-1]],
            )
            (count,) = conn.execute(
                f"SELECT count(*) FROM outbox o WHERE {in_range.where}", in_range.params
            ).fetchone()
            if count == len(served):
                return in_range
        _keys_table(conn, keys)
        return _Scope(
            "{p}target_id = ? AND {p}op = ? AND {p}member_key IN (SELECT member_key FROM batch_keys)",
            [target_id, op],
        )

    def _confirm(
        self,
        conn: sqlite3.Connection,
        target_id: int,
        op: str,
        scope: _Scope,
        run_id: int,
        sent_at: float | None,
        now: float,
    ) -> None:
        """Confirm the outbox rows of ``op`` in ``scope``: membership, lag records, old rejections."""
        if op == ChangeOp.ADD:
            # An upsert rather than INSERT OR REPLACE over a join with members: one seek per row instead
            # of two. A member whose identifiers did not change keeps when it was first added.
            conn.execute(
                "INSERT INTO members "
                "(target_id, member_key, raw_fp, payload_fp, payload, invalid, added_run, added_at, uploaded_at, "
                " confirmation, reported_failures) "
                "SELECT o.target_id, o.member_key, coalesce(o.raw_fp, x''), o.payload_fp, o.payload, o.invalid, "
                f" ?, ?, ?, '{Confirmation.SYNCED}', NULL "
                f"FROM outbox o WHERE {scope.where} "
                "ON CONFLICT (target_id, member_key) DO UPDATE SET "
                " added_run = coalesce(CASE WHEN members.payload_fp = excluded.payload_fp THEN members.added_run END,"
                "  excluded.added_run), "
                " added_at = coalesce(CASE WHEN members.payload_fp = excluded.payload_fp THEN members.added_at END,"
                "  excluded.added_at), "
                " raw_fp = excluded.raw_fp, payload_fp = excluded.payload_fp, payload = excluded.payload, "
                " invalid = excluded.invalid, uploaded_at = excluded.uploaded_at, "
                f" confirmation = '{Confirmation.SYNCED}', reported_failures = NULL",
                [run_id, now, now, *scope.params],
            )
        else:
            # Only the exact identifiers this remove carried: if an add of new identifiers for the
            # same member was confirmed first, the member stays.
            conn.execute(
                "DELETE FROM members WHERE target_id = ? "
                f"AND member_key IN (SELECT o.member_key FROM outbox o WHERE {scope.where}) "
                "AND payload_fp = (SELECT o.payload_fp FROM outbox o WHERE o.target_id = members.target_id "
                f" AND o.member_key = members.member_key AND o.op = '{ChangeOp.REMOVE}')",
                [target_id, *scope.params],
            )
        conn.execute(
            "INSERT INTO lag (target_id, op, source_at, observed_at, sent_at, confirmed_at) "
            f"SELECT o.target_id, o.op, o.source_at, o.observed_at, coalesce(o.sent_at, ?), ? FROM outbox o "
            f"WHERE {scope.where}",
            [sent_at if sent_at is not None else now, now, *scope.params],
        )
        has_rejections = conn.execute(
            "SELECT 1 FROM rejections WHERE target_id = ? AND op = ? LIMIT 1", [target_id, op]
        ).fetchone()
        if has_rejections:
            conn.execute(
                "DELETE FROM rejections WHERE target_id = ? AND op = ? "
                f"AND member_key IN (SELECT o.member_key FROM outbox o WHERE {scope.where})",
                [target_id, op, *scope.params],
            )
        conn.execute(f"DELETE FROM outbox WHERE {scope.bare}", scope.params)
        conn.execute("UPDATE targets SET state_version = state_version + 1 WHERE id = ?", [target_id])

    def _reject(
        self, conn: sqlite3.Connection, target_id: int, op: str, rejected: dict[bytes, str], now: float
    ) -> None:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS batch_rejects (member_key BLOB PRIMARY KEY, reason TEXT) WITHOUT ROWID"
        )
        conn.execute("DELETE FROM batch_rejects")
        conn.executemany(
            "INSERT OR REPLACE INTO batch_rejects VALUES (?, ?)", [(k, r[:200]) for k, r in rejected.items()]
        )
        # The backoff restarts when the identifiers changed since the last rejection: that is a new change.
        conn.execute(
            "INSERT OR REPLACE INTO rejections "
            "(target_id, member_key, op, payload_fp, reason, first_at, last_at, attempts, next_retry_at) "
            "SELECT o.target_id, o.member_key, o.op, o.payload_fp, b.reason, "
            " CASE WHEN r.payload_fp = o.payload_fp THEN r.first_at ELSE :now END, :now, "
            " CASE WHEN r.payload_fp = o.payload_fp THEN r.attempts + 1 ELSE 1 END, "
            " CASE WHEN r.payload_fp = o.payload_fp AND r.attempts + 1 >= :free THEN"
            "  :now + min(:base * (1 << min(r.attempts + 1 - :free, 20)), :cap) ELSE :now END "
            "FROM outbox o JOIN batch_rejects b ON b.member_key = o.member_key "
            "LEFT JOIN rejections r ON r.target_id = o.target_id AND r.member_key = o.member_key AND r.op = o.op "
            "WHERE o.target_id = :target AND o.op = :op",
            {
                "now": now,
                "base": REJECTION_BACKOFF_S,
                "cap": REJECTION_BACKOFF_CAP_S,
                "free": REJECTION_NEXT_RUN_ATTEMPTS,
                "target": target_id,
                "op": op,
            },
        )
        conn.execute(
            "DELETE FROM outbox WHERE target_id = ? AND op = ? "
            "AND member_key IN (SELECT member_key FROM batch_rejects)",
            [target_id, op],
        )


def paired_member_keys(db: sqlite_utils.Database, target_id: int) -> set[bytes]:
    """Members with both a remove and an add in the outbox: identity changes (old identifiers out, new
    ones in). Counts treat each as one change, counted when its add is confirmed."""
    rows = db.execute(
        "SELECT a.member_key FROM outbox a JOIN outbox r ON r.target_id = a.target_id "
        f"AND r.member_key = a.member_key AND r.op = '{ChangeOp.REMOVE}' WHERE a.target_id = ? AND a.op = '{ChangeOp.ADD}'",
        [target_id],
    ).fetchall()
    return {bytes(r[0]) for r in rows}


def handle_members(db: sqlite_utils.Database, target_id: int, handle: str) -> list[tuple[str, bytes]]:
    """(op, member_key) of every change in flight under ``handle``."""
    rows = db.execute(
        f"SELECT op, member_key FROM outbox WHERE target_id = ? AND handle = ? AND status = '{OutboxStatus.IN_FLIGHT}'",
        [target_id, handle],
    ).fetchall()
    return [(str(r[0]), bytes(r[1])) for r in rows]
