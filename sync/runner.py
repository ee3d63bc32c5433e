"""The runner: for each sync target, plan, push the outbox through the connector, follow pending
work, read the platform's status back, and record the run.

Data flows one way: source -> normalize and hash -> diff against state -> outbox -> connector ->
confirmation back into state -> report. A change leaves the outbox only when the platform confirmed
or rejected it, so stopping at any point (a crash, SIGTERM, a platform outage) loses nothing: the next
run sends what is left.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from audiencesync.connectors.contract import AudienceSpec, Capabilities, Connector, PushResult, SessionInfo
from audiencesync.connectors.errors import ConnectorError, FatalError, TransientError
from audiencesync.connectors.registry import build_connector
from audiencesync.state.db import describe_sqlite_error
from audiencesync.state.lease import Lease, LeaseBusy, acquire, default_wait
from audiencesync.state.outbox import OutboxStore, QueuedBatch, handle_members, paired_member_keys
from audiencesync.state.store import StateStore
from audiencesync.sync.config import Config, Target
from audiencesync.sync.demo.emulation import unreachable_emulator
from audiencesync.sync.errors import InputError, SourceError, StaleStateError
from audiencesync.sync.identity import ProfileHasher
from audiencesync.sync.incremental import plan_scan
from audiencesync.sync.lag import record_read_back
from audiencesync.sync.plan import Planner, TargetPlan, TargetSpec, hasher_platform
from audiencesync.sync.plan_file import PlanWriter, read_plan_file
from audiencesync.sync.progress import ProgressEvent, ProgressSink, no_progress
from audiencesync.sync.run_status import RunStatus
from audiencesync.sync.source_check import check_source
from audiencesync.sync.source_scan import scan_groups

log = logging.getLogger("audiencesync.runner")

T = TypeVar("T")


@dataclass
class PushOutcome:
    """One run's counts, the one definition that logs, ``runs``, ``/metrics`` and the report show.

    ``confirmed`` is every change the platform confirmed in this run, whether at once (Meta, TikTok)
    or by a followed job or request that succeeded (Google); an identity change (old identifiers
    out, new ones in) counts once, when its add is confirmed."""

    confirmed: int = 0
    pending: int = 0
    """Sent in this run and still awaiting the platform at its end (a Google job or request not yet
    settled): confirmed + pending + rejected is what this run had accepted or refused."""
    rejected: int = 0
    retry: int = 0
    requests: int = 0
    settled: int = 0
    """Of ``confirmed`` and rejected: in-flight changes (this run's or earlier ones') that a followed
    job settled during this run."""
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    unverified: int = 0
    """Members sent in batches the platform reported failures for only as counts: at risk, not synced."""


@dataclass
class TargetResult:
    """What happened to one target in one run: the plan's figures and the push's outcome."""

    plan: TargetPlan
    status: RunStatus = RunStatus.PLANNED
    push: PushOutcome = field(default_factory=PushOutcome)
    error: str | None = None
    audience_id: str | None = None
    platform_size: tuple[int | None, int | None] | None = None
    at_risk: dict[str, int] = field(default_factory=dict)
    """After the push: members not settled as synced, by state (``unverified``: the platform reported
    failures in their batch only as a count; ``maybe``: sent, answer never recorded)."""
    notice: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.plan.as_dict()
        out.update(
            breaker_check=breaker_check(self.plan),
            status=self.status,
            error=self.error,
            at_risk=self.at_risk,
            notice=self.notice,
            audience_id=self.audience_id,
            push={
                "confirmed": self.push.confirmed,
                "pending": self.push.pending,
                "rejected": self.push.rejected,
                "retry": self.push.retry,
                "requests": self.push.requests,
                "settled": self.push.settled,
                "rejection_reasons": self.push.rejection_reasons,
                "unverified": self.push.unverified,
            },
        )
        return out


@dataclass(frozen=True)
class _SentBatch:
    batch: QueuedBatch
    session: SessionInfo | None
    last: bool
    sent_at: float
    future: Future[PushResult]


@dataclass
class RunOptions:
    dry_run: bool = False
    only: str | None = None
    targets: tuple[str, ...] | None = None
    """Exactly these target keys (the demo and the daemon use it); None means every target."""
    allow_mass_remove: bool = False
    trigger: str = "cli"
    plan_out: Path | None = None
    should_stop: Callable[[], bool] = lambda: False
    """Checked between batches: SIGTERM sets it, and the runner stops after the batch in flight."""
    connector_factory: Callable[[Target], Connector] | None = None
    progress: ProgressSink = no_progress
    """Told how planning and pushing go (rows read, changes planned, members sent, requests)."""
    lease_wait: float | None = None
    """Seconds to wait for a target another process is pushing (None: $AUDIENCE_SYNC_LEASE_WAIT_SECONDS
    or 60); then the target is skipped with status ``busy``."""


def _with_lookahead(items: Iterator[T]) -> Iterator[tuple[T, bool]]:
    """Yield (item, is_last)."""
    try:
        current = next(items)
    except StopIteration:
        return
    for following in items:
        yield current, False
        current = following
    yield current, True


class SyncRunner:
    """Runs every (or one) sync target of a config against a state file."""

    def __init__(self, config: Config, store: StateStore, options: RunOptions) -> None:
        self.config = config
        self.store = store
        self.outbox = OutboxStore(store.db)
        self.options = options
        self.planner = Planner(store.db)
        self._connectors: dict[str, Connector] = {}
        self._lease: Lease | None = None
        self._identity_keys: set[bytes] = set()
        self._run_pending: dict[str, int] = {}
        """Handles this push left pending, with how many changes each carries."""
        """Members of the target being pushed whose change is an identity change (see PushOutcome)."""
        self._settled_early: dict[str, int] = {}
        """In-flight changes of earlier runs settled before a target's plan was committed."""

    # --- public -------------------------------------------------------------------------------
    def run(self) -> list[TargetResult]:
        """Plan (and unless dry-run, push) every selected target; one pass over the source per audience.
        Every connector built for it is closed when it ends, however it ends."""
        try:
            return self._run()
        finally:
            self._close_connectors()

    def apply_plan(self, path: Path) -> list[TargetResult]:
        """Push exactly the plan saved in ``path``; refuse it if state moved on since it was made.
        Every connector built for it is closed when it ends, however it ends."""
        try:
            return self._apply_plan(path)
        finally:
            self._close_connectors()

    def _close_connectors(self) -> None:
        built, self._connectors = list(self._connectors.values()), {}
        close_connectors(built)

    # --- runs ----------------------------------------------------------------------------------
    def _run(self) -> list[TargetResult]:
        targets = self.config.targets(self.options.only)
        if self.options.targets is not None:
            targets = [t for t in targets if t.key in self.options.targets]
        if not targets:
            raise InputError(
                f"--only {self.options.only}: no sync target matches (check audience or destination names)"
            )
        by_audience: dict[str, list[Target]] = defaultdict(list)
        for target in targets:
            by_audience[target.audience.name].append(target)
        # Never plan blind: a misnamed column or a consent value of unknown meaning stops the run
        # before anything is planned. One check for every audience of the run.
        report = check_source(self.config, [t[0].audience for t in by_audience.values()])
        if not report.ok:
            if len(report.errors) == 1:
                # Each problem already names its place (file, key path or column): one line.
                raise InputError(report.errors[0])
            raise SourceError(
                str(self.config.source.path),
                f"the source check found {len(report.errors)} problems:\n  " + "\n  ".join(report.errors),
            )
        for warning in report.warnings:
            log.warning("source check", extra={"warning": warning})
        # Plan everything before pushing anything: bad input in any audience (a SQL error, an
        # unreadable row) stops the run before a single request is sent or a row of state written.
        plans: list[TargetPlan] = []
        plan_file = self._open_plan_file()
        try:
            for plan in self._plan_all(list(by_audience.values())):
                log.debug(
                    "planned",
                    extra={
                        "target": plan.key,
                        "source_members": plan.source_members,
                        "synced": plan.synced,
                        "adds": plan.adds,
                        "removes": plan.removes,
                        "identity_changes": plan.identity_changes,
                        "breaker": plan.breaker or "ok",
                    },
                )
                if plan_file is not None:
                    self._write_plan(plan_file, plan)
                plans.append(plan)
        except BaseException:
            if plan_file is not None:
                plan_file.abort()
            raise
        if plan_file is not None:
            plan_file.close()
        results: list[TargetResult] = []
        for plan in plans:
            if self.options.should_stop() and not self.options.dry_run:
                # Stop requested before this target began: nothing of it is written.
                results.append(TargetResult(plan, RunStatus.STOPPED, error="stopped before it began"))
            else:
                results.append(self._execute(plan))
            self.planner.discard(plan)
        return results

    def _apply_plan(self, path: Path) -> list[TargetResult]:
        sections = read_plan_file(path, self.config.path)
        targets = {t.key: t for t in self.config.targets()}
        results: list[TargetResult] = []
        for header, ops in sections:
            key = str(header["target"])
            if key not in targets:
                raise InputError(f"{path}: the plan's target {key} is not in the config")
            target = targets[key]
            row = self.store.find_target(key)
            current = row.state_version if row else 0
            if current != header["state_version"]:
                raise StaleStateError(
                    f"{path}: state for {key} has moved on since the plan was made "
                    f"(state version {current}, plan made at {header['state_version']}); plan again"
                )
            row = self.store.ensure_target(
                key, target.audience.name, target.destination.name, target.destination.platform
            )
            plan = self.planner.load_plan(target, row.id, row.state_version, int(header["max_batch"]), ops)
            self._refuse_foreign_removes(path, plan)
            results.append(self._leased_push(plan, from_source=False))
        return results

    # --- planning ------------------------------------------------------------------------------
    def _capabilities(self, target: Target) -> Capabilities:
        return self._connector(target).capabilities()

    def _connector(self, target: Target) -> Connector:
        name = target.destination.name
        if name not in self._connectors:
            factory = self.options.connector_factory
            self._connectors[name] = factory(target) if factory else build_connector(target.destination)
        return self._connectors[name]

    def _refresh_after(self, target: Target) -> float | None:
        refresh = getattr(self._connector(target), "refresh_due_seconds", None)
        return refresh() if callable(refresh) else None

    def _plan_audience(self, targets: list[Target]) -> list[TargetPlan]:
        return self._plan_scan([targets])

    def _plan_all(self, by_audience: list[list[Target]]) -> Iterator[TargetPlan]:
        """Plan every audience, one scan of the source per group of audiences it can serve."""
        targets_of = {targets[0].audience.name: targets for targets in by_audience}
        planned: dict[str, TargetPlan] = {}
        for group in scan_groups(self.config.source, [targets[0].audience for targets in by_audience]):
            planned.update((p.key, p) for p in self._plan_scan([targets_of[a.name] for a in group]))
        # In the config's order, as when each audience was read alone.
        yield from (planned[t.key] for targets in by_audience for t in targets)

    def _plan_scan(self, audiences: list[list[Target]]) -> list[TargetPlan]:
        specs: list[list[TargetSpec]] = []
        for targets in audiences:
            specs.append([])
            for target in targets:
                # Look up only: a target is registered once its plan is made, so bad input leaves
                # state untouched.
                row = self.store.find_target(target.key)
                specs[-1].append(
                    (
                        target,
                        row.id if row else None,
                        row.state_version if row else 0,
                        self._capabilities(target).max_batch,
                        self._refresh_after(target),
                    )
                )
        plans = plan_scan(
            self.planner,
            self.config.source,
            specs,
            allow_mass_remove=self.options.allow_mass_remove,
            progress=self.options.progress,
        )
        for plan in plans:
            self.options.progress(
                ProgressEvent(
                    "plan",
                    plan.key,
                    rows_read=plan.source_members,
                    changes_planned=plan.total_adds + plan.total_removes,
                    done=True,
                )
            )
        return plans

    def _execute(self, plan: TargetPlan) -> TargetResult:
        if self.options.dry_run:
            return TargetResult(plan, status=RunStatus.BREAKER if plan.breaker else RunStatus.PLANNED)
        if plan.target_id is None:
            t = plan.target
            plan.target_id = self.store.ensure_target(
                t.key, t.audience.name, t.destination.name, t.destination.platform
            ).id
        if plan.breaker:
            return self._refuse(plan)
        return self._leased_push(plan, from_source=True)

    def _leased_push(self, plan: TargetPlan, *, from_source: bool) -> TargetResult:
        """Commit the plan to the outbox and push it while holding the target's lease, so a cron
        ``sync`` and the daemon never push one target together."""
        assert plan.target_id is not None
        wait = self.options.lease_wait if self.options.lease_wait is not None else default_wait()
        try:
            lease = acquire(self.store.db, plan.target_id, wait=wait)
        except LeaseBusy as exc:
            log.warning("target busy", extra={"target": plan.key, "holder_pid": exc.pid})
            return TargetResult(plan, status=RunStatus.BUSY, error=str(exc))
        try:
            row = self.store.find_target(plan.key)
            if row is not None and row.state_version != plan.state_version:
                # Another process pushed this target after this plan was made: the plan is stale.
                if not from_source:
                    raise StaleStateError(
                        f"state for {plan.key} moved on while waiting for its lease; plan again"
                    )
                log.info("target synced elsewhere meanwhile", extra={"target": plan.key})
                return TargetResult(
                    plan,
                    status=RunStatus.BUSY,
                    error="another process synced this target while this run was planning; "
                    "nothing pushed (the next run plans afresh)",
                )
            recovered = self.outbox.recover_unanswered(plan.target_id)
            if recovered:
                # An earlier push sent these and never recorded an answer (killed, or the answer was
                # lost): they are maybe applied, and the plan is made again against that.
                log.warning(
                    "unanswered changes recovered", extra={"target": plan.key, "maybe_applied": recovered}
                )
            # Work an earlier run left in flight is settled first and the plan made again, so one
            # clean run converges: the plan neither holds such members back nor misses that a remove
            # in flight must be reversed (the profile came back) or an add in flight undone (it left).
            settled = self._settle_in_flight(plan)
            if (recovered or settled) and from_source:
                # The plan was made against state that has changed since: plan this target again,
                # from a fresh read of the source (its loaded rows assumed the old membership).
                self.planner.discard(plan)
                [fresh] = self._plan_audience([plan.target])
                fresh.target_id = plan.target_id
                plan = fresh
                if plan.breaker:
                    return self._refuse(plan)
            try:
                self.planner.commit_plan(plan, from_source=from_source)
                self._lease = lease
                return self._push_target(plan)
            finally:
                self.planner.discard(plan)
        finally:
            self._lease = None
            lease.release()

    def _should_stop(self) -> bool:
        """A stop was requested, or this process lost the target's lease (it stalled past its expiry
        and another process took over): either way nothing new is sent."""
        return self.options.should_stop() or (self._lease is not None and self._lease.lost)

    def _settle_in_flight(self, plan: TargetPlan) -> int:
        """Follow the handles an earlier run left in flight and apply what the platform says; how many
        changes settled. A platform that does not answer now is followed again by the push."""
        assert plan.target_id is not None
        row = self.store.find_target(plan.key)
        handles = self.outbox.in_flight_handles(plan.target_id)
        if row is None or row.platform_audience_id is None or not handles:
            return 0
        try:
            statuses = self._connector(plan.target).follow(row.platform_audience_id, handles)
        except ConnectorError as exc:
            log.warning("following in-flight work failed", extra={"target": plan.key, "error": str(exc)})
            return 0
        run_id = self.store.start_run(plan.target_id, self.options.trigger)
        settled = sum(
            self.outbox.apply_handle(plan.target_id, handle, status, run_id)
            for handle, status in statuses.items()
        )
        self.store.finish_run(run_id, RunStatus.OK, {"confirmed": settled}, None)
        self._settled_early[plan.key] = settled
        return settled

    def _refuse(self, plan: TargetPlan) -> TargetResult:
        assert plan.target_id is not None
        run_id = self.store.start_run(plan.target_id, self.options.trigger)
        self.store.finish_run(
            run_id, RunStatus.BREAKER, _plan_counts(plan), f"circuit breaker: {plan.breaker}"
        )
        log.warning("breaker tripped", extra={"target": plan.key, "reason": plan.breaker})
        return TargetResult(plan, status=RunStatus.BREAKER, error=plan.breaker)

    # --- pushing -------------------------------------------------------------------------------
    def _push_target(self, plan: TargetPlan) -> TargetResult:
        target = plan.target
        assert plan.target_id is not None
        tid = plan.target_id
        result = TargetResult(plan)
        self._identity_keys = paired_member_keys(self.store.db, tid)
        self._run_pending = {}
        result.push.settled = self._settled_early.pop(plan.key, 0)
        run_id = self.store.start_run(tid, self.options.trigger)
        try:
            if (unreachable := unreachable_emulator(target.destination)) is not None:
                raise ConnectorError(unreachable)
            connector = self._connector(target)
            caps = connector.capabilities()
            audience_id = self._ensure_audience(target, tid, connector, caps)
            result.audience_id = audience_id
            self._follow(tid, audience_id, connector, result, run_id)
            for op in ("remove", "add"):
                if self._should_stop():
                    break
                # A session Meta refused is abandoned; its batches go again in a new one, once.
                refused = self._push_op(tid, op, audience_id, connector, caps, result, run_id)
                if refused and self._push_op(tid, op, audience_id, connector, caps, result, run_id):
                    raise FatalError(
                        "Meta refused a batch even at the start of a new upload session: check the "
                        "destination settings"
                    )
            self._follow(tid, audience_id, connector, result, run_id)
            self._read_back(tid, audience_id, connector, result)
            result.status = RunStatus.STOPPED if self._should_stop() else RunStatus.OK
            if self._lease is not None and self._lease.lost:
                result.error = (
                    "the target's lease was lost (this process stalled past it and another took over): "
                    "stopped after the batch in flight was saved; the rest stays queued"
                )
            elif result.status is RunStatus.STOPPED:
                result.error = "stopped on request after the batch in flight was saved; the rest stays queued"
        except TransientError as exc:
            result.status = RunStatus.PARTIAL
            result.error = f"{exc}; what was not sent stays queued for the next run"
        except FatalError as exc:
            result.status, result.error = RunStatus.ERROR, f"{type(exc).__name__}: {exc}"
            if type(exc).__name__ == "AudienceGone":
                result.error += f" (`audience-sync state forget {plan.key}` clears what state holds for it)"
        except ConnectorError as exc:
            result.status, result.error = RunStatus.ERROR, str(exc)
        result.at_risk = self.outbox.unsettled_members(tid)
        if result.at_risk:
            result.notice = (
                f"{sum(result.at_risk.values()):,} members are not confirmed synced "
                f"({', '.join(f'{n:,} {k}' for k, n in sorted(result.at_risk.items()))}): the platform "
                "reported failures in their batches only as counts, or never answered; the next run "
                "resends them"
            )
        counts = _plan_counts(plan)
        counts.update(
            confirmed=result.push.confirmed,
            pending=result.push.pending,
            rejected=result.push.rejected,
            requests=result.push.requests,
        )
        self.store.finish_run(run_id, result.status, counts, result.error, result.push.rejection_reasons)
        self.options.progress(
            ProgressEvent(
                "push",
                plan.key,
                members_sent=result.push.confirmed + result.push.pending + result.push.rejected,
                to_send=plan.total_adds + plan.total_removes,
                requests=result.push.requests,
                done=True,
            )
        )
        log.info(
            "target synced",
            extra={
                "target": plan.key,
                "status": result.status,
                "confirmed": result.push.confirmed,
                "rejected": result.push.rejected,
                "requests": result.push.requests,
            },
        )
        return result

    def _ensure_audience(self, target: Target, tid: int, connector: Connector, caps: Capabilities) -> str:
        row = self.store.find_target(target.key)
        src = self.config.source
        hasher = ProfileHasher(
            hasher_platform(target), list(src.identifiers), src.default_country, src.prehashed
        )
        kinds = tuple(k for k in hasher.output_keys() if k in caps.identifier_kinds)
        known = target.pinned_audience_id or (row.platform_audience_id if row else None)
        description = target.audience.description or f"audience-sync: {target.audience.name}"
        spec = AudienceSpec(target.key, target.platform_audience_name, description, kinds, known)
        audience_id = connector.ensure_audience(spec)
        if row is None or row.platform_audience_id != audience_id or row.schema != kinds:
            self.store.record_audience(tid, audience_id, kinds)
        return audience_id

    def _push_op(
        self,
        tid: int,
        op: str,
        audience_id: str,
        connector: Connector,
        caps: Capabilities,
        result: TargetResult,
        run_id: int,
    ) -> bool:
        """Push the queued changes of ``op``; True when the platform refused an upload session (those
        batches stay queued for a push in a new session)."""
        total = self.outbox.queued_count(tid, op)
        if total == 0:
            return False
        send = connector.add if op == "add" else connector.remove
        # Every push starts a new session: one left by an earlier run (killed, or stopped when
        # throttling outlasted max_wait_seconds) may hold a batch_seq Meta never saw, or be closed.
        fresh = True
        refused = False
        # One batch is on the wire at a time, sent from a worker thread, so that this thread reads the
        # next batch and commits the previous one's outcome meanwhile (the state connection is only
        # ever used here). A batch is sent only once the one before it succeeded.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiencesync-push") as sender:
            sent: _SentBatch | None = None
            for batch, last in _with_lookahead(self.outbox.batches(tid, op, caps.max_batch)):
                previous = self._outcome(sent, caps, result) if sent is not None else None
                if sent is not None and previous is not None and self._should_stop():
                    # Stop requested while the last batch was on the wire: save it, send nothing new.
                    self._settle(tid, op, sent, previous, result, run_id)
                    sent = None
                    break
                if previous is not None and previous.detail.get("session_refused"):
                    refused = fresh = True
                session = self._session(tid, op, last, total, fresh) if caps.uses_sessions else None
                fresh = False
                # Write-ahead: the batch is recorded as on the wire, and committed, before it is sent.
                self.outbox.mark_on_wire(
                    tid,
                    op,
                    [c.member_key for c in batch.changes],
                    session.session_id if session else None,
                    session.batch_seq if session else None,
                )
                sent_at = time.time()
                future = sender.submit(send, audience_id, batch.changes, session)
                if sent is not None and previous is not None:
                    self._settle(tid, op, sent, previous, result, run_id)
                sent = _SentBatch(batch, session, last, sent_at, future)
            if sent is not None:
                outcome = self._outcome(sent, caps, result)
                refused = refused or bool(outcome.detail.get("session_refused"))
                self._settle(tid, op, sent, outcome, result, run_id)
        if self._should_stop():
            log.info("stopping: the batch in flight was saved", extra={"target": result.plan.key})
        return refused and not self._should_stop()

    @staticmethod
    def _outcome(sent: _SentBatch, caps: Capabilities, result: TargetResult) -> PushResult:
        try:
            return sent.future.result()
        except TransientError:
            result.push.requests += max(1, math.ceil(len(sent.batch.changes) / caps.max_batch))
            raise

    def _settle(
        self, tid: int, op: str, sent: _SentBatch, outcome: PushResult, result: TargetResult, run_id: int
    ) -> None:
        self.outbox.apply_result(tid, op, outcome, run_id, sent.sent_at)
        log.debug(
            "batch saved",
            extra={
                "target": result.plan.key,
                "op": op,
                "size": len(sent.batch.changes),
                "confirmed": len(outcome.confirmed),
                "pending": sum(len(v) for v in outcome.pending.values()),
                "rejected": len(outcome.rejected),
                "seconds": round(time.time() - sent.sent_at, 3),
            },
        )
        self._count(result, op, outcome)
        plan = result.plan
        self.options.progress(
            ProgressEvent(
                "push",
                plan.key,
                members_sent=result.push.confirmed + result.push.pending + result.push.rejected,
                to_send=plan.total_adds + plan.total_removes,
                requests=result.push.requests,
            )
        )
        if sent.last and sent.session is not None:
            self.store.end_session(tid, op)

    def _session(self, tid: int, op: str, last: bool, total: int, fresh: bool) -> SessionInfo:
        session_id, seq = self.store.reserve_batch_seq(tid, op, fresh=fresh)
        return SessionInfo(session_id=session_id, batch_seq=seq, last_batch=last, estimated_total=total)

    def _count_confirmed(self, result: TargetResult, op: str, keys: Iterable[bytes]) -> None:
        if op == "add":
            result.push.confirmed += sum(1 for _ in keys)
        else:
            result.push.confirmed += sum(1 for k in keys if k not in self._identity_keys)

    def _count(self, result: TargetResult, op: str, outcome: PushResult) -> None:
        self._count_confirmed(result, op, outcome.confirmed)
        for handle, keys in outcome.pending.items():
            self._run_pending[handle] = self._run_pending.get(handle, 0) + len(keys)
        result.push.pending += sum(len(v) for v in outcome.pending.values())
        result.push.rejected += len(outcome.rejected)
        result.push.retry += len(outcome.retry)
        result.push.unverified += len(outcome.unverified)
        result.push.requests += outcome.requests
        for reason in outcome.rejected.values():
            result.push.rejection_reasons[reason] = result.push.rejection_reasons.get(reason, 0) + 1

    def _follow(
        self, tid: int, audience_id: str, connector: Connector, result: TargetResult, run_id: int
    ) -> None:
        handles = self.outbox.in_flight_handles(tid)
        if not handles:
            return
        statuses = connector.follow(audience_id, handles)
        log.debug(
            "followed",
            extra={
                "target": result.plan.key,
                "handles": len(handles),
                "states": [s.state for s in statuses.values()],
            },
        )
        for handle, status in statuses.items():
            members = handle_members(self.store.db, tid, handle) if status.state == "confirmed" else []
            settled = self.outbox.apply_handle(tid, handle, status, run_id)
            if status.state != "pending":
                # Settled within the run that sent it: no longer pending, but confirmed (or re-queued).
                result.push.pending -= self._run_pending.pop(handle, 0)
            if status.state == "confirmed" and status.rejected_count:
                result.push.unverified += settled
            elif status.state == "confirmed":
                result.push.settled += settled
                for op in ("remove", "add"):
                    self._count_confirmed(result, op, (k for o, k in members if o == op))

    def _read_back(self, tid: int, audience_id: str, connector: Connector, result: TargetResult) -> None:
        try:
            status = connector.read_back(audience_id)
        except TransientError as exc:
            log.warning("read-back failed", extra={"target": result.plan.key, "error": str(exc)})
            return
        # The same recording as the daemon's follow tick, so a cron run stamps ready_at too.
        record_read_back(self.store, tid, status)
        result.platform_size = (status.size_lower, status.size_upper)

    # --- plan files ----------------------------------------------------------------------------
    def _open_plan_file(self) -> PlanWriter | None:
        if self.options.plan_out is None:
            return None
        return PlanWriter(self.options.plan_out, self.config.path)

    def _write_plan(self, writer: PlanWriter, plan: TargetPlan) -> None:
        header = {"target": plan.key, "state_version": plan.state_version, "max_batch": plan.max_batch}
        header["summary"] = plan.as_dict()
        writer.write(header)
        for key, op, payload, raw_fp, invalid, source_at, consent in self.planner.desired_rows(plan):
            writer.write(
                {
                    "k": key.hex(),
                    "op": op,
                    "p": payload,
                    "raw": raw_fp.hex() if raw_fp else None,
                    "inv": invalid,
                    "s": source_at,
                    "c": consent,
                }
            )

    def _refuse_foreign_removes(self, path: Path, plan: TargetPlan) -> None:
        """A saved plan may only remove what this tool added: each remove must match a member state
        holds (or an add it may have sent), payload and all."""
        foreign = self.planner.foreign_removes(plan)
        if foreign:
            self.planner.discard(plan)
            raise InputError(
                f"{path}: {foreign} remove(s) for {plan.key} are of members this tool never added; "
                "the plan was not applied"
            )


