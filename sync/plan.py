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
from audiencesync.state.plan_tables import DiffCounts, DiffOptions, PlanTables, TargetTables
from audiencesync.state.sealed import sealer_for
from audiencesync.state.watermarks import Watermark, record_watermark
from audiencesync.sync.config import SourceConfig, Target
from audiencesync.sync.row_batches import RowBatch, batches_of
from audiencesync.sync.source_load import HashGroup, SourceLoader, SourceTable, payload_fingerprint
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
    tables: TargetTables
    """The plan's scratch tables; ``tables.desired`` holds the desired outbox for this target."""
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
    incremental: bool = False
    """Planned from the source's changed rows only (absence is not a remove)."""
    held_in_flight: int = 0
    changed_at_max: float | None = None
    """The latest source change time among the rows this plan read."""
    watermark: Watermark | None = None
    """What to record in state when the plan is committed, if it was planned with a watermark."""

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


TargetSpec = tuple[Target, int | None, int, int, float | None]
"""Per target: the target, its state id (None if never synced), its state version, the platform's
max batch, and the age after which a member is re-uploaded (Google's membership lifespan) or None."""


class Planner:
    """Diffs audiences against state. One planner per state connection; plans of one planner can be
    committed or discarded independently."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.tables = PlanTables(db)

    def plan_audience(
        self,
        source: SourceConfig,
        rows: Iterable[SourceRow | RowBatch],
        targets: Sequence[TargetSpec],
        *,
        allow_mass_remove: bool = False,
        now: float | None = None,
    ) -> list[TargetPlan]:
        """Plan every target of one audience from one pass over its rows."""
        return self.plan_audiences(source, rows, [targets], allow_mass_remove=allow_mass_remove, now=now)

    def plan_audiences(
        self,
        source: SourceConfig,
        rows: Iterable[SourceRow | RowBatch],
        audiences: Sequence[Sequence[TargetSpec]],
        *,
        incremental: bool = False,
        allow_mass_remove: bool = False,
        now: float | None = None,
    ) -> list[TargetPlan]:
        """Plan the targets of several audiences from one pass over ``rows``: the targets of
        ``audiences[i]`` take the rows whose ``member_of`` has bit ``1 << i`` set.

        ``incremental``: the rows are those changed since the targets' watermark, in an audience or
        not; a member whose changed row is not in its audience is removed, and a member with no row
        is unchanged (never removed)."""
        now = time.time() if now is None else now
        plans: list[TargetPlan] = []
        refresh: dict[str, float | None] = {}
        groups: dict[str, list[TargetPlan]] = {}
        tables: dict[str, SourceTable] = {}
        for index, targets in enumerate(audiences):
            for target, target_id, version, max_batch, refresh_after in targets:
                plan = TargetPlan(target, target_id, version, max_batch, self.tables.create())
                plan.incremental = incremental
                plans.append(plan)
                refresh[plan.key] = refresh_after
                tables[plan.key] = SourceTable(plan.tables, target_id, bit=1 << index)
                groups.setdefault(hasher_platform(target), []).append(plan)
        hash_groups = [
            HashGroup(platform, source, [tables[p.key] for p in members])
            for platform, members in groups.items()
        ]
        loader = SourceLoader(self.tables, hash_groups, sealer_for(self.db.conn), incremental=incremental)
        loader.load(batches_of(rows))
        for plan in plans:
            table = tables[plan.key]
            plan.consent_denied = table.consent_denied
            plan.skipped_no_identifier = table.skipped_no_identifier
            plan.invalid.update(table.invalid)
            plan.changed_at_max = loader.changed_at_max
        for plan in plans:
            after = refresh[plan.key]
            opts = DiffOptions(
                plan.target_id if plan.target_id is not None else -1,
                mirror=plan.target.sync.mode == "mirror",
                refresh_before=None if after is None else now - after,
                now=now,
                incremental=incremental,
            )
            self._name(plan, self.tables.diff(plan.tables, opts))
            self._check_breaker(plan, allow_mass_remove)
        return plans

    def _name(self, plan: TargetPlan, counts: DiffCounts) -> None:
        plan.source_members = counts.source_members
        plan.synced = counts.synced
        plan.invalid.update(counts.invalid)
        plan.held_back = counts.held_back
        plan.held_in_flight = counts.held_in_flight
        kinds = counts.by_kind
        plan.adds = kinds.get("new:add", 0)
        plan.removes = kinds.get("gone:remove", 0)
        plan.identity_changes = max(kinds.get("identity:add", 0), kinds.get("identity:remove", 0))
        plan.refreshes = kinds.get("refresh:add", 0)
        plan.resends = kinds.get("resend:add", 0)
        if plan.identity_changes:
            # An export that blanks a column turns every member into such a change.
            t = plan.target_id if plan.target_id is not None else -1
            plan.identifier_drops = self.tables.identifier_drops(plan.tables.desired, t)

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
        if plan.source_members == 0 and plan.synced > 0 and not plan.incremental:
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
        plan = TargetPlan(target, target_id, version, max_batch, self.tables.create())
        sealer = sealer_for(self.db.conn)
        counts = self.tables.load_saved(
            plan.tables.desired,
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
        plan.adds = counts.get("add", 0)
        plan.removes = counts.get("remove", 0)
        return plan

    def commit_plan(self, plan: TargetPlan, *, from_source: bool = True) -> None:
        """Merge the plan into the outbox, in one transaction. Queued changes that are still wanted keep
        their first-observed time (lag is measured from it); ones no longer wanted are dropped.

        With a ``watermark`` set on the plan (see ``audiencesync.sync.incremental``), the target's
        watermark advances in the same transaction, so it moves only when the changes are queued."""
        assert plan.target_id is not None, "a target is registered in state before its plan is committed"
        mark = plan.watermark if from_source else None
        t = plan.target_id
        self.tables.commit(
            plan.tables,
            t,
            time.time(),
            from_source=from_source,
            after=None if mark is None else (lambda conn: record_watermark(conn, t, mark)),
        )

    def foreign_removes(self, plan: TargetPlan) -> int:
        """Removes of a saved plan that match no member state holds nor an add it may have sent."""
        assert plan.target_id is not None
        return self.tables.foreign_removes(plan.tables.desired, plan.target_id)

    def desired_rows(self, plan: TargetPlan) -> Iterator[tuple[Any, ...]]:
        """The planned changes as (member_key, op, payload, raw_fp, invalid, source_at, consent), for
        ``--plan-out``."""
        return self.tables.desired_rows(plan.tables.desired)

    def discard(self, plan: TargetPlan) -> None:
        self.tables.drop(plan.tables)
