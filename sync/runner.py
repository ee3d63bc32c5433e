"""The runner: for each sync target, plan, push the outbox through the connector, follow pending
work, read the platform's status back, and record the run.

Data flows one way: source -> normalize and hash -> diff against state -> outbox -> connector ->
confirmation back into state -> report. A change leaves the outbox only when the platform confirmed
or rejected it, so stopping at any point (a crash, SIGTERM, a platform outage) loses nothing: the next
run sends what is left.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from audiencesync.connectors.contract import AudienceSpec, Capabilities, Connector
from audiencesync.connectors.errors import ConnectorError, FatalError, TransientError
from audiencesync.connectors.registry import build_connector
from audiencesync.state.db import describe_sqlite_error
from audiencesync.state.lease import Lease, LeaseBusy, acquire, default_wait
from audiencesync.state.outbox import OutboxStore
from audiencesync.state.store import StateStore
from audiencesync.sync.config import Config, Target
from audiencesync.sync.demo.emulation import unreachable_emulator
from audiencesync.sync.errors import InputError, SourceError, StaleStateError
from audiencesync.sync.follow import FollowStep
from audiencesync.sync.identity import ProfileHasher
from audiencesync.sync.incremental import plan_scan
from audiencesync.sync.plan import Planner, TargetPlan, TargetSpec, hasher_platform
from audiencesync.sync.plan_file import PlanWriter, read_plan_file
from audiencesync.sync.progress import ProgressEvent, ProgressSink, ProgressStage, no_progress
from audiencesync.sync.push import TargetPush
from audiencesync.sync.run_result import PushOutcome, TargetResult, breaker_check, plan_counts
from audiencesync.sync.run_status import RunStatus
from audiencesync.sync.source_check import check_source
from audiencesync.sync.source_scan import scan_groups

__all__ = [
    "PushOutcome",
    "RunOptions",
    "SyncRunner",
    "TargetResult",
    "breaker_check",
    "close_connectors",
    "sync_once",
]

log = logging.getLogger("audiencesync.runner")


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
                        self._connector(target).refresh_due_seconds(),
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
                    ProgressStage.PLAN,
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
        tid = plan.target_id
        row = self.store.find_target(plan.key)
        if row is None or row.platform_audience_id is None:
            return 0
        runs: list[int] = []

        def start_run() -> int:
            runs.append(self.store.runs.start(tid, self.options.trigger))
            return runs[-1]

        try:
            step = FollowStep(
                self.store, self._connector(plan.target), plan.key, tid, row.platform_audience_id
            )
            report = step.follow(start_run)
        except ConnectorError as exc:
            # Not this run's failure yet: the push follows again, and fails the run if it fails then.
            log.warning("following in-flight work failed", extra={"target": plan.key, "error": str(exc)})
            return 0
        if not runs:
            return 0
        self.store.runs.finish(runs[0], RunStatus.OK, {"confirmed": report.applied}, None)
        self._settled_early[plan.key] = report.applied
        return report.applied

    def _refuse(self, plan: TargetPlan) -> TargetResult:
        assert plan.target_id is not None
        run_id = self.store.runs.start(plan.target_id, self.options.trigger)
        self.store.runs.finish(
            run_id, RunStatus.BREAKER, plan_counts(plan), f"circuit breaker: {plan.breaker}"
        )
        log.warning("breaker tripped", extra={"target": plan.key, "reason": plan.breaker})
        return TargetResult(plan, status=RunStatus.BREAKER, error=plan.breaker)

    # --- pushing -------------------------------------------------------------------------------
    def _push_target(self, plan: TargetPlan) -> TargetResult:
        target = plan.target
        assert plan.target_id is not None
        tid = plan.target_id
        result = TargetResult(plan)
        result.push.settled = self._settled_early.pop(plan.key, 0)
        run_id = self.store.runs.start(tid, self.options.trigger)
        try:
            if (unreachable := unreachable_emulator(target.destination)) is not None:
                raise ConnectorError(unreachable)
            connector = self._connector(target)
            caps = connector.capabilities()
            audience_id = self._ensure_audience(target, tid, connector, caps)
            result.audience_id = audience_id
            push = TargetPush(
                self.store,
                connector,
                caps,
                result,
                audience_id,
                run_id,
                self._should_stop,
                self.options.progress,
            )
            push.run()
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
        self.store.runs.finish(
            run_id, result.status, result.run_counts(), result.error, result.push.rejection_reasons
        )
        self.options.progress(
            ProgressEvent(
                ProgressStage.PUSH,
                plan.key,
                members_sent=result.push.sent,
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


def close_connectors(connectors: Iterable[Connector]) -> None:
    """Close each connector (TikTok's HTTP session, Google's gRPC channel). A close that fails is
    logged, not raised: it must not hide how the run itself ended."""
    for connector in connectors:
        try:
            connector.close()
        except Exception as exc:
            log.warning(
                "closing a connector failed",
                extra={"connector": type(connector).__name__, "error": type(exc).__name__},
            )


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