def close_connectors(connectors: Iterable[object]) -> None:
    """Call ``close()`` on each connector that has one (TikTok's HTTP session, Google's gRPC channel).
    A close that fails is logged, not raised: it must not hide how the run itself ended."""
    for connector in connectors:
        close = getattr(connector, "close", None)
        if not callable(close):
            continue
        try:
            close()
        except Exception as exc:
            log.warning(
                "closing a connector failed",
                extra={"connector": type(connector).__name__, "error": type(exc).__name__},
            )


def breaker_check(plan: TargetPlan) -> dict[str, Any]:
    """The circuit breaker's figures for a plan: what it compared and against which thresholds."""
    breaker = plan.target.sync.breaker
    return {
        "tripped": plan.breaker is not None,
        "reason": plan.breaker,
        "removes": plan.removes,
        "synced": plan.synced,
        "source_members": plan.source_members,
        "remove_share": round(plan.removes / plan.synced, 4) if plan.synced else None,
        "max_remove_share": breaker.max_remove_share,
        "max_remove_count": breaker.max_remove_count,
    }


def _plan_counts(plan: TargetPlan) -> dict[str, Any]:
    return {
        "source_members": plan.source_members,
        "adds": plan.adds,
        "removes": plan.removes,
        "identity_changes": plan.identity_changes,
        "invalid": dict(plan.invalid),
    }


