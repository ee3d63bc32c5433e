"""Plan: stream an audience out of the source, normalize and hash it per platform, and diff it against
the last-synced state, in SQLite, so memory stays flat however large the audience.

For each sync target the diff yields adds, removes and identity changes (a member whose identifiers
changed: remove exactly the old hashes, add the new ones). The plan lives in a temporary table of the
state connection (never in the state file) until ``commit_plan`` merges it into the outbox; a dry run
simply never commits it.

Speed: a profile whose raw identifiers have not changed since the last sync (same fingerprint of the
raw values, kept in state) is not normalized or hashed again; ``source_load`` loads the rows and
hashes only new and changed profiles.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils
from audiencesync.connectors.registry import identity_platform
from audiencesync.state.db import atomic
from audiencesync.state.outbox import REJECTION_MAX_AGE_S
from audiencesync.state.sealed import sealer_for
from audiencesync.sync.config import SourceConfig, Target
from audiencesync.sync.source_load import (
    SOURCE_COLUMNS,
    HashGroup,
    SourceLoader,
    SourceTable,
    payload_fingerprint,
)
from audiencesync.sync.sources import SourceRow


def hasher_platform(target: Target) -> str:
    """Whose normalization rules a destination uses (a file destination follows its format)."""
    return identity_platform(target.destination)


@dataclass
class TargetPlan:
    """The plan for one audience on one destination, and the figures the report shows."""

    target: Target
    target_id: int | None
    state_version: int
    max_batch: int
    table: str
    """Temporary table holding the desired outbox for this target."""
    source_members: int = 0
    skipped_no_identifier: int = 0
    consent_denied: int = 0
    """Profiles left out because their ads consent is denied."""
    synced: int = 0
    adds: int = 0
    removes: int = 0
    identity_changes: int = 0
    refreshes: int = 0
    resends: int = 0
    """Adds of members not settled as synced (maybe applied, or in a batch the platform reported
    failures for only as a count), sent again while the source wants them."""
    held_back: int = 0
    """Changes not planned now: their member is in flight, or a rejection is backing off."""
    invalid: Counter[str] = field(default_factory=Counter)
    identifier_drops: dict[str, int] = field(default_factory=dict)
    """Identity changes that drop an identifier the member had, by identifier key."""
    breaker: str | None = None

    @property
    def key(self) -> str:
        return self.target.key

    @property
    def total_adds(self) -> int:
        return self.adds + self.identity_changes + self.refreshes + self.resends

    @property
    def total_removes(self) -> int:
        return self.removes + self.identity_changes

    @property
    def requests(self) -> int:
        """Requests the push needs under the platform's batch limit."""
        return math.ceil(self.total_adds / self.max_batch) + math.ceil(self.total_removes / self.max_batch)

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.key,
            "audience": self.target.audience.name,
            "destination": self.target.destination.name,
            "platform": self.target.destination.platform,
            "mode": self.target.sync.mode,
            "source_members": self.source_members,
            "synced": self.synced,
            "adds": self.adds,
            "removes": self.removes,
            "identity_changes": self.identity_changes,
            "refreshes": self.refreshes,
            "resends": self.resends,
            "held_back": self.held_back,
            "skipped_no_identifier": self.skipped_no_identifier,
            "consent_denied": self.consent_denied,
            "invalid": dict(sorted(self.invalid.items())),
            "max_batch": self.max_batch,
            "requests": self.requests,
            "breaker": self.breaker or "ok",
            "state_version": self.state_version,
        }


class Planner:
    """Diffs audiences against state. One planner per state connection; plans of one planner can be
    committed or discarded independently."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self._tables = 0
        self._src_tables: dict[str, str] = {}

    def _new_tables(self) -> tuple[str, str]:
        self._tables += 1
        src, desired = f"plan_src_{self._tables}", f"plan_desired_{self._tables}"
        conn = self.db.conn
        conn.execute(f"CREATE TEMP TABLE {src} ({SOURCE_COLUMNS})")
        conn.execute(
            f"CREATE TEMP TABLE {desired} (member_key BLOB NOT NULL, op TEXT NOT NULL, payload TEXT NOT NULL, "
            "payload_fp BLOB NOT NULL, raw_fp BLOB, invalid TEXT, consent INTEGER, source_at REAL, "
            "kind TEXT NOT NULL, PRIMARY KEY (member_key, op)) WITHOUT ROWID"
        )
        return src, desired

    def plan_audience(
        self,
        source: SourceConfig,
        rows: Iterable[SourceRow],
        targets: Sequence[tuple[Target, int | None, int, int, float | None]],
        *,
        allow_mass_remove: bool = False,
        now: float | None = None,
    ) -> list[TargetPlan]:
        """Plan every target of one audience from one pass over its rows.

        ``targets`` holds, per target: the target, its state id (None if never synced), its state
        version, the platform's max batch, and the age after which a member is re-uploaded (Google's
        membership lifespan) or None.
        """
        now = time.time() if now is None else now
        plans: list[TargetPlan] = []
        srcs: dict[str, str] = {}
        refresh: dict[str, float | None] = {}
        groups: dict[str, list[TargetPlan]] = {}
        for target, target_id, version, max_batch, refresh_after in targets:
            src, desired = self._new_tables()
            plan = TargetPlan(target, target_id, version, max_batch, desired)
            plans.append(plan)
            srcs[plan.key] = src
            refresh[plan.key] = refresh_after
            groups.setdefault(hasher_platform(target), []).append(plan)
        tables = {plan.key: SourceTable(srcs[plan.key], plan.target_id) for plan in plans}
        hash_groups = [
            HashGroup(platform, source, [tables[p.key] for p in members])
            for platform, members in groups.items()
        ]
        loader = SourceLoader(self.db, hash_groups)
        loader.load(rows)
        for plan in plans:
            plan.consent_denied = loader.consent_denied
            plan.skipped_no_identifier = tables[plan.key].skipped_no_identifier
            plan.invalid.update(tables[plan.key].invalid)
        for plan in plans:
            self._diff(plan, srcs[plan.key], refresh[plan.key], now)
            self._check_breaker(plan, allow_mass_remove)
        return plans

    def _diff(self, plan: TargetPlan, src: str, refresh_after: float | None, now: float) -> None:
        conn = self.db.conn
        desired = plan.table
        t = plan.target_id if plan.target_id is not None else -1
        plan.source_members = conn.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
        plan.synced = conn.execute("SELECT count(*) FROM members WHERE target_id = ?", [t]).fetchone()[0]
        # Invalid identifiers of members whose raw values did not change were counted when they were
        # hashed; they are read back from state rather than hashed again.
        for invalid, count in conn.execute(
            f"SELECT m.invalid, count(*) FROM {src} s JOIN members m ON m.target_id = ? "
            "AND m.member_key = s.member_key WHERE s.payload IS NULL AND m.invalid IS NOT NULL GROUP BY m.invalid",
            [t],
        ):
            for item in str(invalid).split(","):
                plan.invalid[item] += count

        # New members. In key order, so that the plan table (keyed by member) is appended to rather
        # than inserted into at random: several times faster for a first sync of millions.
        new_members = conn.execute(
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
        if plan.target.sync.mode == "mirror":  # add_only never removes, not even old identifiers
            conn.execute(
                f"INSERT INTO {desired} SELECT m.member_key, 'remove', m.payload, m.payload_fp, NULL, NULL, "
                f"s.consent, s.source_at, 'identity' FROM {src} s CROSS JOIN members m ON m.target_id = ? "
                "AND m.member_key = s.member_key WHERE s.payload IS NOT NULL AND s.payload_fp != m.payload_fp",
                [t],
            )
        # Members gone from the source. State only ever holds members this tool added, so mirror mode
        # can never remove someone it did not add. Every source row that is not new is a synced
        # member, so when those account for all synced members the scan is skipped (most ticks).
        if plan.target.sync.mode == "mirror" and plan.source_members - new_members < plan.synced:
            conn.execute(
                f"INSERT INTO {desired} SELECT m.member_key, 'remove', m.payload, m.payload_fp, NULL, NULL, "
                f"NULL, NULL, 'gone' FROM members m INDEXED BY members_fingerprints WHERE m.target_id = ? AND NOT EXISTS "
                f"(SELECT 1 FROM {src} s WHERE s.member_key = m.member_key)",
                [t],
            )
        # A remove whose identifiers another profile in the source still carries (two profiles, one
        # email) must not be sent: the platform would drop the person the other profile still wants.
        # Such members are forgotten from state without a request. A profile hashed this run carries
        # its new payload; one that was not carries the payload state holds for it.
        if conn.execute(f"SELECT 1 FROM {desired} WHERE op = 'remove' LIMIT 1").fetchone():
            conn.execute(
                f"UPDATE {desired} SET kind = 'shared' WHERE op = 'remove' AND (payload_fp IN "
                f"(SELECT s.payload_fp FROM {src} s WHERE s.payload IS NOT NULL) OR payload_fp IN "
                f"(SELECT m.payload_fp FROM members m INDEXED BY members_fingerprints CROSS JOIN {src} s "
                f"ON s.member_key = m.member_key "
                f"WHERE m.target_id = ? AND s.payload IS NULL AND m.payload_fp IN "
                f"(SELECT payload_fp FROM {desired} WHERE op = 'remove')))",
                [t],
            )
        # Re-upload members before the platform's membership lifespan drops them.
        if refresh_after is not None:
            conn.execute(
                f"INSERT OR IGNORE INTO {desired} SELECT m.member_key, 'add', m.payload, m.payload_fp, m.raw_fp, "
                f"m.invalid, s.consent, NULL, 'refresh' FROM {src} s JOIN members m ON m.target_id = ? "
                "AND m.member_key = s.member_key WHERE m.uploaded_at < ?",
                [t, now - refresh_after],
            )
        # Resend members whose last add or remove is unsettled (maybe applied after a lost answer, or
        # unverified after a failure count) while the source still wants their identifiers: an add is
        # idempotent, so a member already there is unchanged, and a maybe-applied remove is reversed.
        conn.execute(
            f"INSERT OR IGNORE INTO {desired} SELECT m.member_key, 'add', m.payload, m.payload_fp, m.raw_fp, "
            f"m.invalid, s.consent, s.source_at, 'resend' FROM {src} s JOIN members m ON m.target_id = ? "
            "AND m.member_key = s.member_key WHERE m.confirmation != 'synced' "
            "AND (s.payload IS NULL OR s.payload_fp = m.payload_fp)",
            [t],
        )
        # Hold back members with a change in flight (settled first, planned next run) and changes
        # whose rejection is still backing off or has been given up on.
        held = conn.execute(
            f"DELETE FROM {desired} WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.target_id = ? "
            f"AND o.member_key = {desired}.member_key AND o.status = 'in_flight') OR EXISTS "
            f"(SELECT 1 FROM rejections r WHERE r.target_id = ? AND r.member_key = {desired}.member_key "
            f"AND r.op = {desired}.op AND r.payload_fp = {desired}.payload_fp "
            "AND (r.next_retry_at > ? OR r.first_at < ?))",
            [t, t, now, now - REJECTION_MAX_AGE_S],
        ).rowcount
        plan.held_back = held
        counts = dict(
            conn.execute(f"SELECT kind || ':' || op, count(*) FROM {desired} GROUP BY kind, op").fetchall()
        )
        plan.adds = counts.get("new:add", 0)
        plan.removes = counts.get("gone:remove", 0)
        plan.identity_changes = max(counts.get("identity:add", 0), counts.get("identity:remove", 0))
        plan.refreshes = counts.get("refresh:add", 0)
        plan.resends = counts.get("resend:add", 0)
        if plan.identity_changes:
            plan.identifier_drops = self._identifier_drops(desired, t)
        self._src_tables[plan.key] = src

    def _identifier_drops(self, desired: str, target_id: int) -> dict[str, int]:
        """Identity changes that drop an identifier key the member had, counted by key: an export
        that blanks a column turns every member into such a change."""
        rows = self.db.conn.execute(
            f"SELECT j.key, count(*) FROM {desired} d JOIN members m ON m.target_id = ? "
            "AND m.member_key = d.member_key CROSS JOIN json_each(m.payload) j "
            "WHERE d.kind = 'identity' AND d.op = 'add' "
            "AND json_type(d.payload, '$.\"' || j.key || '\"') IS NULL GROUP BY j.key",
            [target_id],
        ).fetchall()
        return {str(k): int(n) for k, n in rows}

    @staticmethod
    def _check_breaker(plan: TargetPlan, allow_mass_remove: bool) -> None:
        if allow_mass_remove:
            return
        breaker = plan.target.sync.breaker
        # In every mode: re-uploading members without an identifier they had lowers the match rate
        # of the whole audience, and is what a source export with a blanked column looks like.
        if plan.identifier_drops and plan.synced:
            kind, dropped = max(plan.identifier_drops.items(), key=lambda kv: kv[1])
            if dropped > breaker.max_remove_share * plan.synced:
                plan.breaker = (
                    f"{dropped} of {plan.synced} synced members would lose their {kind} "
                    f"({dropped / plan.synced:.0%}, over max_remove_share {breaker.max_remove_share:.0%}); "
                    "check the source export"
                )
                return
        if plan.target.sync.mode != "mirror":
            return
        if plan.source_members == 0 and plan.synced > 0:
            plan.breaker = (
                f"the source returned no members; refusing to remove all {plan.synced} synced members"
            )
        elif plan.removes and plan.synced and plan.removes > breaker.max_remove_share * plan.synced:
            plan.breaker = (
                f"{plan.removes} removes are {plan.removes / plan.synced:.0%} of {plan.synced} synced members, "
                f"over max_remove_share {breaker.max_remove_share:.0%}"
            )
        elif breaker.max_remove_count is not None and plan.removes > breaker.max_remove_count:
            plan.breaker = f"{plan.removes} removes exceed max_remove_count {breaker.max_remove_count}"

    def load_plan(
        self, target: Target, target_id: int, version: int, max_batch: int, ops: Iterable[dict[str, Any]]
    ) -> TargetPlan:
        """A plan saved by ``sync --plan-out``, loaded back into a desired table."""
        _src, desired = self._new_tables()
        plan = TargetPlan(target, target_id, version, max_batch, desired)
        sealer = sealer_for(self.db.conn)
        self.db.conn.executemany(
            f"INSERT OR REPLACE INTO {desired} VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'saved')",
            (
                (
                    bytes.fromhex(op["k"]),
                    op["op"],
                    op["p"],
                    payload_fingerprint(sealer.open_json(op["p"])),
                    bytes.fromhex(op["raw"]) if op.get("raw") else None,
                    op.get("inv"),
                    op.get("c"),
                    op.get("s"),
                )
                for op in ops
            ),
        )
        for op, count in self.db.conn.execute(f"SELECT op, count(*) FROM {desired} GROUP BY op"):
            if op == "add":
                plan.adds = count
            else:
                plan.removes = count
        return plan

    def commit_plan(self, plan: TargetPlan, *, from_source: bool = True) -> None:
        """Merge the plan into the outbox, in one transaction. Queued changes that are still wanted keep
        their first-observed time (lag is measured from it); ones no longer wanted are dropped."""
        assert plan.target_id is not None, "a target is registered in state before its plan is committed"
        src = self._src_tables.get(plan.key) if from_source else None
        desired, t, now = plan.table, plan.target_id, time.time()
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
            if src is None:
                return
            # Raw values changed but normalize to the same hashes (say, an email's letter case): the
            # platform needs nothing; remember the new fingerprint so they are not hashed again.
            # Driven from the few rows hashed this run: a correlated IN over the plan table for every
            # member would make steady-state plans quadratic.
            conn.execute(
                f"UPDATE members SET raw_fp = (SELECT s.raw_fp FROM {src} s WHERE s.member_key = members.member_key), "
                f"invalid = (SELECT s.invalid FROM {src} s WHERE s.member_key = members.member_key) "
                f"WHERE target_id = ? AND member_key IN (SELECT member_key FROM {src} WHERE payload IS NOT NULL) "
                f"AND EXISTS (SELECT 1 FROM {src} s WHERE s.member_key = members.member_key "
                "AND s.payload_fp = members.payload_fp AND s.raw_fp != members.raw_fp)",
                [t],
            )

    def desired_rows(self, plan: TargetPlan) -> Iterator[tuple[Any, ...]]:
        """The planned changes as (member_key, op, payload, raw_fp, invalid, source_at, consent), for
        ``--plan-out``."""
        cursor = self.db.conn.execute(
            f"SELECT member_key, op, payload, raw_fp, invalid, source_at, consent FROM {plan.table} "
            "ORDER BY op, member_key"
        )
        while rows := cursor.fetchmany(10_000):
            yield from rows

    def discard(self, plan: TargetPlan) -> None:
        conn = self.db.conn
        conn.execute(f"DROP TABLE IF EXISTS temp.{plan.table}")
        src = self._src_tables.pop(plan.key, None)
        if src:
            conn.execute(f"DROP TABLE IF EXISTS temp.{src}")