def sync_once(
    config: Config,
    *,
    dry_run: bool = False,
    only: str | None = None,
    allow_mass_remove: bool = False,
    plan_out: Path | None = None,
    apply_plan: Path | None = None,
    trigger: str = "cli",
    should_stop: Callable[[], bool] | None = None,
    progress: ProgressSink = no_progress,
) -> list[TargetResult]:
    """One run over the config's targets against its state file: what ``audience-sync sync`` does."""
    if dry_run and not config.state_path.exists():
        # A dry run writes nothing: plan against an empty in-memory state instead of creating the file.
        store = StateStore.open_memory(key_of=config.state_path if plan_out else None)
    else:
        store = StateStore.open(config.state_path)
    try:
        options = RunOptions(
            dry_run=dry_run,
            only=only,
            allow_mass_remove=allow_mass_remove,
            trigger=trigger,
            plan_out=plan_out,
            should_stop=should_stop or (lambda: False),
            progress=progress,
        )
        runner = SyncRunner(config, store, options)
        return runner.apply_plan(apply_plan) if apply_plan else runner.run()
    except sqlite3.Error as exc:
        # A full disk or a lock that outlasted the wait: every write is one transaction, so what
        # was committed stands and the next run carries on from it.
        raise describe_sqlite_error(config.state_path, exc) from None
    finally:
        store.close()
